"""Log-probability judges: one forward per (prompt, reply), read at the answer's first token.

The judge sees its template filled with the prompt and the reply, as a user turn of its chat
template, and the start of its answer (`answer_prefix`); the probabilities of the option tokens
there make the judgement. A reply that is empty, could not be generated, or makes the judge
prompt longer than its largest length bucket, and a judgement whose options got less than
`min_option_mass` of the probability, are unscorable: kept in the output with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from jaxcult.errors import UserError
from jaxcult.generation.prompts import render_chat
from jaxcult.generation.scoring import option_logprobs, single_token_options
from jaxcult.recipes.pairs.config import JudgeConfig
from jaxcult.serving.protocol import MAX_TOP_LOGPROBS


@dataclass(frozen=True)
class Judgement:
    score: float | None            # None: unscorable
    option_mass: float             # the judge's probability on its answer options
    unscorable: str | None = None  # why
    probabilities: tuple[float, ...] = ()   # of each option, in order (empty: not judged)

    def as_dict(self) -> dict:
        return asdict(self)


def read_options(settings: JudgeConfig, logps: np.ndarray) -> Judgement:
    """The judgement the options' log-probabilities make (-inf: an option of probability 0)."""
    probabilities = np.exp(logps)
    mass = float(probabilities.sum())
    each = tuple(float(p) for p in probabilities)
    if mass < settings.min_option_mass:
        return Judgement(None, mass, f"the options got {mass:.3f} of the judge's probability, "
                                     f"below judge.min_option_mass", each)
    if settings.kind == "digits":
        ratings = np.arange(1, len(logps) + 1)
        return Judgement(float((ratings * probabilities).sum() / mass), mass, None, each)
    if not np.isfinite(logps).all():
        return Judgement(None, mass, "an option got no probability (outside the judge's top "
                                     "log-probabilities)", each)
    return Judgement(float(logps[0] - logps[1]), mass, None, each)


def judge_text(settings: JudgeConfig, record: dict, reply: str) -> str:
    """The judge's user turn for one reply."""
    return settings.template.format(prompt=conversation_text(record), reply=reply,
                                    question=settings.question())


def conversation_text(record: dict) -> str:
    """What the judge reads as the message: the prompt, or the conversation's turns."""
    if "messages" not in record:
        return record["prompt"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in record["messages"])


class LogProbJudge:
    """A jaxcult causal LM answering `settings`' question with one option token."""

    def __init__(self, settings: JudgeConfig, model, tokenizer) -> None:
        self.settings, self.model, self.tokenizer = settings, model, tokenizer
        self.options = settings.options()
        probe = self.prompt({"prompt": "x"}, "y")
        if single_token_options(tokenizer, probe, self.options) is None:
            raise UserError(f"judge: the options {self.options} are not each one token after "
                            f"judge.answer_prefix {settings.answer_prefix!r} for this tokenizer; "
                            f"change judge.answer_prefix (e.g. end it without a space) or the "
                            f"options")

    def prompt(self, record: dict, reply: str) -> str:
        text = judge_text(self.settings, record, reply)
        chat = [{"role": "user", "content": text}]
        rendered = (render_chat(chat, self.tokenizer) if getattr(self.tokenizer, "chat_template",
                                                                 None) else text + "\n")
        return rendered + self.settings.answer_prefix

    def judge(self, items: Sequence[tuple[dict, str, str | None]]) -> list[Judgement]:
        """One judgement per (record, reply, generation error or None), in order."""
        buckets = self.settings.generation.length_buckets
        results: dict[int, Judgement] = {}
        runnable, prompts = [], []
        for index, (record, reply, error) in enumerate(items):
            if error is not None or not reply.strip():
                results[index] = Judgement(None, 0.0, error or "empty reply")
                continue
            prompt = self.prompt(record, reply)
            length = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            if length > max(buckets):
                results[index] = Judgement(None, 0.0, f"judge prompt has {length} tokens, more "
                                           f"than judge.generation.length_buckets' {max(buckets)}")
                continue
            runnable.append(index)
            prompts.append(prompt)
        if prompts:
            logps = option_logprobs(self.model, self.tokenizer, prompts,
                                    [self.options] * len(prompts), self.settings.generation)
            for index, values in zip(runnable, logps):
                results[index] = self._read(np.asarray(values, np.float64))
        return [results[i] for i in range(len(items))]

    def _read(self, logps: np.ndarray) -> Judgement:
        return read_options(self.settings, logps)


class RemoteLogProbJudge:
    """The same judgement from a model behind an OpenAI-compatible server: the judge's turn and
    `answer_prefix` (continued with `continue_final_message`), one new token with its top
    log-probabilities. An option's log-probability is that of the top tokens whose text is the
    option (spaces around it ignored; several such tokens add up); an option outside the top
    tokens counts as probability 0, so the option mass is a lower bound. A server that returns
    no log-probabilities is an error."""

    def __init__(self, settings: JudgeConfig, model) -> None:
        self.settings, self.model = settings, model   # model: a jaxcult.remote RemoteChatModel
        self.options = settings.options()

    def body(self, record: dict, reply: str) -> dict:
        return {"model": self.model.settings.model, "max_tokens": 1, "temperature": 0.0,
                "logprobs": True, "top_logprobs": MAX_TOP_LOGPROBS,
                "messages": [{"role": "user", "content": judge_text(self.settings, record, reply)},
                             {"role": "assistant", "content": self.settings.answer_prefix}],
                "continue_final_message": True, "add_generation_prompt": False}

    def judge(self, items: Sequence[tuple[dict, str, str | None]]) -> list[Judgement]:
        """One judgement per (record, reply, generation error or None), in order."""
        asked = [i for i, (_, reply, error) in enumerate(items) if error is None and reply.strip()]
        answers = dict(zip(asked, self.model.answers([self.body(*items[i][:2]) for i in asked])))
        results = []
        for index, (_, _, error) in enumerate(items):
            answer = answers.get(index)
            if answer is None:
                results.append(Judgement(None, 0.0, error or "empty reply"))
            elif isinstance(answer, str):
                results.append(Judgement(None, 0.0, answer))
            else:
                results.append(read_options(self.settings, self._option_logprobs(answer)))
        return results

    def _option_logprobs(self, answer: dict) -> np.ndarray:
        try:
            top = answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise UserError(f"{self.model.settings.endpoint}: model {self.model.name} returned no "
                            f"logprobs; the pairs judge needs a server that returns top_logprobs "
                            f"(vLLM, SGLang, jaxcult serve)") from None
        found = np.full(len(self.options), -np.inf)
        for entry in top:
            text = str(entry.get("token", "")).strip()
            if text in self.options:
                at = self.options.index(text)
                found[at] = np.logaddexp(found[at], float(entry["logprob"]))
        return found
