"""Preference optimisation of a causal LM: DPO (with cDPO's label smoothing), IPO, ORPO, SimPO.

A batch holds each pair's two sequences, prompt + chosen reply and prompt + rejected reply, as
[batch, 2, length] arrays; the log-probability of a reply is the sum over its tokens (the
prompt never counts). DPO and IPO compare the policy with a reference: with adapters (LoRA or
bottleneck) the reference is the same model with its adapters switched off, in the same
program (`reference: adapters_off`, no second copy of the weights); `reference: precomputed`
scores every pair once with the model as built, before training (what memory-bound devices and
full fine-tuning need), and reads them from the batch. ORPO and SimPO use no reference.

The objectives are transformers-TRL's (DPOTrainer's `sigmoid` and `ipo` — IPO on log-ratios
averaged over each reply's tokens —, ORPOTrainer's odds-ratio loss plus the chosen sequence's
token-mean NLL, CPOTrainer's `simpo`), and so are the logged names: `rewards/chosen`,
`rewards/rejected`, `rewards/margins`, `rewards/accuracies` (also logged as `accuracy`),
`logps/chosen`, `logps/rejected`.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from pydantic import Field, model_validator

from jaxcult.config import TaskConfig
from jaxcult.data.batching import Split, pad_token_id
from jaxcult.data.lm import render_chat
from jaxcult.data.preference import WHERE
from jaxcult.errors import UserError
from jaxcult.peft.switch import adapters_off
from jaxcult.tasks.base import ModelInputs, Task, register_task

REFERENCE = "reference_logps"   # precomputed reference log-probs, [pairs, 2]


class PreferenceSettings(TaskConfig):
    objective: Literal["dpo", "ipo", "orpo", "simpo"] = "dpo"
    beta: float = Field(0.1, gt=0, description="DPO/IPO/SimPO temperature; ORPO's lambda")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="cDPO / SimPO: the share of "
                                   "pairs assumed flipped")
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO's target reward margin")
    reference: Literal["adapters_off", "precomputed"] = Field(
        "adapters_off", description="DPO/IPO's reference: the model with its adapters off, in "
        "the same program; or scored once before training by the model as built")

    @model_validator(mode="after")
    def _fields_of_objective(self) -> PreferenceSettings:
        uses_reference = self.objective in ("dpo", "ipo")
        self.refuse_unused("task", ("reference",), uses_reference, "to task.objective=dpo or ipo")
        self.refuse_unused("task", ("label_smoothing",), self.objective in ("dpo", "simpo"),
                           "to task.objective=dpo or simpo")
        self.refuse_unused("task", ("simpo_gamma",), self.objective == "simpo",
                           "to task.objective=simpo")
        return self


def _encode(tokenizer, text: str, specials: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=specials)["input_ids"]


def pair_tokens(record: dict, tokenizer) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, chosen reply ids, rejected reply ids): a conversation's reply is what the
    chat template writes after the prompt's generation cue (end-of-turn marker included); a
    plain reply ends with EOS."""
    if "messages" in record:
        prompt = render_chat(record["messages"], tokenizer, generation_prompt=True)

        def reply(text: str) -> str:
            full = render_chat([*record["messages"], {"role": "assistant", "content": text}],
                               tokenizer)
            return full[len(prompt):] if full.startswith(prompt) else text
        ids = _encode(tokenizer, prompt, False)
        return ids, *(_encode(tokenizer, reply(record[k]), False) for k in ("chosen", "rejected"))
    eos = tokenizer.eos_token or ""
    return (_encode(tokenizer, record["prompt"], True),
            *(_encode(tokenizer, record[k] + eos, False) for k in ("chosen", "rejected")))


def tokenize_pairs(records: list[dict], tokenizer, max_length: int, name: str) -> Split:
    """[pairs, 2, length] ids, attention mask, next-token labels and the mask of the positions
    whose next token is a reply token; a reply longer than the room after its prompt is cut."""
    if not records:
        raise UserError(f"{name}: split is empty")
    rows = []
    for index, record in enumerate(records):
        prompt, *replies = pair_tokens(record, tokenizer)
        room = max_length - len(prompt)
        if room < 1 or not all(replies):
            where = record.get(WHERE, f"{name}: pair {index}")
            raise UserError(f"{where}: "
                            + (f"the prompt fills model.max_length ({len(prompt)} of "
                               f"{max_length} tokens), leaving no room for the replies"
                               if room < 1 else "a reply is empty after templating"))
        rows.append([(prompt, reply[:room]) for reply in replies])
    width = max(len(p) + len(r) for pair in rows for p, r in pair)
    pad = pad_token_id(tokenizer)
    ids = np.full((len(rows), 2, width), pad, np.int32)
    attention, reply_mask = np.zeros_like(ids), np.zeros_like(ids)
    for i, pair in enumerate(rows):
        for j, (prompt, reply) in enumerate(pair):
            ids[i, j, :len(prompt) + len(reply)] = prompt + reply
            attention[i, j, :len(prompt) + len(reply)] = 1
            reply_mask[i, j, len(prompt):len(prompt) + len(reply)] = 1
    labels = np.zeros_like(ids)
    labels[..., :-1] = ids[..., 1:]
    loss_mask = np.zeros_like(ids)
    loss_mask[..., :-1] = reply_mask[..., 1:]
    return Split({"input_ids": ids, "attention_mask": attention, "labels": labels,
                  "loss_mask": loss_mask}, name)


def log1mexp(x: jax.Array) -> jax.Array:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2."""
    return jnp.where(x < -0.6931471805599453, jnp.log1p(-jnp.exp(x)), jnp.log(-jnp.expm1(x)))


def smoothed_sigmoid_loss(delta: jax.Array, flipped: float) -> jax.Array:
    """-log sigma(delta), with a share `flipped` of the pairs assumed mislabelled (cDPO)."""
    return -(1 - flipped) * jax.nn.log_sigmoid(delta) - flipped * jax.nn.log_sigmoid(-delta)


@register_task("preference")
class Preference(Task):
    """Pairs (`preference` records) -> a policy that prefers the chosen replies."""

    Settings = PreferenceSettings
    record_formats = ("preference",)
    batch_keys = ("input_ids", "attention_mask", "labels", "loss_mask")
    backbone = "decoder"
    evaluator = "preference"
    uses_labels = False
    adds_head = False
    has_fisher = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.precomputed:
            self.batch_keys = (*self.batch_keys, REFERENCE)

    @property
    def precomputed(self) -> bool:
        return self.settings.objective in ("dpo", "ipo") and self.settings.reference == "precomputed"

    @property
    def needs_reference(self) -> bool:
        return self.settings.objective in ("dpo", "ipo")

    def tokenize(self, records, tokenizer, max_length, name) -> Split:
        return tokenize_pairs(records, tokenizer, max_length, name)

    def build_model(self, backbone: nnx.Module, inputs: ModelInputs) -> nnx.Module:
        return backbone

    def plan_batch(self, rows: int, length: int) -> dict[str, jax.ShapeDtypeStruct]:
        """`rows` pairs: chosen and rejected sequences, with their reference log-probs."""
        sequences = jax.ShapeDtypeStruct((rows, 2, length), jnp.int32)
        return {key: jax.ShapeDtypeStruct((rows, 2), jnp.float32) if key == REFERENCE else sequences
                for key in self.batch_keys}

    def _scores(self, model, batch: dict, dropout_key) -> dict[str, jax.Array]:
        """Per sequence [pairs, 2]: reply log-prob sum and token count; the NLL sum and token
        count of each whole sequence (ORPO's NLL term)."""
        pairs, _, length = batch["input_ids"].shape
        flat = {k: batch[k].reshape(2 * pairs, length) for k in self.batch_keys if k != REFERENCE}
        logits = model(flat["input_ids"], flat["attention_mask"],
                       dropout_key=dropout_key).logits.astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, flat["labels"])
        reply = flat["loss_mask"].astype(jnp.float32)
        whole = jnp.zeros_like(reply).at[:, :-1].set(flat["attention_mask"][:, 1:])
        shaped = lambda x: x.reshape(pairs, 2)  # noqa: E731
        return {"logps": shaped(-(nll * reply).sum(-1)), "tokens": shaped(reply.sum(-1)),
                "nll": shaped((nll * whole).sum(-1)), "all_tokens": shaped(whole.sum(-1))}

    def forward(self, model, batch: dict, dropout_key: jax.Array | None) -> dict[str, jax.Array]:
        outputs = self._scores(model, batch, dropout_key)
        if self.precomputed:
            outputs["reference"] = batch[REFERENCE].astype(jnp.float32)
        elif self.needs_reference:
            with adapters_off(model):
                outputs["reference"] = jax.lax.stop_gradient(self._scores(model, batch, None)["logps"])
        return outputs

    def reported_logps(self, outputs: dict) -> jax.Array:
        """The log-probs the objective compares, as TRL logs them: sums over the reply for
        DPO/IPO, means per reply token for ORPO/SimPO."""
        if self.needs_reference:
            return outputs["logps"]
        return outputs["logps"] / jnp.maximum(outputs["tokens"], 1.0)

    def pair_losses(self, outputs: dict) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(each pair's loss, each pair's chosen and rejected reward) under the objective."""
        settings = self.settings
        logps, tokens = outputs["logps"], jnp.maximum(outputs["tokens"], 1.0)
        if settings.objective in ("dpo", "ipo"):
            ratios = logps - outputs["reference"]
            rewards = settings.beta * ratios
            if settings.objective == "dpo":
                delta = settings.beta * (ratios[:, 0] - ratios[:, 1])
                loss = smoothed_sigmoid_loss(delta, settings.label_smoothing)
            else:
                averaged = ratios / tokens
                loss = (averaged[:, 0] - averaged[:, 1] - 1 / (2 * settings.beta)) ** 2
            return loss, rewards
        mean = logps / tokens
        rewards = settings.beta * mean
        if settings.objective == "simpo":
            delta = settings.beta * (mean[:, 0] - mean[:, 1]) - settings.simpo_gamma
            return smoothed_sigmoid_loss(delta, settings.label_smoothing), rewards
        log_odds = (mean[:, 0] - mean[:, 1]) - (log1mexp(mean[:, 0]) - log1mexp(mean[:, 1]))
        nll = outputs["nll"][:, 0] / jnp.maximum(outputs["all_tokens"][:, 0], 1.0)
        return nll - settings.beta * jax.nn.log_sigmoid(log_odds), rewards

    def loss(self, outputs: dict, batch: dict) -> tuple[jax.Array, dict[str, jax.Array]]:
        losses, rewards = self.pair_losses(outputs)
        loss = losses.mean()
        if self.settings.objective == "orpo":  # TRL: the NLL is one token mean over the batch
            nll, count = outputs["nll"][:, 0], jnp.maximum(outputs["all_tokens"][:, 0], 1.0)
            loss = nll.sum() / count.sum() + (losses - nll / count).mean()
        accuracy = (rewards[:, 0] > rewards[:, 1]).mean()
        logps = self.reported_logps(outputs)
        return loss, {"accuracy": accuracy, "rewards/chosen": rewards[:, 0].mean(),
                      "rewards/rejected": rewards[:, 1].mean(),
                      "rewards/margins": (rewards[:, 0] - rewards[:, 1]).mean(),
                      "rewards/accuracies": accuracy, "logps/chosen": logps[:, 0].mean(),
                      "logps/rejected": logps[:, 1].mean()}

    def evaluation_outputs(self, model, batch: dict) -> dict[str, jax.Array]:
        outputs = self.forward(model, batch, None)
        losses, rewards = self.pair_losses(outputs)
        return {"loss": losses, "rewards": rewards, "logps": self.reported_logps(outputs)}

    def log_probs(self, outputs, batch):
        raise NotImplementedError("preference pairs define no Fisher output distribution")

    @classmethod
    def check_run(cls, config) -> None:
        """The adapter-off reference is the base model only when every trained weight is an
        adapter's; a precomputed one is one model's, shared by vectorized seeds."""
        settings, peft = config.task, config.peft
        if settings.objective not in ("dpo", "ipo"):
            return
        if settings.reference == "precomputed":
            if config.trainer.seeds and config.model.name == "random":
                raise ValueError("trainer.seeds: with model.name=random every seed has its own "
                                 "backbone, but task.reference=precomputed scores the pairs with "
                                 "one; train the seeds as separate runs")
            return
        fix = "; set task.reference=precomputed (scored once by the model as built)"
        if peft.kind not in ("lora", "pfeiffer", "houlsby", "parallel"):
            raise ValueError(f"peft.kind: {peft.kind} trains no adapter, so there is none to "
                             f"switch off for the reference (task.reference=adapters_off){fix}")
        if peft.modules_to_save:
            raise ValueError(f"peft.modules_to_save: {list(peft.modules_to_save)} train outside "
                             f"the adapters, so switching them off does not give the base "
                             f"model (task.reference=adapters_off){fix}")

    def with_model(self, model: nnx.Module, splits: list[Split], batch_size: int) -> None:
        """`reference: precomputed`: every pair of every split scored by the model as built
        (before any training), kept as the splits' `reference_logps` column."""
        if not self.precomputed:
            return
        from jaxcult.data.batching import eval_batches

        graphdef, state = nnx.split(model)
        score = jax.jit(lambda state, batch: self._scores(nnx.merge(graphdef, state), batch,
                                                          None)["logps"])
        for split in splits:
            if not isinstance(split, Split):
                raise UserError("task.reference=precomputed: the training split is read batch by "
                                "batch (data.source tfds/stream); use data.source=files")
            logps = np.zeros((len(split), 2), np.float32)  # (chosen, rejected) per pair
            for batch, valid, examples in eval_batches(split, batch_size):
                logps[examples] = np.asarray(score(state, {k: jnp.asarray(v) for k, v in
                                                           batch.items() if k != REFERENCE}))[valid]
            split.arrays[REFERENCE] = logps
