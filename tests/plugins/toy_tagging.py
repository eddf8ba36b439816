"""A token-classification toy written as a user would, outside the jaxcult package.

Three plug-ins, none registered: a config names them by import path
(`toy_tagging:TokenTagging`, `toy_tagging:NumberWords`, `toy_tagging:TagAccuracy`).
Task: tag every word that is a number word (1) or not (0); English trains, German is scored
zero-shot.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from pydantic import Field

from jaxcult.config import DataConfig
from jaxcult.data import Dataset, DatasetInfo
from jaxcult.data.batching import Split
from jaxcult.eval import Evaluator
from jaxcult.models.layers import Dense
from jaxcult.tasks import Task

WORDS = {"en": (["one", "two", "three", "four", "five", "six"],
                ["cat", "house", "red", "runs", "tree", "blue", "dog", "sun"]),
         "de": (["eins", "zwei", "drei", "vier", "fünf", "sechs"],
                ["katze", "haus", "rot", "läuft", "baum", "blau", "hund", "sonne"])}


class NumberWordsSettings(DataConfig):
    sentences: int = Field(64, gt=0, description="sentences generated per split")


class NumberWords(Dataset):
    """`token_tags` records `{"tokens": [word, ...], "tags": [0/1, ...]}`, generated."""

    Settings = NumberWordsSettings

    def info(self, config) -> DatasetInfo:
        return DatasetInfo("token_tags", ("en", "de"), ("other", "number"))

    def read(self, config, language: str, split: str) -> list[dict]:
        rng = np.random.default_rng(["train", "validation", "test"].index(split))
        numbers, others = WORDS[language]
        records = []
        for _ in range(config.sentences):
            tags = rng.integers(0, 2, size=int(rng.integers(3, 7)))
            tokens = [str(rng.choice(numbers if t else others)) for t in tags]
            records.append({"tokens": tokens, "tags": [int(t) for t in tags]})
        return records


class Tagger(nnx.Module):
    def __init__(self, encoder: nnx.Module, num_labels: int, seed: int) -> None:
        self.encoder = encoder
        self.head = Dense(encoder.config.hidden_size, num_labels, axes=("embed", "classes"),
                          rngs=nnx.Rngs(seed))

    def __call__(self, input_ids, attention_mask, *, dropout_key=None):
        hidden = self.encoder(input_ids, attention_mask, dropout_key=dropout_key).last_hidden_state
        return self.head(hidden)


class TokenTagging(Task):
    """One label per word, predicted at the word's first sub-token."""

    record_formats = ("token_tags",)
    batch_keys = ("input_ids", "attention_mask", "labels", "label_mask")
    evaluator = "accuracy"  # overridden by task.evaluator in the test's config

    def tokenize(self, records, tokenizer, max_length, name) -> Split:
        enc = tokenizer([r["tokens"] for r in records], is_split_into_words=True,
                        truncation=True, max_length=max_length, padding="longest")
        ids = np.asarray(enc["input_ids"], np.int32)
        labels, mask = np.zeros_like(ids), np.zeros_like(ids)
        for row, record in enumerate(records):
            seen = set()
            for col, word in enumerate(enc.word_ids(row)):
                if word is not None and word not in seen:
                    seen.add(word)
                    labels[row, col], mask[row, col] = record["tags"][word], 1
        return Split({"input_ids": ids, "attention_mask": np.asarray(enc["attention_mask"], np.int32),
                      "labels": labels, "label_mask": mask}, name)

    def build_model(self, backbone, inputs):
        return Tagger(backbone, self.num_labels, inputs.seed)

    def forward(self, model, batch, dropout_key):
        return model(batch["input_ids"], batch["attention_mask"], dropout_key=dropout_key)

    def loss(self, outputs, batch):
        logits = outputs.astype(jnp.float32)
        mask = batch["label_mask"].astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        hits = (logits.argmax(-1) == batch["labels"]) * mask
        return (nll * mask).sum() / mask.sum(), hits.sum() / mask.sum()

    def log_probs(self, outputs, batch):
        return jax.nn.log_softmax(outputs.astype(jnp.float32), -1), batch["label_mask"]


class TagAccuracy(Evaluator):
    """Word-level accuracy, plus accuracy per gold tag (a nested metric)."""

    primary_metric = "word_accuracy"
    sequence_outputs = ("prediction",)  # one per token: padded back when batches are cut

    def device_outputs(self, outputs, batch):
        return {"prediction": outputs.argmax(-1)}

    def metrics(self, results, split):
        mask = split.arrays["label_mask"].astype(bool)
        gold = split.arrays["labels"]
        hits = results["prediction"] == gold
        per_tag = {self.info.labels[t]: float(hits[mask & (gold == t)].mean())
                   for t in range(len(self.info.labels))}
        return {"word_accuracy": float(hits[mask].mean()), "by_tag": per_tag}
