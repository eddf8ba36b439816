"""Preference pairs: a prompt (plain text, or a conversation) with a chosen and a rejected reply.

Records `{"prompt": text | "messages": [{"role", "content"}, ...], "chosen": text, "rejected":
text, "language"?: code}` in `data.manual_dir/{train,validation,test}.jsonl` (dataset
`preference_jsonl`); what `jaxcult pairs` writes. A conversation ends with a user turn; the
replies are the assistant's next turn.
"""

from __future__ import annotations

from pathlib import Path

from jaxcult.data.lm import ROLES, JsonlFolder
from jaxcult.data.registry import read_checked_jsonl, register_dataset
from jaxcult.errors import UserError

NAME = "preference_jsonl"
WHERE = "_where"    # the record's "file:line", kept for errors found while tokenising


def check_prompt(record, where: str) -> dict:
    """A record's prompt part (`prompt` text or a conversation ending with a user turn), or one
    line naming the place and what is wrong."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object")
    if ("prompt" in record) == ("messages" in record):
        raise UserError(f"{where}: give either 'prompt' (text) or 'messages' (a conversation)")
    if "prompt" in record and not (isinstance(record["prompt"], str) and record["prompt"].strip()):
        raise UserError(f"{where}: field 'prompt' must be non-empty text")
    messages = record.get("messages")
    if "messages" in record:
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
                for m in messages):
            raise UserError(f"{where}: 'messages' must be a non-empty list of {{role, content}} "
                            f"with roles {', '.join(ROLES)}")
        if messages[-1]["role"] != "user":
            raise UserError(f"{where}: the conversation must end with a user turn (the replies "
                            f"are the assistant's next one)")
    return record


def check_pair(record, where: str) -> dict:
    """A preference record, or one line naming the place and what is wrong."""
    check_prompt(record, where)
    for field in ("chosen", "rejected"):
        if not isinstance(record.get(field), str) or not record[field].strip():
            raise UserError(f"{where}: missing or empty field {field!r}")
    if record["chosen"].strip() == record["rejected"].strip():
        raise UserError(f"{where}: 'chosen' and 'rejected' are the same reply")
    return {**record, WHERE: where}


@register_dataset(NAME)
class PreferenceJSONL(JsonlFolder):
    """Preference pairs (`check_pair`) in `{train,validation,test}.jsonl`."""

    record_format = "preference"

    def read_records(self, path: Path) -> list[dict]:
        return read_checked_jsonl(path, check_pair)

    def check_line(self, record, where: str) -> dict:
        return check_pair(record, where)
