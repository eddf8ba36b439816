"""Region features the user supplies (a detector's boxes and features per image), in the three
layouts IGLUE-style pipelines use; `docs/vqa.md` documents each.

- a folder of `<image_id>.npz` files (`features` [N, D], `boxes` [N, 4] in pixels, `image_w`,
  `image_h`);
- an HDF5 file (`.h5` / `.hdf5`, needs `h5py`): one group per image id holding the same four
  datasets (or `image_w` / `image_h` as attributes);
- an LMDB folder (`data.mdb`, needs `lmdb`) as VOLTA / IGLUE release them: every key an image id,
  every value a pickled dict with `image_w` / `image_h` (or `img_w` / `img_h`), `num_boxes`,
  `boxes` and `features` as base64-encoded float32 bytes or arrays. Values are unpickled with
  a restricted unpickler that builds only plain containers and numpy arrays, never arbitrary
  objects, so a hostile file cannot run code.

Boxes come back as fractions of the image size, checked (`visual.checked`).
"""

from __future__ import annotations

import base64
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from jaxcult.data.visual import VisualTokens, checked
from jaxcult.errors import UserError

FIELDS = ("features", "boxes", "image_w", "image_h")
_SAFE_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                 ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                 ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _tokens(fields: dict[str, Any], where: str, feature_dim: int | None) -> VisualTokens:
    """Checked tokens from an image's raw fields (boxes in pixels)."""
    missing = [k for k in FIELDS if k not in fields]
    if missing:
        raise UserError(f"{where}: missing field(s) {', '.join(missing)} (expected "
                        f"{', '.join(FIELDS)})")
    boxes = np.asarray(fields["boxes"], np.float32)
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise UserError(f"{where}: boxes have shape {boxes.shape}, expected [regions, 4]")
    size = np.asarray([float(np.asarray(fields["image_w"])), float(np.asarray(fields["image_h"]))] * 2,
                      np.float32)
    if (size <= 0).any():
        raise UserError(f"{where}: image size {size[:2].tolist()} must be positive")
    return checked(VisualTokens(np.asarray(fields["features"]), boxes / size), where, feature_dim)


class RegionFeatures:
    """Region features of images by id, from a `.npz` folder, an HDF5 file or an LMDB folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_file() and path.suffix in (".h5", ".hdf5"):
            self.kind = "h5"
        elif path.is_dir() and (path / "data.mdb").is_file():
            self.kind = "lmdb"
        elif path.is_dir():
            self.kind = "npz"
        else:
            raise UserError(f"{path}: not found (expected a folder of <image_id>.npz files, an "
                            f".h5 file or an LMDB folder)")
        self._handle: Any = None

    def __call__(self, image_id: str, feature_dim: int | None) -> VisualTokens:
        return getattr(self, f"_{self.kind}")(image_id, feature_dim)

    def _npz(self, image_id: str, feature_dim: int | None) -> VisualTokens:
        path = self.path / f"{image_id}.npz"
        if not path.is_file():
            raise UserError(f"{path}: no region features for image {image_id!r}")
        try:
            with np.load(path, allow_pickle=False) as data:
                fields = {k: data[k] for k in data.files}
        except (OSError, ValueError) as error:
            raise UserError(f"{path}: not a readable .npz file ({error})") from None
        return _tokens(fields, str(path), feature_dim)

    def _h5(self, image_id: str, feature_dim: int | None) -> VisualTokens:
        if self._handle is None:
            h5py = _optional("h5py")
            try:
                self._handle = h5py.File(self.path, "r")
            except OSError as error:
                raise UserError(f"{self.path}: not a readable HDF5 file ({error})") from None
        where = f"{self.path}: image {image_id!r}"
        if image_id not in self._handle:
            raise UserError(f"{where}: no region features (no such group)")
        group = self._handle[image_id]
        fields = {**dict(group.attrs), **{k: group[k][()] for k in group.keys()}}
        return _tokens(fields, where, feature_dim)

    def _lmdb(self, image_id: str, feature_dim: int | None) -> VisualTokens:
        if self._handle is None:
            lmdb = _optional("lmdb")
            try:
                self._handle = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False)
            except lmdb.Error as error:
                raise UserError(f"{self.path}: not a readable LMDB folder ({error})") from None
        where = f"{self.path}: image {image_id!r}"
        with self._handle.begin() as txn:
            value = txn.get(image_id.encode())
        if value is None:
            raise UserError(f"{where}: no region features (no such key)")
        try:
            item = _RestrictedUnpickler(io.BytesIO(value)).load()
        except Exception as error:  # any malformed or refused pickle
            raise UserError(f"{where}: not a pickled feature record ({error})") from None
        if not isinstance(item, dict):
            raise UserError(f"{where}: expected a pickled dict, found {type(item).__name__}")
        fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in item.items()}
        for short, field in (("img_w", "image_w"), ("img_h", "image_h")):
            if field not in fields and short in fields:
                fields[field] = fields[short]
        boxes = fields.get("num_boxes")
        for key, width in (("features", None), ("boxes", 4)):
            if isinstance(fields.get(key), (bytes, str)):  # base64 float32 [num_boxes, width]
                raw = np.frombuffer(base64.b64decode(fields[key]), np.float32)
                rows = int(boxes) if boxes is not None else raw.size // (width or feature_dim or 1)
                if rows <= 0 or raw.size % rows:
                    raise UserError(f"{where}: {key} hold {raw.size} floats, not {rows} rows "
                                    f"(num_boxes)")
                fields[key] = raw.reshape(rows, -1)
        return _tokens(fields, where, feature_dim)


def _optional(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise UserError(f"reading region features in this layout needs the {module!r} package: "
                        f"pip install 'jaxcult[vqa]'") from None
