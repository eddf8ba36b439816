"""Parameter groups: stable, readable names for the blocks that schedules unfreeze.

Groups are derived from NNX parameter paths, so they never need to be declared by hand:
`head`, `adapter/task/layer_{i}` (bottleneck adapters), `lora/layer_{i}` (LoRA: every factor
of a layer, so q and v unfreeze together as in the FUN paper's App. G.4; with
`peft.lora_groups: module`, `lora/layer_{i}/<module>`; with `model.scan_layers` the stacked
layers' parameters form one group: `adapter/task/layers`, `lora/layers`, `layers`),
`adapter/invertible` (a NICE adapter trained for a MAD-X language adapter; a stacked one from
AdapterHub stays frozen), `saved/<module>` (PEFT's `modules_to_save`: trained in full), and for
full fine-tuning
`embeddings` and `layer_{i}` (a causal LM's `lm_head` is its `head`). Paths are those of an
encoder-based model (`encoder.layers.3...`) or of a causal LM (`layers.3...`). A path outside
every group belongs to the frozen backbone.
"""

from __future__ import annotations

import re

_ADAPTER = re.compile(r"^(?:encoder\.)?layers\.(\d+|stacked)\.(attention|output)_adapter\.")
_LORA = re.compile(r"^(?:encoder\.)?layers\.(\d+|stacked)\.(\w+)\.lora_[ab]$")
_LANGUAGE = re.compile(r"(^|\.)(language|embedding_adapter)\.")
_INVERTIBLE = re.compile(r"(^|\.)embedding_adapter\.")
_LAYER = re.compile(r"^(?:encoder\.)?layers\.(\d+|stacked)\.")


def _layer(index: str) -> str:
    """`layer_3` of layer 3; `layers` of a stack scanned as one (`model.scan_layers`)."""
    return "layers" if index == "stacked" else f"layer_{index}"


def group_of(path: str, peft_kind: str, saved: tuple[str, ...] = (),
             lora_groups: str = "layer", invertible: bool = False) -> str | None:
    """Group name of a parameter path, or None when the parameter stays frozen forever.

    `saved` holds module paths trained in full (`modules_to_save`), each its own group;
    `lora_groups` is `layer` (one group per layer) or `module` (one per adapted projection);
    `invertible`: the embedding adapter is trained here (not a stacked language adapter).
    """
    if path.startswith("head."):
        return "head"
    if invertible and _INVERTIBLE.search(path):
        return "adapter/invertible"
    if _LANGUAGE.search(path):  # MAD-X language adapters stay frozen
        return None
    for module in saved:
        if path.startswith(module + "."):
            return f"saved/{module}"
    match = _ADAPTER.match(path)
    if match:
        return f"adapter/task/{_layer(match.group(1))}"
    match = _LORA.match(path)
    if match:
        layer = f"lora/{_layer(match.group(1))}"
        return f"{layer}/{match.group(2)}" if lora_groups == "module" else layer
    if peft_kind == "full":
        match = _LAYER.match(path)
        if match:
            return _layer(match.group(1))
        if path.startswith("lm_head."):
            return "head"
        return "embeddings"
    return None


def layer_index(group: str) -> int | None:
    """The layer a group belongs to (None for `head` / `embeddings`)."""
    match = re.search(r"layer_(\d+)(/|$)", group)
    return int(match.group(1)) if match else None


def ordered_groups(names: set[str]) -> list[str]:
    """`head` first, then layer groups bottom-up, then anything else alphabetically."""
    def key(name: str):
        index = layer_index(name)
        return (0 if name == "head" else 1 if index is not None else 2, index or 0, name)

    return sorted(names, key=key)


def format_group_table(counts: dict[str, int], total: int) -> str:
    """The table printed at the start of a run: group, parameters, share of the model."""
    width = max([len("group"), *(len(g) for g in counts)])
    lines = [f"{'group':<{width}}  {'parameters':>12}  {'share':>8}"]
    for name, count in counts.items():
        lines.append(f"{name:<{width}}  {count:>12,}  {100 * count / total:>7.3f}%")
    trainable = sum(counts.values())
    lines.append(f"{'(all groups)':<{width}}  {trainable:>12,}  {100 * trainable / total:>7.3f}%")
    lines.append(f"{'(model total)':<{width}}  {total:>12,}")
    return "\n".join(lines)


def is_peft_parameter(path: str) -> bool:
    """Whether a parameter path belongs to a PEFT module (adapter, LoRA factor, head)."""
    return path.startswith("head.") or "adapter" in path or ".lora_" in f".{path}"


def uncovered_peft_parameters(paths: list[str], peft_kind: str, saved: tuple[str, ...] = (),
                              lora_groups: str = "layer", invertible: bool = False) -> list[str]:
    """PEFT parameters that no group covers (they would silently stay frozen): a bug in a
    user's module layout, reported instead of ignored. MAD-X language adapters are frozen
    on purpose and not reported."""
    return [p for p in paths if is_peft_parameter(p)
            and not (_LANGUAGE.search(p) and not invertible)
            and group_of(p, peft_kind, saved, lora_groups, invertible) is None]
