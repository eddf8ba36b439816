"""A single-stream vision-language encoder (UC2 / M3P shape) and its VQA answer heads.

Text tokens are embedded by the pretrained multilingual encoder as usual; each visual token is
Linear(feature) + Linear(box location) + a visual type embedding, layer-normalised; the visual
tokens are appended after the text and the encoder's layers run over both. With no visual
tokens the model is exactly the text encoder. Everything new (visual embeddings, answer head)
lives under `head`, so it is the `head` group of every schedule and PEFT setting.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcult.models.encoder import Encoder, EncoderLayer, EncoderOutput
from jaxcult.models.gelu import gelu
from jaxcult.models.layers import Dense, KeySplitter, LayerNorm, dropout, padding_bias, param

HEADS = ("iglue", "sequence")
TYPE_SOURCES = ("gold", "predicted")


class VisualEmbeddings(nnx.Module):
    """Visual tokens [batch, regions, hidden] from features [.., dim] and locations [.., 5|7]."""

    def __init__(self, feature_dim: int, location_dim: int, hidden: int, *, eps: float,
                 dropout_rate: float, rngs: nnx.Rngs) -> None:
        self.feature = Dense(feature_dim, hidden, axes=(None, "embed"), rngs=rngs)
        self.location = Dense(location_dim, hidden, axes=(None, "embed"), rngs=rngs)
        self.type_embedding = param(rngs, jax.nn.initializers.normal(0.02), (hidden,),
                                    jnp.float32, ("embed",))
        self.layer_norm = LayerNorm(hidden, eps=eps, rngs=rngs)
        self.dropout_rate = dropout_rate

    def summed(self, features: jax.Array, locations: jax.Array) -> jax.Array:
        """Linear(feature) + Linear(location) + type embedding, before the LayerNorm."""
        return self.feature(features) + self.location(locations) + self.type_embedding[...]

    def __call__(self, features: jax.Array, locations: jax.Array,
                 key: jax.Array | None = None) -> jax.Array:
        return dropout(self.layer_norm(self.summed(features, locations)), self.dropout_rate, key)


class AnswerClassifier(nnx.Module):
    """IGLUE's VQA classifier: Linear(h, 2h) -> GELU -> LayerNorm -> Linear(2h, answers)."""

    def __init__(self, hidden: int, answers: int, *, rngs: nnx.Rngs) -> None:
        self.dense = Dense(hidden, 2 * hidden, axes=("embed", None), rngs=rngs)
        self.layer_norm = LayerNorm(2 * hidden, eps=1e-12, rngs=rngs)
        self.out = Dense(2 * hidden, answers, axes=(None, "classes"), rngs=rngs)

    def __call__(self, pooled: jax.Array) -> jax.Array:
        return self.out(self.layer_norm(gelu(self.dense(pooled))))


class TypeConditioning(nnx.Module):
    """A learned question-type token, joined to the sequence after the text.

    `gold`: the type comes from the data (oracle information). `predicted`: an auxiliary
    predictor (Linear -> GELU -> Linear over the mean of the question's token embeddings, which
    it reads without back-propagating into them) chooses it, trained on the source language's
    gold types by the task's auxiliary loss; no gold type ever enters the model's input.
    """

    def __init__(self, types: int, hidden: int, source: str, *, rngs: nnx.Rngs) -> None:
        if source not in TYPE_SOURCES:
            raise ValueError(f"type source must be one of {', '.join(TYPE_SOURCES)}, found {source!r}")
        self.embedding = param(rngs, jax.nn.initializers.normal(0.02), (types, hidden),
                               jnp.float32, (None, "embed"))
        self.source = source
        if source == "predicted":
            self.hidden = Dense(hidden, hidden, axes=("embed", None), rngs=rngs)
            self.out = Dense(hidden, types, axes=(None, None), rngs=rngs)

    def predict(self, text: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Type logits [batch, types] from the embedded question [batch, len, hidden]."""
        weights = attention_mask.astype(jnp.float32)[..., None]
        mean = (jax.lax.stop_gradient(text).astype(jnp.float32) * weights).sum(1) / jnp.maximum(
            weights.sum(1), 1.0)
        return self.out(gelu(self.hidden(mean)))

    def __call__(self, text: jax.Array, attention_mask: jax.Array, type_ids: jax.Array | None
                 ) -> tuple[jax.Array, jax.Array | None]:
        """(the type token [batch, 1, hidden], the predictor's logits or None)."""
        logits = self.predict(text, attention_mask) if self.source == "predicted" else None
        if logits is not None:
            type_ids = logits.argmax(-1)
        if type_ids is None:
            raise ValueError("gold type conditioning needs type_ids")
        return self.embedding[...][type_ids][:, None].astype(text.dtype), logits


class VqaHead(nnx.Module):
    """The trained-from-scratch parts: visual embeddings and the answer head.

    `iglue`: the encoder's pooled first token (its pooler when the checkpoint has one) ->
    dropout -> classifier. `sequence`: one more Transformer layer over the whole multimodal
    output, then its first token -> classifier (the richer-architecture option).
    """

    def __init__(self, encoder: Encoder, answers: int, *, feature_dim: int, location_dim: int,
                 kind: str, dropout_rate: float, seed: int, types: int = 0,
                 type_source: str = "gold") -> None:
        if kind not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, found {kind!r}")
        rngs = nnx.Rngs(seed)
        config = encoder.config
        self.visual = VisualEmbeddings(feature_dim, location_dim, config.hidden_size,
                                       eps=config.layer_norm_eps,
                                       dropout_rate=config.hidden_dropout_prob, rngs=rngs)
        layer_config = dataclasses.replace(config, dtype="float32", param_dtype="float32")
        self.sequence = EncoderLayer(layer_config, rngs=rngs) if kind == "sequence" else None
        self.classifier = AnswerClassifier(config.hidden_size, answers, rngs=rngs)
        self.types = (TypeConditioning(types, config.hidden_size, type_source, rngs=rngs)
                      if types else None)
        self.dropout_rate = dropout_rate

    def __call__(self, out: EncoderOutput, mask: jax.Array, keys: KeySplitter) -> jax.Array:
        if self.sequence is not None:
            pooled = self.sequence(out.last_hidden_state, padding_bias(mask), keys)[:, 0]
        else:
            pooled = out.pooler_output if out.pooler_output is not None else out.last_hidden_state[:, 0]
        return self.classifier(dropout(pooled, self.dropout_rate, keys.next()))


class VisionLanguageModel(nnx.Module):
    """Answer logits [batch, answers] from a question and its image's visual tokens (and, with
    `types`, a question-type token: `type_source` gold or predicted)."""

    def __init__(self, encoder: Encoder, answers: int, *, feature_dim: int, location_dim: int = 5,
                 head: str = "iglue", dropout_rate: float = 0.1, seed: int = 0, types: int = 0,
                 type_source: str = "gold") -> None:
        self.encoder = encoder
        self.head = VqaHead(encoder, answers, feature_dim=feature_dim, location_dim=location_dim,
                            kind=head, dropout_rate=dropout_rate, seed=seed, types=types,
                            type_source=type_source)

    def encode(self, input_ids: jax.Array, attention_mask: jax.Array, features: jax.Array,
               locations: jax.Array, visual_mask: jax.Array, keys: KeySplitter,
               type_ids: jax.Array | None = None) -> tuple[EncoderOutput, jax.Array, jax.Array | None]:
        """(encoder output over [text; type token; visual] tokens, their joint attention mask,
        the type predictor's logits or None)."""
        text = self.encoder.embed(input_ids, keys=keys)
        visual = self.head.visual(features, locations, keys.next()).astype(text.dtype)
        parts, masks, type_logits = [text], [attention_mask], None
        if self.head.types is not None:
            token, type_logits = self.head.types(text, attention_mask, type_ids)
            parts.append(token)
            masks.append(jnp.ones((len(text), 1), attention_mask.dtype))
        mask = jnp.concatenate([*masks, visual_mask.astype(attention_mask.dtype)], 1)
        return self.encoder.encode(jnp.concatenate([*parts, visual], 1), mask, keys), mask, type_logits

    def outputs(self, input_ids: jax.Array, attention_mask: jax.Array, features: jax.Array,
                locations: jax.Array, visual_mask: jax.Array, type_ids: jax.Array | None = None, *,
                dropout_key: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        """(answer logits, the type predictor's logits or None)."""
        keys = KeySplitter(dropout_key)
        out, mask, type_logits = self.encode(input_ids, attention_mask, features, locations,
                                             visual_mask, keys, type_ids)
        return self.head(out, mask, keys), type_logits

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, features: jax.Array,
                 locations: jax.Array, visual_mask: jax.Array, type_ids: jax.Array | None = None, *,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        return self.outputs(input_ids, attention_mask, features, locations, visual_mask, type_ids,
                            dropout_key=dropout_key)[0]
