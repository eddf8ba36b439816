"""LoRA in Hugging Face PEFT's format: `adapter_config.json` + `adapter_model.safetensors`.

Keys are `base_model.model.<HF module path>.lora_A.weight` ([r, in], torch layout) and
`.lora_B.weight` ([out, r]); module paths come from the same key tables as checkpoint loading,
so an adapter trained in jaxcult loads with `peft.PeftModel.from_pretrained` onto the
transformers model, and one saved by `peft` imports into jaxcult.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from flax import nnx

from jaxcult import models
from jaxcult.errors import UserError
from jaxcult.peft.lora import lora_modules, set_factors

PREFIX = "base_model.model."


def _hf_module(architecture: models.Architecture, path: str) -> str:
    found = architecture.hf_name(f"{path}.kernel")
    if found is None:
        raise UserError(f"LoRA on {path} has no Hugging Face module name")
    return found[0].removesuffix(".weight")


def _saved_tensors(model: nnx.Module, saved: tuple[str, ...]) -> tuple[dict, list[str]]:
    """PEFT's `modules_to_save`: full weights under `base_model.model.<HF name>` and the module
    names listed in the config."""
    tensors, names = {}, []
    for module_path in saved:
        for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            dotted = ".".join(str(p) for p in path)
            if not dotted.startswith(module_path + ".") or ".lora_" in dotted:
                continue
            found = models.architecture_of(model.config).hf_name(dotted)
            if found is None:
                raise UserError(f"modules_to_save: {dotted} has no Hugging Face tensor name")
            name, transpose = found
            value = np.asarray(variable[...], dtype=np.float32)
            tensors[f"{PREFIX}{name}"] = np.ascontiguousarray(value.T if transpose else value)
        names.append(module_path.rsplit(".", 1)[-1])
    return tensors, names


def export_peft(model: nnx.Module, directory: str | Path, *, alpha: float, dropout: float = 0.0,
                base_model: str | None = None, saved: tuple[str, ...] = ()) -> Path:
    """Write the LoRA factors of `model` (an Encoder or CausalLM) as a PEFT adapter directory,
    with the modules trained in full (`saved` module paths) as PEFT's `modules_to_save`."""
    from safetensors.numpy import save_file

    modules = lora_modules(model)
    if not modules:
        raise UserError("export --format peft: the model has no LoRA factors")
    architecture = models.architecture_of(model.config)
    tensors, names, ranks = {}, set(), set()
    for path, dense in modules:
        hf = _hf_module(architecture, path)
        names.add(hf.rsplit(".", 1)[-1])
        ranks.add(dense.lora_a.shape[1])
        tensors[f"{PREFIX}{hf}.lora_A.weight"] = np.ascontiguousarray(np.asarray(dense.lora_a[...]).T)
        tensors[f"{PREFIX}{hf}.lora_B.weight"] = np.ascontiguousarray(np.asarray(dense.lora_b[...]).T)
    saved_tensors, saved_names = _saved_tensors(model, saved)
    tensors.update(saved_tensors)
    if len(ranks) != 1:
        raise UserError(f"export --format peft: LoRA ranks differ across modules ({sorted(ranks)})")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": ranks.pop(), "lora_alpha": alpha, "lora_dropout": dropout,
              "target_modules": sorted(names), "bias": "none", "fan_in_fan_out": False,
              "use_rslora": False, "inference_mode": True,
              "modules_to_save": saved_names or None,
              "task_type": architecture.peft_task_type, "base_model_name_or_path": base_model}
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory


def import_peft(model: nnx.Module, directory: str | Path) -> list[str]:
    """Attach the LoRA factors of a PEFT adapter directory to `model`; returns their paths."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    config_path = directory / "adapter_config.json"
    weights = directory / "adapter_model.safetensors"
    for needed in (config_path, weights):
        if not needed.exists():
            raise UserError(f"{directory}: not a PEFT adapter ({needed.name} missing)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA":
        raise UserError(f"{config_path}: peft_type {config.get('peft_type')!r} is not LORA")
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    keymap = models.architecture_of(model.config).keymap
    modules = {".".join(str(p) for p in path): m for path, m in nnx.iter_modules(model)}
    tensors = load_file(str(weights))
    attached = _import_saved(model, keymap, tensors, weights)
    for key in sorted(k for k in tensors if k.endswith(".lora_A.weight")):
        hf_module = key.removeprefix(PREFIX).removesuffix(".lora_A.weight")
        found = keymap.to_nnx(keymap.canonical(f"{hf_module}.weight"))
        if found is None:
            raise UserError(f"{weights}: {key!r} targets no module of this architecture")
        path = found[0].removesuffix(".kernel")
        dense = modules[path]
        a = tensors[key].T
        b = tensors[key.replace(".lora_A.", ".lora_B.")].T
        fan_in, fan_out = dense.kernel_shape
        if a.shape[0] != fan_in or b.shape[1] != fan_out:
            raise UserError(f"{weights}: {key!r} was built for a {a.shape[0]}->{b.shape[1]} "
                            f"projection, but {path} is {fan_in}->"
                            f"{fan_out} (an adapter for another model size)")
        set_factors(dense, a, b, scaling)
        attached.append(path)
    if not attached:
        raise UserError(f"{weights}: no LoRA tensors found")
    return attached


def _import_saved(model: nnx.Module, keymap, tensors: dict, weights: Path) -> list[str]:
    """Copy full weights of PEFT's `modules_to_save` into the model; returns their paths."""
    params = {".".join(str(p) for p in path): v
              for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    copied = []
    for key in sorted(k for k in tensors if ".lora_" not in k):
        name = key.removeprefix(PREFIX)
        found = keymap.to_nnx(keymap.canonical(name))
        if found is None or found[0] not in params:
            raise UserError(f"{weights}: {key!r} matches no parameter of this architecture")
        path, transpose = found
        value = tensors[key].T if transpose else tensors[key]
        if value.shape != params[path].shape:
            raise UserError(f"{weights}: {key!r} has shape {tensors[key].shape}, this model's "
                            f"{path} has {params[path].shape} (an adapter for another model size)")
        params[path][...] = value.astype(params[path].dtype)
        copied.append(path)
    return copied
