"""Causal-LM examples: plain texts and chat conversations, tokenised into next-token batches.

Each split holds `input_ids`, `attention_mask`, `labels` (the next token of every position) and
`loss_mask` (1 where that next token is trained). For chats only assistant turns are trained;
their token spans are found from the character offsets of the rendered conversation, so any
chat template works. Tokenizers without a template use `<|role|>\\ncontent\\n` turns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxcult.config import DataConfig
from jaxcult.data.batching import Split
from jaxcult.data.registry import Dataset, DatasetInfo, read_checked_jsonl, register_dataset
from jaxcult.errors import UserError

ROLES = ("system", "user", "assistant")
CHAT_NAME = "chat_jsonl"
TEXT_NAME = "text_jsonl"


def _next_token_split(ids: np.ndarray, attention: np.ndarray, trained: np.ndarray,
                      name: str) -> Split:
    labels = np.zeros_like(ids)
    labels[:, :-1] = ids[:, 1:]
    loss_mask = np.zeros_like(ids)
    loss_mask[:, :-1] = trained[:, 1:] * attention[:, 1:]
    if not loss_mask.any():
        raise UserError(f"{name}: no token to train on (every example is empty or masked)")
    return Split({"input_ids": ids.astype(np.int32), "attention_mask": attention.astype(np.int32),
                  "labels": labels.astype(np.int32), "loss_mask": loss_mask.astype(np.int32)}, name)


def tokenize_texts(texts: list[str], tokenizer, max_length: int, name: str) -> Split:
    """Every token after the first is a training target; an EOS ends each text when it fits."""
    if not texts:
        raise UserError(f"{name}: split is empty")
    eos = tokenizer.eos_token or ""
    enc = tokenizer([t + eos for t in texts], truncation=True, max_length=max_length,
                    padding="longest", return_tensors="np")
    ids, attention = enc["input_ids"], enc["attention_mask"]
    return _next_token_split(ids, attention, attention, name)


def render_chat(messages: list[dict], tokenizer, *, generation_prompt: bool = False) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
    return text + ("<|assistant|>\n" if generation_prompt else "")


PROBE = "J4XCULT-ASSISTANT-PROBE"


def end_of_turn(tokenizer) -> str:
    """What the template writes right after an assistant message (`<|im_end|>`, `<|eot_id|>`,
    `</s>`; the newline of the plain format): trained with the message, so the model learns
    to stop."""
    text = render_chat([{"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": PROBE}], tokenizer)
    after = text[text.index(PROBE) + len(PROBE):]
    return after.strip() or after


def _render_trainable(messages: list[dict], tokenizer) -> tuple[list[dict], str]:
    """The conversation as the template renders it, adapted where a template needs it: an
    empty user turn before an opening assistant turn (templates that insist on user first,
    e.g. Mistral's), and system text moved into the first user turn when the template would
    drop it (Mistral v0.3 keeps it only when the last message is the user's)."""
    import jinja2

    try:
        text = render_chat(messages, tokenizer)
    except jinja2.TemplateError as error:
        at = next(i for i, m in enumerate(messages) if m["role"] != "system")
        if messages[at]["role"] != "assistant":
            raise UserError(f"the chat template refuses a conversation: {error}") from None
        messages = [*messages[:at], {"role": "user", "content": ""}, *messages[at:]]
        text = render_chat(messages, tokenizer)
    system = [m for m in messages if m["role"] == "system"]
    if system and any(m["content"].strip() not in text for m in system if m["content"].strip()):
        prefix = "\n\n".join(m["content"] for m in system)
        rest = [m for m in messages if m["role"] != "system"]
        first = next(i for i, m in enumerate(rest) if m["role"] == "user")
        rest[first] = {"role": "user", "content": (prefix + "\n\n" + rest[first]["content"]).strip()}
        messages, text = rest, render_chat(rest, tokenizer)
    return messages, text


def assistant_spans(messages: list[dict], text: str, marker: str) -> list[tuple[int, int]]:
    """Character spans of each assistant message (and the end-of-turn marker after it) in the
    rendered text, found by locating every message's content in order."""
    spans, cursor = [], 0
    for message in messages:
        content = message["content"].strip()
        if not content:
            continue
        at = text.find(content, cursor)
        if at < 0:
            raise UserError(f"the chat template does not write this {message['role']} message "
                            f"verbatim, so its tokens cannot be found: {content[:60]!r}")
        cursor = at + len(content)
        if message["role"] == "assistant":
            rest = text[cursor:]
            gap = len(rest) - len(rest.lstrip())
            end = cursor + gap + len(marker) if marker and rest.lstrip().startswith(marker) \
                else cursor
            spans.append((at, end))
    return spans


def tokenize_chats(records: list[dict], tokenizer, max_length: int, name: str) -> Split:
    """Conversations -> next-token arrays trained on the tokens of every assistant message
    (content and end-of-turn marker) only; any chat template works."""
    if not records:
        raise UserError(f"{name}: split is empty")
    marker = end_of_turn(tokenizer)
    rendered = [_render_trainable(r["messages"], tokenizer) for r in records]
    enc = tokenizer([text for _, text in rendered], truncation=True, max_length=max_length,
                    padding="longest", return_tensors="np", return_offsets_mapping=True,
                    add_special_tokens=False)
    trained = np.zeros_like(enc["input_ids"])
    for row, (messages, text) in enumerate(rendered):
        spans = assistant_spans(messages, text, marker)
        for col, (begin, end) in enumerate(enc["offset_mapping"][row]):
            if end > begin and any(begin < e and end > s for s, e in spans):
                trained[row, col] = 1
    return _next_token_split(enc["input_ids"], enc["attention_mask"], trained, name)


def _check_chat(record, where: str) -> dict:
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: expected a non-empty list field 'messages'")
    for j, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise UserError(f"{where}: message {j}: 'role' must be one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise UserError(f"{where}: message {j}: missing or non-text field 'content'")
    if not any(m["role"] == "assistant" for m in messages):
        raise UserError(f"{where}: no assistant message to train on")
    return record


def read_chat_jsonl(path: Path) -> list[dict]:
    """Records `{"messages": [{"role", "content"}, ...], "language"?: code}`, one per line."""
    return read_checked_jsonl(path, _check_chat)


def _check_text(record, where: str) -> dict:
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise UserError(f"{where}: expected an object with a text field 'text'")
    if not record["text"].strip():
        raise UserError(f"{where}: field 'text' is empty")
    return record


class JsonlFolder(Dataset):
    """`data.manual_dir/{train,validation,test}.jsonl`; evaluation records are grouped by their
    `language` field (default: the source language). With `data.source: stream` the training
    split may be `train.jsonl` or shards `train-*.jsonl` of any size, read line by line."""

    record_format = "text"

    def read_records(self, path: Path) -> list[dict]:
        raise NotImplementedError

    def _path(self, config: DataConfig, split: str) -> Path:
        return self.local_root(config) / f"{split}.jsonl"

    def info(self, config: DataConfig) -> DatasetInfo:
        path = self._path(config, config.eval_split)
        languages = dict.fromkeys(r.get("language", config.source_language)
                                  for r in self.read_records(path))
        return DatasetInfo(self.record_format, tuple(languages))

    def read_train(self, config: DataConfig, language: str, split: str) -> list[dict]:
        return self.read_records(self._path(config, split))

    def check_line(self, record, where: str) -> dict:
        raise NotImplementedError

    def training_lines(self, config: DataConfig):
        """`train.jsonl`, or shards `train-*.jsonl` in name order."""
        single = self._path(config, "train")
        shards = sorted(self.local_root(config).glob("train-*.jsonl"))
        if not single.is_file() and not shards:
            raise UserError(f"{single}: file not found (nor train-*.jsonl shards)")
        return ([single] if single.is_file() else shards), self.check_line

    def read_eval(self, config: DataConfig, language: str, split: str) -> list[dict]:
        path = self._path(config, split)
        records = [r for r in self.read_records(path)
                   if r.get("language", config.source_language) == language]
        if not records:
            raise UserError(f"{path}: no records for language {language!r}")
        return records

    def read_file(self, config: DataConfig, path: Path) -> list[dict]:
        return self.read_records(path)


@register_dataset(CHAT_NAME)
class ChatJSONL(JsonlFolder):
    """Chat records (`read_chat_jsonl`) in `{train,validation,test}.jsonl`; assistant turns train."""

    record_format = "chat"

    def read_records(self, path: Path) -> list[dict]:
        return read_chat_jsonl(path)

    def check_line(self, record, where: str) -> dict:
        return _check_chat(record, where)


@register_dataset(TEXT_NAME)
class TextJSONL(JsonlFolder):
    """Plain-text records `{"text", "language"?}` in `{train,validation,test}.jsonl`; every
    token trains (full-sequence loss)."""

    def read_records(self, path: Path) -> list[dict]:
        return read_checked_jsonl(path, _check_text)

    def check_line(self, record, where: str) -> dict:
        return _check_text(record, where)
