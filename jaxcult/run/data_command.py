"""`jaxcult data prepare` and `jaxcult data inspect`: prepared (TFDS, array_record) datasets that
training reads with `data.source: tfds`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxcult.errors import UserError


def _shown(value, width: int = 100) -> str:
    """A decoded example field, shortened for the terminal."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    elif isinstance(value, np.ndarray) and value.size > 8:
        return f"array{tuple(value.shape)} {value.dtype}"
    elif isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shown(v, 40)}" for k, v in value.items()) + "}"
    text = str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def prepare_command(name: str, manual_dir: Path | None, data_dir: Path | None) -> str:
    """Prepare a dataset; returns where it went and each split's count."""
    from jaxcult.data import tfds as jt

    dataset = jt.prepare(name, data_dir=data_dir, manual_dir=manual_dir)
    return "\n".join([f"{name}: prepared under {dataset.data_dir}"] + [
        f"  {split:28} {info.num_examples:>10,} examples"
        for split, info in sorted(dataset.info.splits.items())])


def inspect_command(name: str, data_dir: Path | None, examples: int) -> str:
    """Splits, counts and the first `examples` examples of each split, decoded."""
    from jaxcult.data import tfds as jt

    if examples < 0:
        raise UserError(f"data inspect --examples: expected a count >= 0, found {examples}")
    sources = jt.load(name, data_dir=data_dir)
    lines = []
    for split, source in sorted(sources.items()):
        lines.append(f"{split}: {len(source):,} examples")
        for index in range(min(examples, len(source))):
            fields = ", ".join(f"{k}={_shown(v)}" for k, v in sorted(source[index].items()))
            lines.append(f"  [{index}] {fields}")
    return "\n".join(lines)
