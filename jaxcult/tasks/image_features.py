"""Grid features of images from an image backbone, computed once and cached (array_record).

Training on images must not rerun the CNN every epoch: `grid_features` runs EfficientNet-Lite0
over every image once and stores each image's last feature map (float16) as one array_record
record, with a JSON index (image ids in record order). Files are named by a fingerprint of the
pixels, the backbone and the image size: a later run with the same images reads them, any
change makes new ones. The CNN itself comes from the builder (`Loaders.image_backbone`), only
when the cache misses.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from jaxcult.data.visual import VisualTokens, grid_tokens
from jaxcult.errors import UserError
from jaxcult.own_files import read_json_object
from jaxcult.rundir import write_text_atomic

DEFAULT_CACHE = Path("~/.cache/jaxcult/features").expanduser()
_BATCH = 32


def _fingerprint(images: Mapping[str, np.ndarray], backbone: str, size: int) -> str:
    digest = hashlib.sha256(f"{backbone}|{size}".encode())
    for image_id, pixels in images.items():
        digest.update(image_id.encode() + b"\0" + np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()[:16]


def _encode(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def _compute(images: Mapping[str, np.ndarray], load: Callable, backbone: str, size: int
             ) -> list[np.ndarray]:
    import jax

    from jaxcult.models.vision.efficientnet import preprocess

    model = load(backbone)
    run = jax.jit(lambda pixels: model(preprocess(pixels, size)))
    stacked = np.stack(list(images.values()))
    maps = []
    for start in range(0, len(stacked), _BATCH):
        chunk = stacked[start:start + _BATCH]
        padded = np.concatenate([chunk, np.zeros((_BATCH - len(chunk), *chunk.shape[1:]),
                                                 chunk.dtype)]) if len(chunk) < _BATCH else chunk
        maps.extend(np.asarray(run(padded))[:len(chunk)].astype(np.float16))
    return maps


def grid_features(images: Mapping[str, np.ndarray], load: Callable, *,
                  backbone: str = "efficientnet-lite0", image_size: int = 128,
                  cache_dir: Path | None = None) -> dict[str, VisualTokens]:
    """Image id -> grid tokens of uint8 RGB `images` [h, w, 3], cached under
    `cache_dir/<backbone>-<size>-<fingerprint>.array_record` (one file per image set);
    `load(backbone)` gives the image model on a cache miss."""
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    folder = Path(cache_dir or DEFAULT_CACHE).expanduser()
    fingerprint = _fingerprint(images, backbone, image_size)
    stem = f"{Path(backbone).stem}-{image_size}-{fingerprint}"
    records, index = folder / f"{stem}.array_record", folder / f"{stem}.json"
    cached = (read_json_object(index, ("fingerprint", "ids"))
              if index.is_file() and records.is_file() else None)
    if cached is None or cached.get("fingerprint") != fingerprint:
        maps = _compute(images, load, backbone, image_size)
        folder.mkdir(parents=True, exist_ok=True)
        partial = records.with_suffix(".partial")
        writer = ArrayRecordWriter(str(partial), "group_size:1")
        for feature_map in maps:
            writer.write(_encode(feature_map))
        writer.close()
        partial.replace(records)
        write_text_atomic(index, json.dumps({"fingerprint": fingerprint, "ids": list(images)}))
        return {image_id: grid_tokens(m.astype(np.float32)) for image_id, m in zip(images, maps)}
    reader = ArrayRecordReader(str(records))
    try:
        raw = reader.read_all()
    finally:
        reader.close()
    if len(raw) != len(cached["ids"]):
        raise UserError(f"{records}: holds {len(raw)} records, its index {len(cached['ids'])}; "
                        f"delete both files to rebuild the cache")
    maps = [np.load(io.BytesIO(blob), allow_pickle=False) for blob in raw]
    return {image_id: grid_tokens(m.astype(np.float32)) for image_id, m in zip(cached["ids"], maps)}
