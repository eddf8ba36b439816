"""Masked language modelling on an encoder: BERT's `cls.predictions` / RoBERTa's `lm_head`.

The head is dense → activation → LayerNorm → (the inverse of a MAD-X invertible adapter, when
the encoder has one) → the word-embedding matrix (tied, as every BERT / XLM-R checkpoint ties
it) plus an output bias. `MLM_HEAD_KEYS` maps the checkpoint names of
both families to the head's parameters, so a pretrained head loads when the checkpoint has one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcult.models.encoder import Encoder
from jaxcult.models.layers import Dense, LayerNorm, activation, param

# head parameter path -> (BERT name, RoBERTa / XLM-R name); HF stores dense kernels (out, in)
MLM_HEAD_KEYS = {
    "dense.kernel": ("cls.predictions.transform.dense.weight", "lm_head.dense.weight"),
    "dense.bias": ("cls.predictions.transform.dense.bias", "lm_head.dense.bias"),
    "layer_norm.scale": ("cls.predictions.transform.LayerNorm.weight", "lm_head.layer_norm.weight"),
    "layer_norm.bias": ("cls.predictions.transform.LayerNorm.bias", "lm_head.layer_norm.bias"),
    "output_bias": ("cls.predictions.bias", "lm_head.bias"),
}


class MaskedLMHead(nnx.Module):
    def __init__(self, encoder: Encoder, *, rngs: nnx.Rngs) -> None:
        c = encoder.config
        pdt = jnp.dtype(c.param_dtype)
        self.dense = Dense(c.hidden_size, c.hidden_size, axes=("embed", None), param_dtype=pdt,
                           rngs=rngs)
        self.layer_norm = LayerNorm(c.hidden_size, eps=c.layer_norm_eps, param_dtype=pdt, rngs=rngs)
        self.output_bias = param(rngs, jax.nn.initializers.zeros, (c.vocab_size,), pdt, ("vocab",))
        self.act = activation(c.hidden_act)

    def __call__(self, hidden: jax.Array, embeddings, invertible=None) -> jax.Array:
        """Logits; a MAD-X invertible adapter's inverse maps the transformed states back into
        the embedding space before the tied output embeddings (as AdapterHub's MLM head)."""
        x = self.layer_norm(self.act(self.dense(hidden)))
        if invertible is not None:
            x = invertible.inverse(x)
        return embeddings.attend(x) + self.output_bias[...].astype(x.dtype)


class MaskedLM(nnx.Module):
    """The encoder with its MLM head; dropout only when `dropout_key` is given."""

    def __init__(self, encoder: Encoder, *, seed: int = 0) -> None:
        self.encoder = encoder
        self.head = MaskedLMHead(encoder, rngs=nnx.Rngs(seed))

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
                 token_type_ids: jax.Array | None = None, *, positions: jax.Array | None = None,
                 segment_ids: jax.Array | None = None,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        """Logits [batch, len, vocab], or [batch, M, vocab] at `positions` [batch, M] only;
        `segment_ids`: packed rows (see `Encoder`)."""
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, segment_ids=segment_ids,
                              dropout_key=dropout_key).last_hidden_state
        if positions is not None:
            hidden = jnp.take_along_axis(hidden, positions[..., None], axis=1)
        return self.head(hidden, self.encoder.embeddings.word_embeddings,
                         self.encoder.embedding_adapter)


def load_head(head: MaskedLMHead, tensors) -> list[str]:
    """Copy a checkpoint's MLM head (BERT or RoBERTa names) into `head`; returns the names used
    (empty when the checkpoint has no head)."""
    used = []
    for path, names in MLM_HEAD_KEYS.items():
        name = next((n for n in names if n in tensors), None)
        if name is None:
            continue
        value = jnp.asarray(tensors[name])
        module, leaf = path.rsplit(".", 1) if "." in path else ("", path)
        target = getattr(getattr(head, module), leaf) if module else getattr(head, leaf)
        value = value.T if leaf == "kernel" else value
        if value.shape != target.shape:
            raise ValueError(f"{name}: shape {value.shape}, the head expects {target.shape}")
        target[...] = value.astype(target.dtype)
        used.append(name)
    return used
