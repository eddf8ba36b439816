"""Visual tokens of images: region or grid features with normalised boxes, checked and gathered.

An image is `VisualTokens`: features [regions, dim] and boxes [regions, 4] as (x1, y1, x2, y2)
fractions of the image width/height. Region features (IGLUE-style, from a detector) come from
files the user supplies; grid features come from an image backbone (`data.image_features`).
A split holds each image once (`VisualTable`) and one index per question; `ImageRows` gathers
the rows of a batch, so 40k questions about 5k images never copy features 40k times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxcult.errors import UserError

LOCATION_DIMS = (5, 7)


@dataclass(frozen=True)
class VisualTokens:
    features: np.ndarray  # [regions, dim]
    boxes: np.ndarray     # [regions, 4]: x1/W, y1/H, x2/W, y2/H


def locations(boxes: np.ndarray, dim: int) -> np.ndarray:
    """Box locations [..., dim]: (x1, y1, x2, y2, area) and, for 7-d, (+ width, height), all
    as fractions of the image (VOLTA's 5-d / 7-d spatial features)."""
    width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    parts = [boxes, (width * height)[..., None]]
    if dim == 7:
        parts += [width[..., None], height[..., None]]
    return np.concatenate(parts, -1).astype(np.float32)


def grid_tokens(feature_map: np.ndarray) -> VisualTokens:
    """A backbone's feature map [h, w, dim] -> h*w tokens, each boxed by its grid cell."""
    h, w, dim = feature_map.shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    boxes = np.stack([cols / w, rows / h, (cols + 1) / w, (rows + 1) / h], -1).reshape(-1, 4)
    return VisualTokens(feature_map.reshape(h * w, dim), boxes.astype(np.float32))


def checked(tokens: VisualTokens, where: str, feature_dim: int | None) -> VisualTokens:
    """The tokens of one image, or an error naming `where` (the record or file)."""
    features, boxes = np.asarray(tokens.features), np.asarray(tokens.boxes)
    if features.ndim != 2 or boxes.shape != (len(features), 4):
        raise UserError(f"{where}: expected features [regions, dim] and boxes [regions, 4], "
                        f"found {features.shape} and {boxes.shape}")
    if feature_dim is not None and features.shape[1] != feature_dim:
        raise UserError(f"{where}: features have dimension {features.shape[1]}, expected "
                        f"{feature_dim}")
    if not np.isfinite(features).all():
        raise UserError(f"{where}: features hold NaN or infinite values")
    outside = (boxes < -1e-6) | (boxes > 1 + 1e-6)
    if outside.any() or (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        row = int(np.argmax(outside.any(-1) | (boxes[:, 2] < boxes[:, 0])
                            | (boxes[:, 3] < boxes[:, 1])))
        raise UserError(f"{where}: box {row} {boxes[row].tolist()} lies outside the image "
                        f"(expected 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1 as fractions)")
    return VisualTokens(features.astype(np.float32), boxes.astype(np.float32))


@dataclass(frozen=True)
class VisualTable:
    """Every image of a split once, padded to the most regions any image has (at most
    `max_regions`, which cuts the rest), optionally a global token first: the mean feature,
    boxed by the whole image."""

    features: np.ndarray   # [images, tokens, dim]
    boxes: np.ndarray      # [images, tokens, location_dim]
    mask: np.ndarray       # [images, tokens] int32

    @classmethod
    def build(cls, images: list[VisualTokens], max_regions: int, location_dim: int,
              global_token: bool) -> VisualTable:
        dim = images[0].features.shape[1] if images else 0
        regions = min(max_regions, max((len(image.features) for image in images), default=0))
        tokens = regions + int(global_token)
        features = np.zeros((len(images), tokens, dim), np.float32)
        boxes = np.zeros((len(images), tokens, 4), np.float32)
        mask = np.zeros((len(images), tokens), np.int32)
        first = int(global_token)
        for i, image in enumerate(images):
            n = min(len(image.features), regions)
            features[i, first:first + n], boxes[i, first:first + n] = image.features[:n], image.boxes[:n]
            mask[i, first:first + n] = 1
            if global_token:
                features[i, 0] = image.features.mean(0) if len(image.features) else 0.0
                boxes[i, 0], mask[i, 0] = (0.0, 0.0, 1.0, 1.0), 1
        return cls(features, locations(boxes, location_dim), mask)


class ImageRows:
    """A column of a split that looks like `table[index]` but gathers only the rows asked for."""

    def __init__(self, table: np.ndarray, index: np.ndarray) -> None:
        self.table, self.index = table, np.asarray(index)
        self.shape = (len(self.index), *table.shape[1:])
        self.dtype, self.ndim = table.dtype, table.ndim

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows) -> np.ndarray:
        return self.table[self.index[rows]]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self.table[self.index]
        return array if dtype is None else array.astype(dtype)
