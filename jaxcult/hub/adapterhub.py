"""Bottleneck and invertible adapters in AdapterHub's format (the `adapters` library).

A directory holds `adapter_config.json` ({"config": {...}, "hidden_size", "model_type", "name",
...}), `adapter.safetensors` (or the older `pytorch_adapter.bin`) with keys such as
`roberta.encoder.layer.3.output.adapters.<name>.adapter_down.0.weight` (torch [out, in] layout),
`...attention.output.adapters...` for Houlsby's attention adapter and
`roberta.invertible_adapters.<name>.F.0.weight` for a NICE language adapter, and optionally a
classification head (`head_config.json`, `model_head.safetensors`: `heads.<name>.1/.4`).

One table (`hub_key`) maps jaxcult parameter paths to these keys for export, import and the
per-language swap of MAD-X language adapters.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flax import nnx

from jaxcult import models
from jaxcult.config import PeftConfig
from jaxcult.errors import UserError
from jaxcult.hub.export import ExportedHead
from jaxcult.peft.bottleneck import AdapterStack, BottleneckAdapter, make_adapters
from jaxcult.peft.invertible import NICEAdapter

VERSION = "adapters.1.3.0"
_BOTTLENECK = re.compile(r"^(?:encoder\.)?layers\.(\d+)\.(attention|output)_adapter\."
                         r"(?:(task|language)\.)?(down|up)\.(kernel|bias)$")
_INVERTIBLE = re.compile(r"^(?:encoder\.)?embedding_adapter\.([FG])\.(down|up)\.(kernel|bias)$")
_HEAD = re.compile(r"^head\.(dense|out_proj)\.(kernel|bias)$")
# every AdapterHub bottleneck option jaxcult does not implement, with the only value it supports
_UNSUPPORTED = {"ln_before": False, "ln_after": False, "use_gating": False, "phm_layer": False,
                "adapter_residual_before_ln": False, "cross_adapter": False}


def hub_key(path: str, name: str, which: str, slot: str | None = None) -> tuple[str, bool] | None:
    """(AdapterHub key without model prefix, transpose?) of a jaxcult parameter path, or None.

    `which` is "task" (task adapters and the head) or "language" (MAD-X language adapters and
    the invertible adapter); `slot` is where the bottleneck adapters sit in the jaxcult model
    (default: `which`; "task" for a language adapter trained here, which has no stack).
    """
    match = _BOTTLENECK.match(path)
    if match:
        layer, site, found, part, kind = match.groups()
        if (found or "task") != (slot or which):
            return None
        site = "attention.output" if site == "attention" else "output"
        part = "adapter_down.0" if part == "down" else "adapter_up"
        weight = "weight" if kind == "kernel" else "bias"
        return f"encoder.layer.{layer}.{site}.adapters.{name}.{part}.{weight}", kind == "kernel"
    match = _INVERTIBLE.match(path)
    if match and which == "language":
        net, part, kind = match.groups()
        index = 0 if part == "down" else 2
        return (f"invertible_adapters.{name}.{net}.{index}.{'weight' if kind == 'kernel' else 'bias'}",
                kind == "kernel")
    match = _HEAD.match(path)
    if match and which == "task":
        layer, kind = match.groups()
        index = 1 if layer == "dense" else 4
        return f"heads.{name}.{index}.{'weight' if kind == 'kernel' else 'bias'}", kind == "kernel"
    return None


@dataclass
class HubAdapter:
    """An AdapterHub adapter read from disk (tensors keyed without the model prefix)."""

    name: str
    directory: Path
    config: PeftConfig
    hidden_size: int
    invertible_reduction_factor: int | None
    tensors: dict[str, np.ndarray]
    head: dict | None = field(default=None)
    reduction_by_layer: dict | None = None  # AdapterHub's {"default": rf, "<layer>": rf}

    def config_for(self, num_layers: int) -> PeftConfig:
        if self.reduction_by_layer is None:
            return self.config
        mapping = self.reduction_by_layer
        factors = [mapping.get(str(i), mapping.get("default", 16)) for i in range(num_layers)]
        return self.config.model_copy(update={"reduction_factor": factors})


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise UserError(f"{path}: unreadable safetensors file ({error})") from None
    try:
        import torch
    except ImportError:
        raise UserError(f"{path}: reading .bin adapters needs torch; convert it to "
                        f"adapter.safetensors or install torch") from None
    return {k: v.numpy() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}


def _model_prefixes() -> set[str]:
    """Every AdapterHub key prefix of a registered family (`bert`, `roberta`, ...)."""
    return {prefix for _, arch in models.ARCHITECTURES for prefix, _ in arch.adapterhub.values()}


def _strip_prefix(key: str, prefixes: set[str]) -> str:
    first, _, rest = key.partition(".")
    return rest if first in prefixes else key


def _peft_config(config: dict, where: Path) -> tuple[PeftConfig, dict | None, int | None]:
    """(config, per-layer reduction-factor mapping or None, invertible reduction factor)."""
    for key, supported in _UNSUPPORTED.items():
        if config.get(key, supported) != supported:
            raise UserError(f"{where}: config.{key}={config[key]!r} is not supported by jaxcult")
    if config.get("inv_adapter") not in (None, "nice"):
        raise UserError(f"{where}: config.inv_adapter={config['inv_adapter']!r} is not supported "
                        f"(only 'nice')")
    if config.get("is_parallel"):
        kind = "parallel"
    elif config.get("mh_adapter"):
        kind = "houlsby"
    else:
        kind = "pfeiffer"
    rf = config.get("reduction_factor", 16)
    try:
        peft = PeftConfig(kind=kind, reduction_factor=1 if isinstance(rf, dict) else rf,
                          non_linearity=config.get("non_linearity", "relu"),
                          residual_before_ln=config.get("residual_before_ln", True),
                          original_ln_before=config.get("original_ln_before"),
                          original_ln_after=config.get("original_ln_after", True),
                          scaling=config.get("scaling", 1.0),
                          leave_out=list(config.get("leave_out", [])))
    except ValueError as error:
        raise UserError(f"{where}: unsupported adapter config ({error})") from None
    inv = config.get("inv_adapter_reduction_factor") if config.get("inv_adapter") else None
    return peft, rf if isinstance(rf, dict) else None, inv


def read_adapterhub(directory: str | Path) -> HubAdapter:
    """Read an AdapterHub adapter directory; errors name the file and the offending field."""
    directory = Path(directory).expanduser()
    config_path = directory / "adapter_config.json"
    if not config_path.is_file():
        raise UserError(f"{directory}: no adapter_config.json (not an AdapterHub adapter directory)")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
        name, hidden = meta["name"], int(meta["hidden_size"])
        raw = meta["config"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"{config_path}: not an AdapterHub adapter config ({error})") from None
    if raw.get("architecture") not in (None, "bottleneck"):
        raise UserError(f"{config_path}: architecture {raw['architecture']!r} is not a "
                        f"bottleneck adapter")
    peft, per_layer, inv = _peft_config(raw, config_path)
    weights = next((directory / f for f in ("adapter.safetensors", "pytorch_adapter.bin")
                    if (directory / f).is_file()), None)
    if weights is None:
        raise UserError(f"{directory}: no adapter.safetensors or pytorch_adapter.bin")
    prefixes = _model_prefixes()
    tensors = {_strip_prefix(k, prefixes): v for k, v in _read_tensors(weights).items()}
    head = None
    head_weights = next((directory / f for f in ("model_head.safetensors", "pytorch_model_head.bin")
                         if (directory / f).is_file()), None)
    if head_weights is not None and (directory / "head_config.json").is_file():
        head_meta = json.loads((directory / "head_config.json").read_text(encoding="utf-8"))
        head = {"config": head_meta["config"], "tensors": _read_tensors(head_weights)}
    return HubAdapter(name, directory, peft, hidden, inv, tensors, head, per_layer)


# -- building the modules of an adapter into a model -------------------------------------------

def _attach(layer: nnx.Module, hook: str, adapter: BottleneckAdapter, slot: str) -> None:
    current = getattr(layer, hook)
    if slot == "task" and (current is None or isinstance(current, BottleneckAdapter)):
        setattr(layer, hook, adapter)
    elif isinstance(current, AdapterStack):
        setattr(current, slot, adapter)
    else:
        setattr(layer, hook, AdapterStack(language=adapter, task=current))


def install(backbone: nnx.Module, hub: HubAdapter, which: str, seed: int = 0) -> None:
    """Create `hub`'s modules in `backbone` (task adapters, or a MAD-X language adapter stacked
    under any task adapters) and load its weights."""
    hidden = backbone.config.hidden_size
    if hub.hidden_size != hidden:
        raise UserError(f"{hub.directory}: adapter built for hidden size {hub.hidden_size}, but "
                        f"the model's hidden size is {hidden}")
    if hub.config.kind == "parallel" and which == "language":
        raise UserError(f"{hub.directory}: a parallel adapter cannot be a MAD-X language adapter")
    for (index, hook), adapter in make_adapters(backbone, hub.config_for(len(backbone.layers)),
                                                seed).items():
        _attach(backbone.layers[index], hook, adapter, which)
    if hub.invertible_reduction_factor is not None:
        if which != "language":
            raise UserError(f"{hub.directory}: has an invertible adapter; load it as a language "
                            f"adapter (peft.language_adapters)")
        backbone.embedding_adapter = NICEAdapter(
            hidden, non_linearity=hub.config.non_linearity,
            reduction_factor=hub.invertible_reduction_factor, seed=seed)
    load_weights(backbone, hub, which)


def _flat_params(module: nnx.Module) -> list[tuple[str, nnx.Variable]]:
    return [(".".join(str(p) for p in path), v)
            for path, v in nnx.to_flat_state(nnx.state(module, nnx.Param))]


def load_weights(module: nnx.Module, hub: HubAdapter, which: str, *,
                 with_head: bool = False) -> None:
    """Copy `hub`'s tensors into the matching parameters of `module` (strict both ways)."""
    tensors = dict(hub.tensors)
    if with_head and hub.head is not None:
        tensors.update(hub.head["tensors"])
    used = set()
    for path, variable in _flat_params(module):
        found = hub_key(path, hub.name, which)
        if found is None or (found[0].startswith("heads.") and not with_head):
            continue
        key, transpose = found
        if key not in tensors:
            raise UserError(f"{hub.directory}: missing tensor {key!r} (needed for {path})")
        value = np.asarray(tensors[key])
        value = value.T if transpose else value
        if value.shape != variable.shape:
            expected = variable.shape[::-1] if transpose else variable.shape
            raise UserError(f"{hub.directory}: tensor {key!r} has shape {tensors[key].shape}, "
                            f"the model expects {tuple(expected)}")
        variable[...] = value.astype(variable.dtype)
        used.add(key)
    unexpected = sorted(k for k in tensors if k not in used and f".{hub.name}." in f".{k}")
    if unexpected:
        raise UserError(f"{hub.directory}: tensor {unexpected[0]!r} matches no module of this "
                        f"model ({len(unexpected)} unmatched)")


# -- export ---------------------------------------------------------------------------------------

def _adapters_of(backbone: nnx.Module, slot: str) -> dict[tuple[int, str], BottleneckAdapter]:
    found = {}
    for index, layer in enumerate(backbone.layers):
        for hook in ("attention_adapter", "output_adapter"):
            module = getattr(layer, hook, None)
            if isinstance(module, AdapterStack):
                module = getattr(module, slot)
            elif slot == "language":
                module = None
            if module is not None:
                found[index, hook] = module
    return found


def hub_config(backbone: nnx.Module, which: str, slot: str | None = None) -> dict:
    """AdapterHub's config dict describing the adapters of `backbone` (task or language;
    `slot` as in `hub_key`)."""
    adapters = _adapters_of(backbone, slot or which)
    if not adapters:
        raise UserError(f"export --format adapterhub: the model has no {which} adapters")
    hidden = backbone.config.hidden_size
    first = next(iter(adapters.values()))
    sizes = {i: a.down.kernel.shape[1] for (i, hook), a in adapters.items()}
    factors = {i: hidden / size for i, size in sizes.items()}
    factors = {i: int(f) if float(f).is_integer() else f for i, f in factors.items()}
    common = max(set(factors.values()), key=list(factors.values()).count)
    rf = common if len(set(factors.values())) == 1 else {
        "default": common, **{str(i): f for i, f in factors.items() if f != common}}
    nice = backbone.embedding_adapter if which == "language" else None
    return {
        "mh_adapter": any(h == "attention_adapter" for _, h in adapters),
        "output_adapter": any(h == "output_adapter" for _, h in adapters),
        "reduction_factor": rf, "non_linearity": first.non_linearity,
        "original_ln_before": first.original_ln_before, "original_ln_after": first.original_ln_after,
        "ln_before": False, "ln_after": False, "init_weights": "bert",
        "is_parallel": first.parallel, "scaling": first.scaling, "use_gating": False,
        "residual_before_ln": first.residual_before_ln, "adapter_residual_before_ln": False,
        "inv_adapter": "nice" if nice is not None else None,
        "inv_adapter_reduction_factor": nice.reduction_factor if nice is not None else None,
        "cross_adapter": False, "leave_out": sorted({i for i in range(len(backbone.layers))} - set(sizes)),
        "dropout": 0.0, "phm_layer": False, "stochastic_depth": 0.0,
    }


def export_adapterhub(model: nnx.Module, directory: str | Path, *, name: str, which: str = "task",
                      head: ExportedHead | None = None, slot: str | None = None) -> Path:
    """Write `model`'s task (or language) adapters, plus `head` when given (the task family
    decides whether and how its head goes into AdapterHub's files: `Task.export_head`), as an
    AdapterHub directory loadable with `model.load_adapter(dir)`; `slot` as in `hub_key`."""
    from safetensors.numpy import save_file

    backbone = getattr(model, "encoder", model)
    model_type = backbone.config.model_type
    names = models.architecture_of(backbone.config).adapterhub
    if model_type not in names:
        supported = sorted(t for _, arch in models.ARCHITECTURES for t in arch.adapterhub)
        raise UserError(f"export --format adapterhub: model type {model_type!r} is not supported "
                        f"(supported: {', '.join(supported)})")
    prefix, model_class = names[model_type]
    meta = {"hidden_size": backbone.config.hidden_size, "model_class": model_class,
            "model_name": "", "model_type": model_type, "name": name, "version": VERSION}
    adapters = {}
    for path, variable in _flat_params(model):
        found = hub_key(path, name, which, slot)
        if found is None or found[0].startswith("heads."):
            continue
        key, transpose = found
        value = np.asarray(variable[...], dtype=np.float32)
        adapters[f"{prefix}.{key}"] = np.ascontiguousarray(value.T if transpose else value)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(adapters, str(directory / "adapter.safetensors"))
    (directory / "adapter_config.json").write_text(
        json.dumps({"config": hub_config(backbone, which, slot), **meta}, indent=2) + "\n")
    if head is not None:
        save_file(head.tensors, str(directory / "model_head.safetensors"))
        (directory / "head_config.json").write_text(
            json.dumps({"config": head.config, **meta}, indent=2) + "\n")
    return directory


def _torch_layout(variable: nnx.Variable, transpose: bool) -> np.ndarray:
    value = np.asarray(variable[...], dtype=np.float32)
    return np.ascontiguousarray(value.T if transpose else value)


def classification_head(model: nnx.Module, name: str, labels: tuple[str, ...] = ()
                        ) -> ExportedHead:
    """AdapterHub's `classification` head of a model whose `head` is dense + tanh + linear on
    the first token (jaxcult's `ClassificationHead` with cls pooling)."""
    tensors = {}
    for path, variable in _flat_params(model.head):
        key, transpose = hub_key(f"head.{path}", name, "task")
        tensors[key] = _torch_layout(variable, transpose)
    num_labels = tensors[f"heads.{name}.4.bias"].shape[0]
    names = labels or tuple(f"LABEL_{i}" for i in range(num_labels))
    return ExportedHead({"head_type": "classification", "num_labels": num_labels, "layers": 2,
                         "activation_function": "tanh",
                         "label2id": {n: i for i, n in enumerate(names)},
                         "use_pooler": False, "bias": True, "dropout_prob": None}, tensors)


# AdapterHub's `masked_lm` head: 0 dense, 1 activation, 2 LayerNorm, 3 output embeddings (tied to
# the word embeddings, so only its bias is stored); jaxcult head path -> (index, transpose?)
_MLM_HEAD = {"dense.kernel": ("0.weight", True), "dense.bias": ("0.bias", False),
             "layer_norm.scale": ("2.weight", False), "layer_norm.bias": ("2.bias", False),
             "output_bias": ("3.bias", False)}


def masked_lm_head(model: nnx.Module, name: str) -> ExportedHead:
    """AdapterHub's `masked_lm` head of a `MaskedLM` model (MAD-X language adapters ship it)."""
    config = model.encoder.config
    tensors = {}
    for path, variable in _flat_params(model.head):
        index, transpose = _MLM_HEAD[path]
        tensors[f"heads.{name}.{index}"] = _torch_layout(variable, transpose)
    return ExportedHead({"head_type": "masked_lm", "vocab_size": config.vocab_size,
                         "embedding_size": config.hidden_size, "layers": 2,
                         "activation_function": config.hidden_act, "layer_norm": True,
                         "bias": True, "shift_labels": False, "label2id": None}, tensors)
