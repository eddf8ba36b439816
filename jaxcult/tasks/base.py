"""What a task family tells the rest of jaxcult, and the registry of families.

A family knows: its own settings (`Settings`, a subclass of `TaskConfig` whose fields are keys
of the `task` section), which dataset record formats it reads and how to tokenise them into
batch arrays (`tokenize`, `batch_keys`), which backbone kind it needs and the head it puts on
it (`build_model`), how to run the model on a batch, its loss, its Fisher output distribution
(`log_probs`), its default evaluator, and which export formats hold its head (`head_formats`,
`export_head`). The trainer's jitted steps are written once against this interface; a new
family is a subclass plus `@register_task("name")` (or, unregistered, `task.name:
mypkg.module:MyTask` in a config).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxcult.config import TaskConfig, settings_as
from jaxcult.data.batching import Split
from jaxcult.hub.export import ExportedHead
from jaxcult.registry import Registry, subclasses_of


@dataclass(frozen=True)
class Loaders:
    """Pretrained parts a family may need besides the backbone, loaded by the builder on
    request (a task never opens weight files itself): `image_backbone(name)` is an image
    model whose call maps preprocessed pixels to a feature map (VQA on raw images)."""

    image_backbone: Callable[[str], nnx.Module] | None = None


@dataclass(frozen=True)
class ModelInputs:
    """What the builder hands `build_model` besides the backbone: the run's seed, where the
    backbone came from (for messages), and the checkpoint's tensors the backbone did not take,
    by their checkpoint names (a pretrained head, e.g. BERT's `cls.predictions.*`; empty for
    random models and headless sources)."""

    seed: int = 0
    source: str = "random"
    tensors: Mapping[str, np.ndarray] = field(default_factory=dict)


class Task:
    """Base class of task families (override everything marked below)."""

    name = "task"
    record_formats: tuple[str, ...] = ()  # dataset record formats `tokenize` reads
    batch_keys: tuple[str, ...] = ()      # the arrays a training batch holds
    sequence_keys: tuple[str, ...] | None = None  # arrays aligned with the tokens (cut by
    #   length buckets); None: those shaped like the attention mask
    prediction_keys: tuple[str, ...] = ()  # arrays aligned with predicted positions rather
    #   than tokens (padded with 0 to one width across evaluation splits)
    streamable = True                     # tokenising a batch of records gives their rows
    #   as tokenising the whole split would (data.source=tfds tokenises batch by batch)
    backbone = "encoder"                  # architecture kind it needs: "encoder" or "decoder"
    evaluator = "accuracy"                # default evaluator (registry name or import path)
    uses_labels = True                    # whether the dataset's label names size the head
    adds_head = True                      # `build_model` puts a head on the backbone
    has_fisher = True                     # `log_probs` defines a Fisher output distribution
    exported_adapters = "task"            # what its bottleneck adapters are in AdapterHub's
    #   terms: `task` adapters, or a MAD-X `language` adapter (with its invertible adapter)
    Settings: type[TaskConfig] = TaskConfig  # its own settings (a subclass adds fields)

    def __init__(self, settings: TaskConfig, labels: tuple[str, ...] = (),
                 loaders: Loaders = Loaders()) -> None:
        self.settings = settings_as(settings, self.Settings, "task")
        self.labels = labels
        self.num_labels = self.settings.num_labels or len(labels)
        self.loaders = loaders

    def tokenize(self, records: list[dict], tokenizer: Any, max_length: int, name: str) -> Split:
        """Records of one split -> a `Split` holding (at least) `batch_keys`."""
        raise NotImplementedError

    def logit_positions(self, tokens: int) -> int:
        """Of `tokens` input tokens, how many get logits over the vocabulary (a plan counts
        their memory): every one for a causal LM, none for a pooled or span head."""
        return tokens if self.backbone == "decoder" else 0

    def plan_batch(self, rows: int, length: int) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes of a training batch of `rows` examples of `length` tokens, which a plan
        (`jaxcult plan`) compiles the step for without data: by default every key is
        token-shaped and `labels` one per example. A family whose batch differs overrides it."""
        tokens = jax.ShapeDtypeStruct((rows, length), jnp.int32)
        one = jax.ShapeDtypeStruct((rows,), jnp.int32)
        return {key: one if key == "labels" else tokens for key in self.batch_keys}

    def build_model(self, backbone: nnx.Module, inputs: ModelInputs) -> nnx.Module:
        """The trained model: the backbone with this family's head (its parameters under
        `head`), or the backbone itself when the family adds none."""
        raise NotImplementedError

    @classmethod
    def check_run(cls, config) -> None:
        """Refuse (ValueError, one line naming the keys) a run config this family cannot train
        with; checked when the config loads."""

    def with_model(self, model: nnx.Module, splits: list[Split], batch_size: int) -> None:
        """Called once the model is built, before training: a family that needs the initial
        model's outputs per example computes them here (preference: reference log-probs)."""

    def head_formats(self) -> tuple[str, ...]:
        """Export formats (`jaxcult export --format`) that hold this task's head as configured;
        a format that cannot hold it is refused before anything is written (`--no-head`
        writes the head beside the adapters in jaxcult's own format instead)."""
        return ()

    def export_head(self, model: nnx.Module, fmt: str, name: str) -> ExportedHead:
        """The head of the trained `model` in `fmt` (one of `head_formats()`); `name` is the
        adapter's name inside the files."""
        raise NotImplementedError(f"{type(self).__name__} lists {fmt!r} in head_formats but "
                                  f"does not implement export_head")

    def forward(self, model: nnx.Module, batch: dict, dropout_key: jax.Array | None) -> jax.Array:
        """The model's raw outputs for a batch (logits)."""
        raise NotImplementedError

    def evaluation_outputs(self, model: nnx.Module, batch: dict) -> Any:
        """What evaluation reduces: by default the forward outputs without dropout (a family
        may add views of the same batch, e.g. VQA's blind and shuffled-image probes)."""
        return self.forward(model, batch, None)

    def loss(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array | dict]:
        """(mean training loss, a training metric in [0, 1] logged as `accuracy`), or (loss,
        {"accuracy": ..., more scalars}) to log more of the step's own numbers."""
        raise NotImplementedError

    def log_probs(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array | None]:
        """Fisher output distribution: log-probs [batch, *positions, classes] and weights."""
        raise NotImplementedError


TASKS: Registry[type[Task]] = Registry("task family", check=subclasses_of(Task))


def register_task(name: str, *, default: bool = False):
    """Class decorator: register a `Task` subclass under `name` (sets its `name`)."""
    return TASKS.named_class(name, default=default)


def resolve_task(settings: TaskConfig, labels: tuple[str, ...] = (),
                 loaders: Loaders = Loaders()) -> Task:
    """The task family of `task.name` (a registered name or `pkg.mod:Class`), for a dataset
    whose records are labelled with `labels`."""
    cls = TASKS.get(settings.name, "task.name")
    task = cls(settings, labels, loaders)
    if settings.name is not None and ":" in settings.name:
        task.name = settings.name
    return task


def encoder_forward(model, batch: dict, dropout_key: jax.Array | None) -> jax.Array:
    """Run an encoder-based task model on token ids, mask and segment ids."""
    return model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                 dropout_key=dropout_key)


def categorical(outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(float32 logits, mean cross-entropy at `batch["labels"]`) over the last axis."""
    logits = outputs.astype(jnp.float32)
    return logits, optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()


def categorical_log_probs(outputs: jax.Array, batch: dict) -> tuple[jax.Array, None]:
    """Fisher output distribution of categorical outputs (every position weighs 1)."""
    return jax.nn.log_softmax(outputs.astype(jnp.float32), -1), None


def token_loss(outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(mean cross-entropy, accuracy) of per-position logits at `labels`, over the positions
    `loss_mask` selects (language modelling: causal and masked)."""
    logits = outputs.astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
    hits = logits.argmax(-1) == batch["labels"]
    mask = batch["loss_mask"].astype(jnp.float32)
    tokens = jnp.maximum(mask.sum(), 1.0)
    return (nll * mask).sum() / tokens, (hits * mask).sum() / tokens


def token_log_probs(outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Fisher output distribution of language modelling: each trained position's vocabulary."""
    return jax.nn.log_softmax(outputs.astype(jnp.float32), -1), batch["loss_mask"]
