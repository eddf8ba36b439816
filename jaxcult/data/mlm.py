"""Masked-LM examples: texts tokenised and masked once (static masking, seeded per text), as
BERT's original pre-processing did; every epoch sees the same masks.

Of the real (non-special) tokens each is selected with probability `probability` (with
`whole_word`, each word is, and all its tokens follow it); a selected token becomes the mask
token 80% of the time, a random vocabulary token 10%, and stays unchanged 10% (BERT's 80/10/10,
as transformers' DataCollatorForLanguageModeling). `masked_positions` hold the selected
positions of each row, `labels` their original tokens and `loss_mask` which entries are real.
"""

from __future__ import annotations

import zlib

import numpy as np

from jaxcult.data.batching import Split, pad_token_id
from jaxcult.data.packing import pack_rows
from jaxcult.errors import UserError


def mask_tokens(ids: np.ndarray, maskable: np.ndarray, rng: np.random.Generator, *,
                mask_id: int, vocab_size: int, probability: float = 0.15,
                word_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(masked ids, selected positions) of token ids [batch, len]; `maskable` marks real tokens;
    `word_ids` (-1 outside words) makes selection whole-word."""
    if word_ids is None:
        selected = (rng.random(ids.shape) < probability) & maskable
    else:
        selected = np.zeros(ids.shape, bool)
        for row in range(ids.shape[0]):
            words = np.unique(word_ids[row][maskable[row] & (word_ids[row] >= 0)])
            chosen = words[rng.random(len(words)) < probability]
            selected[row] = np.isin(word_ids[row], chosen) & maskable[row]
    action = rng.random(ids.shape)
    masked = np.where(selected & (action < 0.8), mask_id, ids)
    random_tokens = rng.integers(0, vocab_size, size=ids.shape)
    masked = np.where(selected & (action >= 0.8) & (action < 0.9), random_tokens, masked)
    return masked, selected


def mask_rows(ids: np.ndarray, lengths: np.ndarray, maskable: np.ndarray, texts: list[str], *,
              seed: int, mask_id: int, vocab_size: int, probability: float,
              word_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`mask_tokens` row by row, each row's draws from a generator seeded by `seed` and its text
    over its own `lengths` tokens (right padding): a text is masked alike in any batch, at any
    padding, so tokenising batch by batch gives the masks of tokenising the whole split."""
    masked, selected = ids.copy(), np.zeros(ids.shape, bool)
    for row, (text, length) in enumerate(zip(texts, lengths)):
        rng = np.random.default_rng([seed, zlib.crc32(text.encode("utf-8"))])
        words = None if word_ids is None else word_ids[row:row + 1, :length]
        row_masked, row_selected = mask_tokens(
            ids[row:row + 1, :length], maskable[row:row + 1, :length], rng, mask_id=mask_id,
            vocab_size=vocab_size, probability=probability, word_ids=words)
        masked[row, :length], selected[row, :length] = row_masked[0], row_selected[0]
    return masked, selected


def tokenize_masked(texts: list[str], tokenizer, max_length: int, name: str, *,
                    probability: float, whole_word: bool, seed: int, pack: bool = False) -> Split:
    """Masked texts; `pack` packs them into full rows with `segment_ids` (the masks are drawn
    before packing, so a text is masked alike packed or not)."""
    if not texts:
        raise UserError(f"{name}: split is empty")
    if tokenizer.mask_token_id is None:
        raise UserError(f"{name}: the tokenizer has no mask token; masked-LM needs one")
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding="longest",
                    return_tensors="np", return_special_tokens_mask=True)
    ids, attention = enc["input_ids"], enc["attention_mask"]
    maskable = (attention == 1) & (enc["special_tokens_mask"] == 0)
    word_ids = None
    if whole_word:
        word_ids = np.array([[-1 if w is None else w for w in enc.word_ids(i)]
                             for i in range(len(texts))])
    masked, selected = mask_rows(ids, attention.sum(1), maskable, texts, seed=seed,
                                 mask_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                                 probability=probability, word_ids=word_ids)
    if not maskable.any():  # (a batch may draw no mask at all; a text always has tokens)
        raise UserError(f"{name}: no token can be masked (every text is empty)")
    arrays = {"input_ids": masked.astype(np.int32), "attention_mask": attention.astype(np.int32),
              "labels": ids.astype(np.int32), "loss_mask": selected.astype(np.int32)}
    if pack:
        arrays = pack_rows(arrays, max_length, pad_token_id(tokenizer))
    labels, loss_mask = arrays.pop("labels"), arrays.pop("loss_mask")
    return Split({**arrays, **gather_predictions(labels, loss_mask.astype(bool))}, name)


def gather_predictions(ids: np.ndarray, selected: np.ndarray, multiple: int = 8
                       ) -> dict[str, np.ndarray]:
    """The selected positions of each row, left-aligned (as BERT's `masked_lm_positions`):
    `masked_positions` [rows, M], their original tokens `labels` and `loss_mask` (0 where a
    row has fewer than M); M is the most any row has, rounded up to `multiple`. The MLM head
    then runs on M positions per row instead of every token: its vocabulary projection is
    most of an MLM step's compute."""
    width = min(max(-(-int(selected.sum(1).max()) // multiple), 1) * multiple, ids.shape[1])
    order = np.argsort(~selected, axis=1, kind="stable")[:, :width]
    kept = np.take_along_axis(selected, order, 1)
    return {"masked_positions": np.where(kept, order, 0).astype(np.int32),
            "labels": np.where(kept, np.take_along_axis(ids, order, 1), 0).astype(np.int32),
            "loss_mask": kept.astype(np.int32)}
