"""The built-in multilingual topic dataset (the offline default's data).

Generation method: every sentence is `prefix + template.format(x=filler) + suffix` from the
hand-written lexicon of its language (`multilingual_lexicon.py`), labelled with the template's
topic. All combinations are enumerated in a fixed order; a combination belongs to the test
partition when the SHA-1 of its text is 0 mod 5, to validation when 1 mod 5, else to train.
Each split is then sampled without replacement with a fixed seed, so the dataset is identical
on every machine. English has train (up to 3,000), validation (300) and test (400); every other
language has validation (100) and test (400). `jaxcult_multilingual_text` holds every
language's train/validation/test partitions as unlabelled text (language-adapter training).
"""

from __future__ import annotations

import hashlib
import random
from itertools import product

from jaxcult.config import DataConfig
from jaxcult.data.multilingual_lexicon import FRAMES, LABELS, LEXICON
from jaxcult.data.registry import Dataset, DatasetInfo, register_dataset
from jaxcult.errors import UserError

NAME = "jaxcult_multilingual"
LANGUAGES = tuple(LEXICON)
SPLIT_SIZES = {"train": 3000, "validation": 300, "test": 400}
TARGET_SPLIT_SIZES = {"validation": 100, "test": 400}
TWO_TOPIC_SHARE = 0.6  # of every split: sentences naming two topics, one dismissed


def _partition(text: str) -> str:
    bucket = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:4], "big") % 5
    return {0: "test", 1: "validation"}.get(bucket, "train")


def _all_examples(language: str) -> list[dict]:
    prefixes, suffixes, topics = LEXICON[language]
    examples = []
    for label, (templates, fillers) in topics.items():
        for prefix, template, filler, suffix in product(prefixes, templates, fillers, suffixes):
            text = prefix + template.format(x=filler) + suffix
            text = text[0].upper() + text[1:] if text else text
            examples.append({"text": text, "label": LABELS.index(label), "language": language,
                             "kind": "one_topic"})
    return examples


def _clauses(language: str) -> list[tuple[int, str]]:
    """(label, clause) for every template x filler of every topic, without frame words."""
    _, _, topics = LEXICON[language]
    return [(LABELS.index(label), template.format(x=filler))
            for label, (templates, fillers) in topics.items()
            for template, filler in product(templates, fillers)]


def _two_topic_examples(language: str) -> list[dict]:
    """Sentences naming two topics, one of them dismissed: the label is the other one."""
    clauses = _clauses(language)
    examples = []
    for (label, main), (other, aside) in product(clauses, clauses):
        if label == other:
            continue
        for frame in FRAMES[language]:
            text = frame.format(main=main, aside=aside)
            examples.append({"text": text[0].upper() + text[1:], "label": label,
                             "language": language, "kind": "two_topic"})
    return examples


def splits_of(language: str) -> tuple[str, ...]:
    return ("train", "validation", "test") if language == "en" else ("validation", "test")


def generate(language: str, split: str, seed: int = 0) -> list[dict]:
    """Examples `{"text", "label", "language"}` of one language and split, deterministically."""
    if language not in LEXICON:
        raise UserError(f"{NAME}: unknown language code {language!r} "
                        f"(available: {', '.join(LANGUAGES)})")
    if split not in splits_of(language):
        raise UserError(f"{NAME}: language {language!r} has no split {split!r} "
                        f"(available: {', '.join(splits_of(language))})")
    return _sample(language, split, (SPLIT_SIZES if language == "en" else TARGET_SPLIT_SIZES)[split],
                   f"{NAME}/{language}/{split}/{seed}")


def _sample(language: str, split: str, size: int, seed: str) -> list[dict]:
    rng = random.Random(seed)
    single = [e for e in _all_examples(language) if _partition(e["text"]) == split]
    double = [e for e in _two_topic_examples(language) if _partition(e["text"]) == split]
    doubles = round(size * TWO_TOPIC_SHARE)
    chosen = rng.sample(single, min(size - doubles, len(single))) + rng.sample(double, doubles)
    rng.shuffle(chosen)
    return chosen


@register_dataset(NAME, default=True)
class BuiltinMultilingual(Dataset):
    """The built-in topic dataset: `text_label` records, generated (no files)."""

    def info(self, config: DataConfig) -> DatasetInfo:
        return DatasetInfo("text_label", LANGUAGES, LABELS)

    def read(self, config: DataConfig, language: str, split: str) -> list[dict]:
        return generate(language, split)


TEXT_NAME = "jaxcult_multilingual_text"


@register_dataset(TEXT_NAME)
class BuiltinMultilingualText(Dataset):
    """Unlabelled text of every language of the built-in dataset (`text` records), for masked-LM
    training of language adapters: `train` (up to 3,000 sentences), `validation` (300) and
    `test` (400) of each language come from that language's partitions of the same names, so
    training on `train` never sees a sentence of any language's labelled validation or test
    split."""

    def info(self, config: DataConfig) -> DatasetInfo:
        return DatasetInfo("text", LANGUAGES)

    def read(self, config: DataConfig, language: str, split: str) -> list[dict]:
        if language not in LEXICON:
            raise UserError(f"{TEXT_NAME}: unknown language code {language!r} "
                            f"(available: {', '.join(LANGUAGES)})")
        if split not in SPLIT_SIZES:
            raise UserError(f"{TEXT_NAME}: no split {split!r} (available: "
                            f"{', '.join(SPLIT_SIZES)})")
        sampled = _sample(language, split, SPLIT_SIZES[split], f"{TEXT_NAME}/{language}/{split}")
        return [{"text": e["text"], "language": language} for e in sampled]
