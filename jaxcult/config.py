"""Typed run configuration: the schema of every section and its validation.

Loading (YAML inheritance, command-line overrides, readable errors, each plug-in's own
settings) lives in `jaxcult.config_loading`; this module only says what a valid run looks like.
It names no plug-in: a plug-in family's section here holds what every member of the family
reads, and each plug-in declares its own settings as a subclass of that section.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from jaxcult.errors import UserError

DType = Literal["float32", "bfloat16", "float16"]
S = TypeVar("S", bound="Section")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, protected_namespaces=(), coerce_numbers_to_str=True
    )

    def refuse_unused(self, section: str, fields: tuple[str, ...], applies: bool, when: str) -> None:
        """A field given a non-default value where it has no effect is an error, never silently
        ignored (restating a default, e.g. in a shared base file, is harmless)."""
        declared = type(self).model_fields
        given = [f for f in fields if f in self.model_fields_set
                 and getattr(self, f) != declared[f].get_default(call_default_factory=True)]
        if given and not applies:
            raise ValueError(f"{section}.{given[0]} has no effect here: it only applies {when}")


class PluginSection(Section):
    """A plug-in family's section: `name` chooses the plug-in, the other keys are settings.

    The keys every member of the family reads are declared here (in the family's subclass);
    a plug-in declares its own as a subclass of its family's section (its `Settings`), and
    the loader validates the section with the class of the plug-in it names, so a key the
    plug-in does not declare is an error naming the plug-in."""

    name: str | None = Field(None, description="a registered plug-in or `pkg.mod:Class`; "
                             "default: the family's default")

    def own_settings(self, family: type[PluginSection]) -> dict:
        """The settings the plug-in declares beyond its family's (JSON-compatible)."""
        own = set(type(self).model_fields) - set(family.model_fields)
        return self.model_dump(mode="json", include=own)


def settings_as(section: PluginSection, settings: type[S], key: str) -> S:
    """`section` as an instance of the plug-in's own settings class: itself when the loader
    already typed it, else validated anew (defaults filled, unknown keys refused)."""
    if isinstance(section, settings):
        return section
    try:
        return settings.model_validate(section.model_dump(exclude_unset=True))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in (key, *error["loc"]))
        raise UserError(f"{where}: {error['msg']}") from None


class ModelConfig(Section):
    """Which pretrained model to load and in which precision."""

    name: str = Field("multilingual-e5-small",
                      description="asset name, HF directory, weight file, or `random` (see overrides)")
    architecture: str | None = Field(
        None, description="import path `pkg.mod:ARCH` of a user Architecture to register first "
        "(its model_types become loadable)")
    tokenizer: str | None = Field(None, description="asset or HF directory (default: the model's)")
    dtype: DType = Field("float32", description="parameter dtype")
    compute_dtype: DType = Field("float32", description="activation dtype")
    max_length: int = Field(128, gt=0, description="tokens per example after truncation")
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="override the checkpoint's dropout")
    overrides: dict[str, int | float | str | bool] = Field(
        default_factory=dict,
        description="architecture fields for `name: random-<arch>` models (e.g. hidden_size)",
    )
    init_from: str | None = Field(
        None, description="run directory whose best checkpointed parameters (every trained "
        "group, task head included) start this run, e.g. few-shot training after an English "
        "fine-tuning run; the model and PEFT structure must match")
    remat: Literal["none", "layer", "layer_save_dots"] = Field(
        "none", description="rematerialise each layer in the backward: keep only its input "
        "(`layer`) or its matmul outputs too (`layer_save_dots`) and recompute the rest; "
        "less activation memory for more compute")
    scan_layers: bool = Field(
        False, description="run the transformer layers as one lax.scan over stacked "
        "parameters: compile time stops growing with depth (same numbers as unrolled); the "
        "stack's trainable arrays form one parameter group, so only schedules that open all "
        "layers together (standard, lpft) run, and the truncated backward does not reach "
        "inside the stack")
    quantize: Literal["none", "nf4", "int8", "gguf"] = Field(
        "none", description="keep the frozen backbone's projections in 4-bit NormalFloat "
        "(QLoRA) or int8, or (gguf) in a GGUF file's own Q8_0/Q4_0/Q4_K/Q5_K/Q6_K blocks, "
        "dequantised to compute_dtype inside each matmul; LoRA or adapters train on top (see "
        "docs/scaling.md)")
    quantize_block_size: int = Field(64, gt=0, description="nf4: weights per absmax scale")
    quantize_double: bool = Field(
        False, description="nf4: quantise the block scales again (8-bit, blocks of 256), "
        "QLoRA's double quantisation (bitsandbytes' bnb_4bit_use_double_quant)")
    quantize_skip: list[str] = Field(
        default_factory=lambda: ["lm_head"], description="projections (module path or "
        "attribute name) kept in model.dtype")
    quantize_embeddings: bool = Field(
        False, description="quantise the embedding tables too (a tied output projection "
        "with them); bitsandbytes keeps them in 16 bits")

    @model_validator(mode="after")
    def _quantization_fields(self) -> ModelConfig:
        self.refuse_unused("model", ("quantize_block_size", "quantize_double"),
                           self.quantize == "nf4", "model.quantize is nf4")
        self.refuse_unused("model", ("quantize_skip", "quantize_embeddings"), self.quantize != "none",
                           "model.quantize is set")
        return self


class PeftConfig(Section):
    """Parameter-efficient modules inserted into the frozen backbone."""

    kind: Literal["none", "full", "pfeiffer", "houlsby", "parallel", "lora"] = "pfeiffer"
    reduction_factor: int | list[int] = 16
    non_linearity: Literal["relu", "gelu", "swish", "tanh"] = "relu"
    residual_before_ln: bool = True
    original_ln_before: bool | None = Field(
        None, description="adapter reads LN(hidden + residual); default per kind (pfeiffer: true)")
    original_ln_after: bool = True
    scaling: float | None = Field(None, description="default per kind: 1.0 (parallel: 4.0)")
    leave_out: list[int] = Field(default_factory=list)
    language_adapters: dict[str, str] = Field(
        default_factory=dict,
        description="MAD-X: language code -> AdapterHub language-adapter directory; the source "
        "language's adapter is stacked under the task adapter in training, each target "
        "language's is swapped in for its evaluation")
    allow_missing_language_adapters: bool = Field(
        False, description="MAD-X: evaluate a language without an adapter with the language "
        "adapter dropped, instead of refusing the run")
    invertible: bool = Field(
        False, description="MAD-X language-adapter training: a NICE invertible adapter on the "
        "embedding output (group `adapter/invertible`, below layer 0), trained with the "
        "bottleneck adapters; a masked-LM head reads its inverse before the output embeddings")
    invertible_reduction_factor: int = Field(2, gt=0, description="the NICE adapter's "
                                             "bottleneck: half the hidden size // this")
    lora_r: int = Field(8, gt=0)
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q", "v"])
    lora_groups: Literal["layer", "module"] = Field(
        "layer", description="schedule groups: one per layer (q and v together, as the FUN "
        "paper) or one per adapted projection")
    modules_to_save: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> PeftConfig:
        bottleneck = self.kind in ("pfeiffer", "houlsby", "parallel")
        self.refuse_unused("peft", ("reduction_factor", "non_linearity", "residual_before_ln",
                                    "original_ln_before", "original_ln_after", "scaling",
                                    "language_adapters", "allow_missing_language_adapters",
                                    "invertible", "invertible_reduction_factor"),
                           bottleneck, "to bottleneck adapters (pfeiffer, houlsby, parallel)")
        self.refuse_unused("peft", ("lora_r", "lora_alpha", "lora_dropout", "target_modules",
                                    "lora_groups", "modules_to_save"), self.kind == "lora",
                           "to peft.kind=lora")
        self.refuse_unused("peft", ("leave_out",), bottleneck or self.kind == "lora",
                           "to adapters and LoRA")
        self.refuse_unused("peft", ("invertible_reduction_factor",), self.invertible,
                           "with peft.invertible=true")
        if self.invertible and self.language_adapters:
            raise ValueError("peft.invertible trains a language adapter's invertible adapter, "
                             "and peft.language_adapters stacks ready ones (with their own): "
                             "use one or the other")
        return self


class DataConfig(PluginSection):
    """Which dataset, where it lives, and which languages to train and evaluate on (what
    every dataset reads; a dataset's own settings are declared by its `Settings`)."""

    source_language: str = "en"
    target_languages: list[str] = Field(default_factory=list, description="empty = all")
    source: Literal["auto", "files", "tfds", "stream"] = Field(
        "auto", description="files: read data.manual_dir; tfds: the dataset prepared under "
        "data_dir (`jaxcult data prepare`), training examples read and tokenised batch by batch "
        "(host memory does not grow with the dataset); stream: JSONL datasets' training lines "
        "(train.jsonl or train-*.jsonl shards) read batch by batch the same way; auto: tfds "
        "when data_dir is set and holds the dataset prepared, else files")
    data_dir: str | None = Field(None, description="prepared (TFDS) datasets; default for "
                                 "source=tfds: ~/.cache/jaxcult/tfds")
    manual_dir: str | None = Field(None, description="local source files to prepare from")
    train_file: str | None = Field(
        None, description="train on this file instead of the dataset's own training data "
        "(same format as the dataset's files, e.g. a SQuAD-format JSON for xquad/mlqa); the last "
        "5% are held out for validation; a relative path is read from manual_dir")
    eval_split: Literal["test", "validation"] = Field(
        "test", description="which split of each target language is scored at the end")
    max_train_examples: int | None = Field(None, gt=0)
    subsample: Literal["first", "random"] = Field(
        "first", description="which max_train_examples records: the first ones (the official "
        "scripts' `select(range(n))`) or a random subset seeded by trainer.seed")
    drop_remainder: bool = Field(
        True, description="end each epoch with full batches only; false: with the partial "
        "batch too, as HF's Trainer (its shape compiles a second train step)")
    max_eval_examples: int | None = Field(None, gt=0)
    length_buckets: Literal["none", "auto", "fit"] | list[int] = Field(
        "none", description="give each batch the smallest of these sequence lengths that holds "
        "its longest example (one compilation per length used, the same for every dataset); "
        "`auto`: multiples of 16; `fit`: the data.bucket_count lengths that pad the training "
        "examples least, and as many for evaluation fitted to the batches it scores (fitted to "
        "this dataset); `none`: every batch has its split's padded length (one compilation)")
    bucket_count: int = Field(
        4, ge=1, description="how many lengths `length_buckets: fit` chooses for training and "
        "for evaluation (each one used compiles the train or evaluation step once more)")
    length_grouping: int = Field(
        0, ge=0, description="sort training examples by length within windows of this many "
        "batches, then shuffle those batches (homogeneous batches, so length buckets cut more); "
        "changes which examples share a batch; 0 = off")
    loader: Literal["grain", "memory"] = Field(
        "grain", description="training batches from the grain pipeline (prefetch, worker "
        "processes) or a plain in-process iterator; both give the same batches in the same order")
    worker_count: int = Field(0, ge=0, description="grain worker processes (0 = threads only)")
    prefetch: int = Field(2, ge=0, description="batches prefetched by the grain pipeline")

    @field_validator("length_buckets")
    @classmethod
    def _positive_buckets(cls, value):
        if isinstance(value, list) and (not value or min(value) <= 0):
            raise ValueError("data.length_buckets: a list of positive sequence lengths, `auto` or "
                             "`none`")
        return value

    @model_validator(mode="after")
    def _grouping_needs_buckets(self) -> DataConfig:
        self.refuse_unused("data", ("length_grouping",), self.length_buckets != "none",
                           "with data.length_buckets (grouping only saves work when batches are cut)")
        self.refuse_unused("data", ("bucket_count",), self.length_buckets == "fit",
                           "with data.length_buckets: fit")
        self.refuse_unused("data", ("data_dir",), self.source in ("auto", "tfds"),
                           "to prepared datasets (data.source auto or tfds)")
        return self


class EvaluatorConfig(PluginSection):
    """An evaluator of the run (what every evaluator reads; its own settings: its `Settings`)."""

    report_as: str | None = Field(
        None, description="with several evaluators, the prefix of this one's metrics "
        "(`<report_as>/<metric>`); default: its name")


class TaskConfig(PluginSection):
    """The task family: decides head, loss, metrics and collator (what every family reads;
    a family's own settings are declared by its `Settings`)."""

    evaluators: list[SerializeAsAny[EvaluatorConfig]] = Field(
        default_factory=list, description="evaluators scoring every split, each a name or "
        "{name, its settings}; the first chooses the best checkpoint; several report their "
        "metrics as `<name>/<metric>`; default: the family's own evaluator")
    num_labels: int | None = Field(None, gt=1, description="default: from the dataset")

    @field_validator("evaluators", mode="before")
    @classmethod
    def _named_evaluators(cls, value):
        """An evaluator given by name alone is `{name: ...}`."""
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


class ScheduleConfig(PluginSection):
    """Unfreezing schedule (what every schedule reads; its own settings: its `Settings`)."""

    k: int = Field(50, gt=0, description="steps between schedule checks")
    official_offset: bool = Field(
        False, description="the official code's timing: checks before 0-based steps k-1, 2k-1, "
        "... (GU's first one a no-op); default: Algorithm 1's k, 2k, ...")


class FisherConfig(Section):
    """How tr(F) is estimated and how often it is logged."""

    estimator: Literal["sampled", "argmax_batch", "sampled_batch", "empirical",
                       "in_step_ema"] = Field(
        "sampled", description="sampled: Eq. 1 (per-example gradients, sampled labels); "
        "argmax_batch: the official code; sampled_batch: Algorithm 2 as written; empirical: gold "
        "labels; in_step_ema: a cheap stand-in, the moving average (decay fisher.ema) of the "
        "squared batch gradients of the fisher.window training steps before each check")
    window: int = Field(10, gt=0, description="in_step_ema: training steps averaged before each "
                        "check (they run the full backward, with gold labels)")
    track_every: int = Field(0, ge=0, description="log tr(F) every N steps; 0 = only when used")
    num_batches: int = Field(41, gt=0)
    batch_size: int | None = Field(None, gt=0, description="default trainer.batch_size")
    ema: float = Field(0.9, ge=0.0, lt=1.0, description="moving average for the normalised trace")
    in_step: bool = Field(False, description="also log every step's per-group squared batch "
                          "gradient / batch size (gold labels; every step then runs the full "
                          "backward, trainer.truncated_backward is off)")
    one_pass: bool = Field(
        False, description="the official code: each estimate is one fresh shuffled pass over "
        "the training data, at most num_batches batches (COPA: 7), the partial batch included")


class OptimizerConfig(Section):
    """Optimizer and learning-rate schedule of the trainable groups."""

    name: Literal["adamw", "adamw_hf", "adam", "sgd", "adafactor"] = Field(
        "adamw", description="adamw: torch.optim.AdamW; adamw_hf: transformers' old AdamW (eps "
        "before bias correction, decay after the step), as the FUN code used")
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="adamw / adamw_hf (decoupled decay)")
    decay_params: Literal["all", "matrices"] = Field(
        "all", description="which parameters weight decay applies to; matrices: not to biases "
        "and norms (1-D), as transformers' Trainer excludes `bias` and `LayerNorm.weight`")
    b1: float = Field(0.9, ge=0, lt=1)
    b2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    lr_schedule: Literal["constant", "linear"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float | None = Field(
        None, ge=0, lt=1, description="warmup as a share of the total steps (ceil, as "
        "transformers' Trainer); instead of warmup_steps")
    max_grad_norm: float | None = Field(1.0, gt=0)
    adam_count: Literal["per_group", "global"] = "per_group"
    group_lr: dict[str, float] = Field(
        default_factory=dict, description="learning-rate multiplier per parameter group (name or "
        "glob pattern, e.g. `embeddings: 0.0` freezes the text embeddings, `layer_*: 0.1` slows "
        "the layers); the first matching pattern wins, unmatched groups keep 1.0")

    @model_validator(mode="after")
    def _fields_of_optimizer(self) -> OptimizerConfig:
        decoupled = self.name in ("adamw", "adamw_hf")
        self.refuse_unused("optimizer", ("weight_decay", "decay_params"), decoupled,
                           "to adamw and adamw_hf")
        self.refuse_unused("optimizer", ("b1", "b2", "eps", "adam_count"),
                           self.name in ("adam", "adamw", "adamw_hf"), "to adam, adamw, adamw_hf")
        if self.warmup_ratio is not None and self.warmup_steps:
            raise ValueError("set optimizer.warmup_steps or optimizer.warmup_ratio, not both")
        return self


class TrainerConfig(Section):
    """Length of training, batch sizes, cadences and seeds."""

    steps: int | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(64, gt=0)
    grad_accum: int = Field(1, gt=0)
    eval_every: int = Field(0, ge=0, description="0 = only at the end")
    log_every: int = Field(10, gt=0)
    seed: int = 0
    seeds: list[int] | None = Field(None, min_length=1)
    vectorize_seeds: bool = Field(
        False, description="train the seeds of trainer.seeds as one vmapped program (one step "
        "for all seeds, the frozen backbone held once) instead of one after another; each seed's "
        "results equal its separate run")
    on_nonfinite: Literal["stop", "skip"] = "stop"
    truncated_backward: bool = Field(
        True, description="skip the backward of layers below the lowest trainable group (exact: "
        "the trainable gradients are unchanged; one compilation whatever the schedule opens)")
    inject_nonfinite_at: int | None = Field(
        None, gt=0, description="testing aid: make the loss of this step NaN")

    @model_validator(mode="after")
    def _one_length(self) -> TrainerConfig:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("set trainer.steps or trainer.epochs, not both")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"trainer.batch_size {self.batch_size} must be divisible by "
                f"trainer.grad_accum {self.grad_accum}"
            )
        if self.vectorize_seeds and not self.seeds:
            raise ValueError("trainer.vectorize_seeds needs trainer.seeds (the seeds to vectorise)")
        return self


class MeshConfig(Section):
    """Device mesh shape (-1 = the remaining devices) and logical-axis rules."""

    data: int = Field(-1, description="-1 = all devices not used by the other axes")
    fsdp: int = 1
    tensor: int = 1
    seed: int = Field(1, description="trainer.vectorize_seeds: devices the seed axis is split over "
                      "(-1: all; cut to the largest count that divides the seeds trained together)")
    rules: dict[str, list[str] | str | None] = Field(
        default_factory=lambda: {
            "batch": ["data", "fsdp"],
            "embed": "fsdp",
            "mlp": "tensor",
            "heads": "tensor",
            "kv_heads": "tensor",
            "vocab": "tensor",
            "head_dim": None,
            "adapter": None,
            "norm": None,
            "classes": None,
            "positions": None,
            "types": None,
        }
    )
    distributed: bool = Field(False, description="call jax.distributed.initialize()")
    coordinator_address: str | None = Field(
        None, description="host:port of process 0 (default: detected from the cluster environment)")
    num_processes: int | None = Field(None, gt=0, description="default: detected")
    process_id: int | None = Field(None, ge=0, description="default: detected")

    @model_validator(mode="after")
    def _fields_of_distributed(self) -> MeshConfig:
        self.refuse_unused("mesh", ("coordinator_address", "num_processes", "process_id"),
                           self.distributed, "with mesh.distributed=true")
        return self

    @model_validator(mode="after")
    def _positive_axes(self) -> MeshConfig:
        sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        if [k for k, v in sizes.items() if v == -1][1:]:
            raise ValueError("at most one of mesh.data / mesh.fsdp / mesh.tensor may be -1")
        for key, value in {**sizes, "seed": self.seed}.items():
            if value == 0 or value < -1:
                raise ValueError(f"mesh.{key} must be -1 or a positive integer, found {value}")
        return self


class CheckpointConfig(Section):
    """When to save, how many to keep."""

    every: int = Field(0, ge=0, description="0 = only at the end and on SIGTERM")
    keep: int = Field(2, gt=0)
    async_save: bool = True


class LoggingConfig(Section):
    """Metric sinks and console output."""

    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "jaxcult"
    progress: Literal["auto", "bar", "lines", "off"] = "auto"

    @field_validator("progress", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        """YAML reads a bare `off` as false: accept it as intended."""
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value


class GenerationConfig(Section):
    """Batched decoding: length limits, sampling, stopping, and the static shapes it compiles."""

    max_new_tokens: int = Field(64, gt=0)
    do_sample: bool = Field(False, description="false = greedy (temperature/top-* unused)")
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(0, ge=0, description="0 = off")
    top_p: float = Field(1.0, gt=0, le=1)
    min_p: float = Field(0.0, ge=0, lt=1, description="0 = off")
    repetition_penalty: float = Field(1.0, gt=0, description="1 = off")
    seed: int = 0
    stop_strings: list[str] = Field(default_factory=list,
                                    description="stop when the decoded text contains one (trimmed)")
    stop_token_ids: list[int] = Field(default_factory=list, description="besides the tokenizer's EOS")
    batch_size: int = Field(8, gt=0, description="prompts decoded together (a batch is padded to it)")
    length_buckets: list[int] = Field(
        default_factory=lambda: [32, 64, 128, 256, 512],
        description="prompt lengths compiled for (a prompt is left-padded to the next one)")
    chunk: int = Field(8, gt=0, description="decode steps per device call between stop checks")
    prefix_cache_mb: int = Field(
        0, ge=0, description="keep recent prompts' keys and values in this many MB and compute "
        "only what a new prompt adds to the longest stored start it shares (dialogue turns); "
        "0 = off")

    def provenance(self) -> dict:
        """The settings recorded with a stage's outputs: all but `prefix_cache_mb`, which
        changes speed only, so that changing it never blocks a resume."""
        return self.model_dump(mode="json", exclude={"prefix_cache_mb"})

    @model_validator(mode="after")
    def _buckets(self) -> GenerationConfig:
        if not self.length_buckets or any(b <= 0 for b in self.length_buckets):
            raise ValueError("generation.length_buckets must be a non-empty list of positive lengths")
        if sorted(set(self.length_buckets)) != list(self.length_buckets):
            raise ValueError(f"generation.length_buckets must be strictly increasing, found "
                             f"{self.length_buckets}")
        return self


class ProbeConfig(PluginSection):
    """A learning-dynamics probe (jaxcult.probes): a registry name or `package.module:Class`
    (what every probe reads; its own settings: its `Settings`)."""

    name: str
    every: int = Field(100, gt=0, description="steps between measurements (and at the end)")
    batches: int = Field(1, gt=0, description="fresh training batches per measurement "
                         "(noise_scale: at least 2)")
    batch_size: int | None = Field(None, gt=0, description="default trainer.batch_size")


class RunConfig(Section):
    """A complete, validated run."""

    name: str = "run"
    model: ModelConfig = Field(default_factory=ModelConfig)
    peft: PeftConfig = Field(default_factory=PeftConfig)
    data: SerializeAsAny[DataConfig] = Field(default_factory=DataConfig)
    task: SerializeAsAny[TaskConfig] = Field(default_factory=TaskConfig)
    schedule: SerializeAsAny[ScheduleConfig] = Field(default_factory=ScheduleConfig)
    fisher: FisherConfig = Field(default_factory=FisherConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    mesh: MeshConfig = Field(default_factory=MeshConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    probes: list[SerializeAsAny[ProbeConfig]] = Field(default_factory=list, description="learning-dynamics "
                                      "probes written to probes.jsonl (docs/probes.md)")

    @model_validator(mode="after")
    def _fields_that_depend_on_others(self) -> RunConfig:
        """Settings that only take effect with another setting (those that depend on which
        plug-in runs are the loader's: `config_loading`)."""
        self.mesh.refuse_unused("mesh", ("seed",), self.trainer.vectorize_seeds,
                                "with trainer.vectorize_seeds=true")
        self.data.refuse_unused("data", ("subsample",), self.data.max_train_examples is not None,
                                "with data.max_train_examples")
        in_step_ema = self.fisher.estimator == "in_step_ema"
        self.fisher.refuse_unused("fisher", ("ema",), self.fisher.track_every > 0 or in_step_ema,
                                  "with fisher.track_every > 0 (it smooths the logged trace) or "
                                  "fisher.estimator=in_step_ema")
        self.fisher.refuse_unused("fisher", ("window",), in_step_ema,
                                  "with fisher.estimator=in_step_ema")
        if in_step_ema:
            self.fisher.refuse_unused("fisher", ("num_batches", "batch_size", "one_pass",
                                                 "track_every"), False,
                                      "to estimators on fresh batches, not with "
                                      "fisher.estimator=in_step_ema (it reads the training "
                                      "steps' own gradients)")
            if self.schedule.official_offset and self.schedule.k == 1:
                raise ValueError("fisher.estimator=in_step_ema: with schedule.official_offset and "
                                 "k=1 the first check comes before any training step")
        return self

    def to_dict(self) -> dict:
        """Plain JSON-compatible dict (what `config.yaml` in a run directory holds)."""
        return self.model_dump(mode="json")
