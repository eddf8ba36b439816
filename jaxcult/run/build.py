"""From a config to what a run trains: plug-ins, tokenised splits, and the model on the mesh.

Order matters for the user: every name in the config is resolved first (task family, dataset,
evaluator, architecture), then the tokenizer (no weights) and the data, so a mistake in any of
them is reported before a large backbone loads; the backbone then loads straight into its
shards when a mesh is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxcult import models, schedules
from jaxcult.config import PeftConfig, RunConfig
from jaxcult.data import resolve_dataset
from jaxcult.data.batching import (
    LengthBuckets,
    Split,
    eval_batch_lengths,
    fitted_bucket_sizes,
    pad_columns,
    pad_split,
    pad_splits,
    pad_token_id,
)
from jaxcult.data.prepared import StreamedSplit, TrainRows
from jaxcult.data.registry import DatasetInfo
from jaxcult.data.splits import read_records, scored_languages
from jaxcult.errors import UserError
from jaxcult.eval import Evaluator, resolve_evaluators
from jaxcult.hub.loading import abstract_module
from jaxcult.hub.madx import read_language_adapters, stack_source_adapter
from jaxcult.hub.pretrained import abstract_backbone, load_backbone, load_tokenizer
from jaxcult.hub.vision import load_backbone as load_image_backbone
from jaxcult.models.layer_stack import StackError, stack_layers
from jaxcult.models.quantize import (
    Quantization,
    quantize_projections,
    quantized_parameter_count,
    quantized_paths,
)
from jaxcult.models.quantized import GGUF_KINDS
from jaxcult.peft.bottleneck import PLACEMENTS, add_bottleneck_adapters
from jaxcult.peft.groups import group_of, layer_index, ordered_groups, uncovered_peft_parameters
from jaxcult.peft.invertible import NICEAdapter
from jaxcult.peft.lora import add_lora, saved_modules, train_in_float32
from jaxcult.probes import resolve_probe
from jaxcult.registry import import_path
from jaxcult.tasks import Loaders, ModelInputs, Task, resolve_task
from jaxcult.trainers.program import ModelProgram


@dataclass
class Plugins:
    """The resolved names of a config: what it trains, on what, scored how."""

    task: Task
    dataset_name: str
    info: DatasetInfo
    evaluator: Evaluator


@dataclass
class TaskData:
    train: Split | StreamedSplit  # StreamedSplit: a prepared dataset read batch by batch
    validation: Split
    tests: dict[str, Split]   # language -> evaluation split (source first)


@dataclass
class ModelParts:
    graphdef: nnx.GraphDef
    params: dict[str, Any]      # group -> nnx.State, in `groups` order
    frozen: Any                 # nnx.State of the frozen backbone
    groups: list[str]
    layer_groups: list[str]     # bottom-up
    counts: dict[str, int]
    total_params: int
    architecture: Any           # the backbone's config (hidden_size, num_hidden_layers, ...)
    language_hubs: dict = field(default_factory=dict)  # MAD-X: language -> HubAdapter
    head_tensors: Any = field(default_factory=dict)  # the checkpoint's tensors the backbone
    #   left to the head (`ModelInputs.tensors`), for other seeds sharing the backbone


def resolve_plugins(config: RunConfig):
    """Task family, dataset, evaluator (and a user architecture) named by the config, checked
    against each other; returns (plugins, dataset)."""
    if config.model.architecture is not None:
        architecture = import_path(config.model.architecture, "model.architecture")
        if not isinstance(architecture, models.Architecture):
            raise UserError(f"model.architecture: {config.model.architecture!r} is not a "
                            f"jaxcult.models.Architecture")
        if architecture.name not in models.ARCHITECTURES:
            models.register_architecture(architecture)
    dataset = resolve_dataset(config.data)
    info = dataset.info(config.data)
    languages = scored_languages(config.data, info, dataset.name)
    adapters = config.peft.language_adapters
    uncovered = [lang for lang in languages if adapters and lang not in adapters]
    if uncovered and not config.peft.allow_missing_language_adapters:
        raise UserError(f"peft.language_adapters: no MAD-X language adapter for "
                        f"{', '.join(uncovered)}; list one per scored language, or set "
                        f"peft.allow_missing_language_adapters=true to evaluate them with the "
                        f"language adapter dropped")
    if config.task.num_labels and info.labels and config.task.num_labels != len(info.labels):
        raise UserError(f"task.num_labels: {dataset.name} has {len(info.labels)} labels, config "
                        f"says {config.task.num_labels}")
    task = resolve_task(config.task, info.labels, Loaders(image_backbone=load_image_backbone))
    if info.record_format not in task.record_formats:
        raise UserError(f"task.name: {task.name} cannot read {dataset.name}'s "
                        f"{info.record_format!r} records (it reads: "
                        f"{', '.join(task.record_formats) or 'nothing'})")
    if task.uses_labels and not task.num_labels:
        raise UserError(f"task.num_labels: {dataset.name} declares no labels; set task.num_labels")
    evaluator = resolve_evaluators(config.task.evaluators, info)
    for probe in config.probes:  # names, options and batch counts, before any model loads
        resolve_probe(probe.name)(probe, [])
    if config.model.scan_layers and schedules.resolve(config.schedule.name).opens_layers_apart:
        raise UserError(f"model.scan_layers: schedule.name={config.schedule.name} trains some "
                        f"layers while others wait, but a scanned layer stack is one parameter "
                        f"group; use schedule.name=standard or lpft, or model.scan_layers=false")
    if config.model.scan_layers and config.peft.language_adapters:
        raise UserError("model.scan_layers: MAD-X swaps language adapters layer by layer at "
                        "evaluation, which a scanned stack does not support; use "
                        "model.scan_layers=false with peft.language_adapters")
    return Plugins(task, dataset.name, info, evaluator), dataset


def load_task_data(config: RunConfig, task: Task, dataset, tokenizer) -> TaskData:
    """Every split of the run, read and tokenised for the task."""
    records = read_records(dataset, config.data, config.trainer.seed)
    length, src = config.model.max_length, config.data.source_language

    def split(rows: list[dict], language: str, name: str) -> Split:
        tokenised = task.tokenize(rows, tokenizer, length, f"{dataset.name}/{language}/{name}")
        tokenised.language = language
        return tokenised

    if isinstance(records.train, TrainRows):  # prepared: tokenised batch by batch
        train = StreamedSplit(records.train.source, records.train.rows, task, tokenizer, length,
                              f"{dataset.name}/{src}/train", src)
    else:
        train = split(records.train, src, "train")
    keys = task.sequence_keys or train.sequence_keys()
    evaluated = [split(records.validation, src, "validation"),
                 *(split(rows, lang, config.data.eval_split) for lang, rows in records.tests.items())]
    pad_id = pad_token_id(tokenizer)
    evaluated = pad_columns(pad_splits(evaluated, keys, pad_id), task.prediction_keys)
    setting, count = config.data.length_buckets, config.data.bucket_count
    buckets = length_buckets(setting, length, keys, fitted_to=(train.lengths, count))
    eval_buckets = buckets
    if setting == "fit":  # evaluation's own lengths, fitted to the batches it scores (longer
        # examples than training's longest would otherwise take the splits' padded length)
        scored = np.concatenate([eval_batch_lengths(each, config.trainer.eval_batch_size)
                                 for each in evaluated])
        eval_buckets = length_buckets(setting, length, keys, fitted_to=(scored, count))
    if buckets is not None:  # every batch takes a bucket's length, whatever the data's longest
        evaluated = [pad_split(each, eval_buckets.holding(each.padded_length), keys, pad_id)
                     for each in evaluated]
        if isinstance(train, StreamedSplit):
            train.use_buckets(buckets)
        else:
            train = pad_split(train, buckets.holding(train.padded_length), keys, pad_id)
    train.buckets = buckets
    for each in evaluated:
        each.buckets = eval_buckets
    return TaskData(train, evaluated[0], dict(zip(records.tests, evaluated[1:])))


def length_buckets(setting: str | list[int], max_length: int, keys: tuple[str, ...],
                   fitted_to: tuple[np.ndarray, int] | None = None) -> LengthBuckets | None:
    """`data.length_buckets` as sizes: `auto` is every multiple of 16 below `max_length`;
    `fit` the `count` sizes that pad the rows' `lengths` least (`fitted_to`: the training
    rows', or for evaluation each scored row's batch longest)."""
    if setting == "none":
        return None
    if setting == "fit":
        sizes = fitted_bucket_sizes(*fitted_to) if fitted_to is not None else ()
        if not sizes:
            raise UserError("data.length_buckets: fit needs training examples to fit to")
    else:
        sizes = range(16, max_length, 16) if setting == "auto" else setting
    too_long = [size for size in sizes if size > max_length]
    if too_long:
        raise UserError(f"data.length_buckets: {too_long[0]} exceeds model.max_length "
                        f"({max_length}); no batch is that long")
    return LengthBuckets(tuple(sorted(set(sizes))), keys)


def tokenizer_of(config: RunConfig):
    """The run's tokenizer (`model.tokenizer`, else the model's), read without any weights."""
    source = config.model.tokenizer or config.model.name
    if config.model.tokenizer is None and config.model.name == "random":
        raise UserError("model.tokenizer: a `random` model has no tokenizer; name an asset or "
                        "HF directory that has one")
    tokenizer = load_tokenizer(source)
    if tokenizer is None:
        raise UserError(f"model.tokenizer: {source!r} has no tokenizer; name an asset or HF "
                        f"directory that has one")
    return tokenizer


def _backbone(config: RunConfig, mesh: Mesh | None, shapes_only: bool = False
              ) -> tuple[nnx.Module, ModelInputs]:
    """The pretrained (or random) encoder or causal LM, placed on `mesh` while it loads, and
    what the task's head receives (the checkpoint's tensors the backbone left). With
    `shapes_only`, an HF directory's model is built from its config.json alone (a plan)."""
    overrides = {"dtype": config.model.compute_dtype, "param_dtype": config.model.dtype}
    rules, seed, source = config.mesh.rules, config.trainer.seed, config.model.name
    settings = dict(config.model.overrides)
    if shapes_only and source != "random":
        backbone = abstract_backbone(source, checked=list(settings), dropout=config.model.dropout,
                                     **{**settings, **overrides})
        if backbone is not None:
            return backbone, ModelInputs(seed, source)
    if source != "random":   # quantised projection by projection as they load
        backbone, rest = load_backbone(source, mesh=mesh, rules=rules, checked=list(settings),
                                       dropout=config.model.dropout,
                                       quantization=quantization_of(config),
                                       **{**settings, **overrides})
        return backbone, ModelInputs(seed, source, rest)
    if "model_type" not in settings or "vocab_size" not in settings:
        raise UserError("model.overrides: a `random` model needs at least model_type and vocab_size")
    architecture = models.config_from_hf({**settings, **overrides}, "model.overrides",
                                         list(settings), config.model.dropout)
    if shapes_only:
        return abstract_module(architecture), ModelInputs(seed, source)
    return models.build(architecture, seed=seed, mesh=mesh, rules=rules), ModelInputs(seed, source)


def kind_of(backbone: nnx.Module) -> str:
    return models.architecture_of(backbone.config).kind


def _check_backbone(backbone: nnx.Module, tokenizer, task: Task, config: RunConfig) -> None:
    positions = getattr(backbone.config, "max_position_embeddings", None)
    usable = positions - getattr(backbone.config, "position_offset", 0) if positions else None
    if kind_of(backbone) == "encoder" and usable is not None and config.model.max_length > usable:
        raise UserError(f"model.max_length: {config.model.max_length} tokens do not fit the "
                        f"model's position table of {usable} positions")
    if tokenizer is not None and len(tokenizer) > backbone.config.vocab_size:
        raise UserError(f"model.tokenizer: the tokenizer has {len(tokenizer)} tokens but the model's "
                        f"vocabulary has only {backbone.config.vocab_size} rows")
    kind = kind_of(backbone)
    if kind != task.backbone:
        described = {"decoder": "a causal LM", "encoder": "an encoder"}
        raise UserError(f"model.name: {config.model.name!r} is {described[kind]}; task "
                        f"{task.name!r} needs {described.get(task.backbone, task.backbone)}")


def quantization_of(config: RunConfig) -> Quantization | None:
    """What `model.quantize*` ask for (None: no quantisation)."""
    model = config.model
    if model.quantize == "none":
        return None
    if config.peft.kind == "full":
        raise UserError(f"model.quantize: {model.quantize} keeps the backbone frozen in "
                        f"{model.quantize}, but peft.kind=full trains it (use lora or adapters)")
    if model.quantize == "gguf" and model.name == "random":
        raise UserError("model.quantize: gguf keeps a GGUF file's own quantised blocks; a "
                        "random model has none (use nf4 or int8)")
    return Quantization(model.quantize, model.quantize_block_size, model.quantize_double,
                        tuple(model.quantize_skip), model.quantize_embeddings)


def _quantize(backbone: nnx.Module, config: RunConfig, mesh: Mesh | None) -> list[str]:
    """Quantise the frozen projections as `model.quantize` asks (a loaded backbone already
    was, as it loaded); returns their module paths."""
    settings = quantization_of(config)
    if settings is None:
        return []
    if settings.kind == "gguf" and not quantized_paths(backbone):
        raise UserError(f"model.quantize: gguf keeps a GGUF file's own quantised blocks, but "
                        f"{config.model.name} has no projection in a type kept so ("
                        f"{', '.join(k.upper() for k in GGUF_KINDS)}; vectorised seeds cannot "
                        f"share them either); use nf4 or int8")
    return quantized_paths(backbone) or quantize_projections(backbone, settings, mesh,
                                                             config.mesh.rules)


def _add_peft(backbone: nnx.Module, config: RunConfig) -> tuple[tuple[str, ...], dict]:
    """Insert the configured PEFT modules; returns the paths of modules trained in full and the
    MAD-X language adapters (language -> AdapterHub adapter; empty without MAD-X)."""
    peft, seed = config.peft, config.trainer.seed
    layers = len(backbone.layers)
    outside = [i for i in peft.leave_out if not 0 <= i < layers]
    if outside:
        raise UserError(f"peft.leave_out: layer {outside[0]} does not exist (the model has "
                        f"{layers} layers, 0-{layers - 1})")
    hubs = {}
    if peft.language_adapters:
        if peft.kind not in ("pfeiffer", "houlsby"):
            raise UserError(f"peft.language_adapters: MAD-X stacks language adapters under "
                            f"pfeiffer or houlsby task adapters, not peft.kind={peft.kind!r}")
        hubs = read_language_adapters(peft.language_adapters, config.data.source_language)
    if peft.kind in PLACEMENTS:
        add_bottleneck_adapters(backbone, peft, seed=seed)
        if hubs:
            stack_source_adapter(backbone, hubs, config.data.source_language, seed=seed)
        if peft.invertible:
            _add_invertible(backbone, peft, seed)
    elif peft.kind == "lora":
        add_lora(backbone, peft.target_modules, peft.lora_r, peft.lora_alpha, seed=seed,
                 dropout=peft.lora_dropout, leave_out=peft.leave_out)
    if peft.modules_to_save and peft.kind != "lora":
        raise UserError("peft.modules_to_save: only used with peft.kind=lora (full fine-tuning "
                        "trains every module already)")
    return saved_modules(backbone, peft.modules_to_save), hubs


def _scan_layers(backbone: nnx.Module) -> None:
    """`model.scan_layers`: the backbone's layers (loaded, quantised, with their PEFT modules)
    stacked into one scanned module."""
    try:
        backbone.layers = stack_layers(list(backbone.layers))
    except StackError as error:
        raise UserError(f"model.scan_layers: {error} (e.g. sliding windows on some layers only, "
                        f"or peft.leave_out); use model.scan_layers=false") from None


def _add_invertible(backbone: nnx.Module, peft: PeftConfig, seed: int) -> None:
    """The NICE adapter a MAD-X language adapter trains on the embedding output."""
    if not hasattr(backbone, "embedding_adapter"):
        raise UserError(f"peft.invertible: {type(backbone).__name__} has no embedding-adapter "
                        f"slot (invertible adapters are for encoders: BERT, XLM-R)")
    backbone.embedding_adapter = NICEAdapter(
        backbone.config.hidden_size, non_linearity=peft.non_linearity,
        reduction_factor=peft.invertible_reduction_factor, seed=seed)


def _path(path) -> str:
    return ".".join(str(p) for p in path)


def build_model(config: RunConfig, task: Task, tokenizer, mesh: Mesh | None = None,
                shared: ModelParts | None = None, shapes_only: bool = False) -> ModelParts:
    """Backbone (on `mesh`), PEFT modules, the task's head, and the named parameter groups.
    With `shared` (another seed's parts), the frozen backbone is that one: no weights are read
    here, only this config's trainable parts initialised. With `shapes_only`, an HF
    directory's backbone has shapes but no values (its weights are never read)."""
    if shared is None:
        backbone, inputs = _backbone(config, mesh, shapes_only)
    else:  # the other seed's head tensors were read already: the head starts from them there
        backbone = abstract_module(shared.architecture)
        inputs = ModelInputs(config.trainer.seed, config.model.name, shared.head_tensors)
    _check_backbone(backbone, tokenizer, task, config)
    quantized = _quantize(backbone, config, mesh if shared is None else None)
    saved, language_hubs = _add_peft(backbone, config)
    trained_quantized = [p for p in quantized if any(p == s or p.startswith(s + ".") for s in saved)]
    if trained_quantized:
        raise UserError(f"peft.modules_to_save: {trained_quantized[0]} is quantised and cannot "
                        f"train; add it to model.quantize_skip")
    train_in_float32(backbone, saved)
    quantized_count = quantized_parameter_count(backbone)
    if config.model.scan_layers:
        _scan_layers(backbone)
    model = task.build_model(backbone, inputs)
    if model is not backbone:  # paths inside the task model are prefixed with `encoder.`
        saved = tuple(f"encoder.{p}" for p in saved)
    kind, split, inv = config.peft.kind, config.peft.lora_groups, config.peft.invertible
    paths = [_path(p) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    uncovered = uncovered_peft_parameters(paths, kind, saved, split, inv)
    if uncovered:
        raise UserError(f"peft: parameter {uncovered[0]!r} belongs to a PEFT module but to no "
                        f"parameter group, so it would never train ({len(uncovered)} such)")
    groups = ordered_groups({g for g in (group_of(p, kind, saved, split, inv) for p in paths)
                             if g is not None})
    filters = [(lambda g: lambda path, _v: group_of(_path(path), kind, saved, split, inv) == g)(g)
               for g in groups]
    graphdef, *states = nnx.split(model, *filters, ...)
    params = dict(zip(groups, states[:-1]))
    counts = {g: sum(int(np.prod(x.shape)) for x in nnx.to_flat_state(params[g]).leaves)
              for g in groups}
    total = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    total += quantized_count
    # bottom-up; full fine-tuning's embeddings and a trained invertible adapter sit below
    # layer 0 (gradual unfreezing ends there)
    layer_groups = [g for g in groups if g in ("embeddings", "adapter/invertible")] + \
        [g for g in groups if layer_index(g) is not None]
    return ModelParts(graphdef, params, states[-1] if shared is None else shared.frozen, groups,
                      layer_groups, counts, total, backbone.config, language_hubs, inputs.tensors)


@dataclass
class Built:
    plugins: Plugins
    data: TaskData
    parts: ModelParts
    tokenizer: Any

    def model_program(self) -> ModelProgram:
        """The forward-only program (evaluation, Fisher) of this model."""
        return ModelProgram(self.plugins.task, self.plugins.evaluator, self.parts.graphdef,
                            self.parts.groups)

    def score_splits_with_model(self, batch_size: int) -> None:
        """The task's per-example numbers from the model as built (preference: the precomputed
        reference log-probs), added to every split; what training and evaluation read, not
        what an export or a dry run needs."""
        model = nnx.merge(self.parts.graphdef, *self.parts.params.values(), self.parts.frozen)
        data = self.data
        self.plugins.task.with_model(model, [data.train, data.validation, *data.tests.values()],
                                     batch_size)


def build_run(config: RunConfig, mesh: Mesh | None = None, shapes_only: bool = False) -> Built:
    """Plug-ins, data, then the model: what a run, a dry run (`shapes_only`: no weights read)
    or a re-scoring needs."""
    plugins, dataset = resolve_plugins(config)
    tokenizer = tokenizer_of(config)
    data = load_task_data(config, plugins.task, dataset, tokenizer)
    parts = build_model(config, plugins.task, tokenizer, mesh, shapes_only=shapes_only)
    return Built(plugins, data, parts, tokenizer)
