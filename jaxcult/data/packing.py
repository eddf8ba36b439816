"""Sequence packing: short documents concatenated into full rows instead of each padded to
the longest, so a step spends its compute on tokens rather than padding (language modelling
on corpora of short texts, e.g. sentences for language adapters).

Documents (the rows of a tokenised split, each with its own special tokens, labels and loss
mask) fill rows greedily in order, whole: a document that does not fit in the current row's
remaining space starts the next row. `segment_ids` number the documents of a row from 1 (0 is
padding); the models turn them into attention that stays inside each document and positions
that restart per document, so a packed document's loss equals its unpacked loss.
"""

from __future__ import annotations

import numpy as np


def pack_rows(arrays: dict[str, np.ndarray], max_length: int, pad_id: int) -> dict[str, np.ndarray]:
    """Token-aligned arrays [documents, len] (a document's tokens: where `attention_mask` is 1,
    left or right padded) packed into rows of at most `max_length` tokens, plus
    `segment_ids`; `input_ids` are padded with `pad_id`, everything else with 0."""
    real = arrays["attention_mask"].astype(bool)
    lengths = real.sum(1)
    rows: list[list[int]] = []
    used: list[int] = []
    for doc, length in enumerate(lengths):
        if length == 0:
            continue
        if not rows or used[-1] + length > max_length:
            rows.append([])
            used.append(0)
        rows[-1].append(doc)
        used[-1] += int(length)
    width = max(used, default=0)
    packed = {k: np.full((len(rows), width), pad_id if k == "input_ids" else 0, v.dtype)
              for k, v in arrays.items()}
    packed["segment_ids"] = np.zeros((len(rows), width), np.int32)
    for row, docs in enumerate(rows):
        start = 0
        for segment, doc in enumerate(docs, 1):
            end = start + int(lengths[doc])
            for key, values in arrays.items():
                packed[key][row, start:end] = values[doc][real[doc]]
            packed["segment_ids"][row, start:end] = segment
            start = end
    return packed
