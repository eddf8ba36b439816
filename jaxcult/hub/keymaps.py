"""Per-architecture key tables: Hugging Face tensor names <-> jaxcult NNX parameter paths.

A rule pairs an HF name template with an NNX path template (`{i}` = layer index) and says
whether the tensor is a torch Linear weight (stored (out, in), transposed to Flax's (in, out)).
The same table drives import and `save_pretrained`, so the two can never disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rule:
    hf: str
    nnx: str
    transpose: bool = False

    def _regex(self, template: str) -> re.Pattern:
        return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + "$")

    def match_hf(self, name: str) -> str | None:
        m = self._regex(self.hf).match(name)
        return self.nnx.format(**m.groupdict()) if m else None

    def match_nnx(self, path: str) -> str | None:
        m = self._regex(self.nnx).match(path)
        return self.hf.format(**m.groupdict()) if m else None


def dense(hf: str, nnx: str, bias: bool = True) -> list[Rule]:
    """A torch Linear: weight transposed into `kernel`, bias copied."""
    rules = [Rule(f"{hf}.weight", f"{nnx}.kernel", transpose=True)]
    return rules + ([Rule(f"{hf}.bias", f"{nnx}.bias")] if bias else [])


def norm(hf: str, nnx: str, bias: bool = True) -> list[Rule]:
    rules = [Rule(f"{hf}.weight", f"{nnx}.scale")]
    return rules + ([Rule(f"{hf}.bias", f"{nnx}.bias")] if bias else [])


@dataclass(frozen=True)
class KeyMap:
    """The rules of one architecture, plus HF names that are known and deliberately skipped."""

    rules: list[Rule]
    prefixes: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    _ignored_re: list[re.Pattern] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ignored_re", [re.compile(p) for p in self.ignored])

    def canonical(self, name: str) -> str:
        """Strip task-model prefixes (`bert.`, `roberta.`, `model.`) and legacy LayerNorm names."""
        for prefix in self.prefixes:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
            "LayerNorm.beta", "LayerNorm.bias")

    def is_ignored(self, name: str) -> bool:
        return any(p.search(name) for p in self._ignored_re)

    def to_nnx(self, name: str) -> tuple[str, bool] | None:
        """(nnx path, transpose) for a canonical HF name, or None when no rule matches."""
        for rule in self.rules:
            path = rule.match_hf(name)
            if path is not None:
                return path, rule.transpose
        return None

    def to_hf(self, path: str) -> tuple[str, bool] | None:
        for rule in self.rules:
            name = rule.match_nnx(path)
            if name is not None:
                return name, rule.transpose
        return None


def _encoder_rules() -> list[Rule]:
    layer = "encoder.layer.{i}"
    return [
        Rule("embeddings.word_embeddings.weight", "embeddings.word_embeddings.embedding"),
        Rule("embeddings.position_embeddings.weight", "embeddings.position_embeddings.embedding"),
        Rule("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.embedding"),
        *norm("embeddings.LayerNorm", "embeddings.layer_norm"),
        *dense(f"{layer}.attention.self.query", "layers.{i}.query"),
        *dense(f"{layer}.attention.self.key", "layers.{i}.key"),
        *dense(f"{layer}.attention.self.value", "layers.{i}.value"),
        *dense(f"{layer}.attention.output.dense", "layers.{i}.attention_output"),
        *norm(f"{layer}.attention.output.LayerNorm", "layers.{i}.attention_norm"),
        *dense(f"{layer}.intermediate.dense", "layers.{i}.intermediate"),
        *dense(f"{layer}.output.dense", "layers.{i}.output"),
        *norm(f"{layer}.output.LayerNorm", "layers.{i}.output_norm"),
        *dense("pooler.dense", "pooler"),
    ]


def _decoder_rules() -> list[Rule]:
    layer = "layers.{i}"
    return [
        Rule("embed_tokens.weight", "embed_tokens.embedding"),
        *norm(f"{layer}.input_layernorm", "layers.{i}.input_layernorm", bias=False),
        *dense(f"{layer}.self_attn.q_proj", "layers.{i}.q_proj"),
        *dense(f"{layer}.self_attn.k_proj", "layers.{i}.k_proj"),
        *dense(f"{layer}.self_attn.v_proj", "layers.{i}.v_proj"),
        *dense(f"{layer}.self_attn.o_proj", "layers.{i}.o_proj"),
        *norm(f"{layer}.post_attention_layernorm", "layers.{i}.post_attention_layernorm", bias=False),
        *dense(f"{layer}.mlp.gate_proj", "layers.{i}.gate_proj", bias=False),
        *dense(f"{layer}.mlp.up_proj", "layers.{i}.up_proj", bias=False),
        *dense(f"{layer}.mlp.down_proj", "layers.{i}.down_proj", bias=False),
        *norm("norm", "norm", bias=False),
        Rule("lm_head.weight", "lm_head.kernel", transpose=True),
    ]


ENCODER_KEYMAP = KeyMap(
    rules=_encoder_rules(),
    prefixes=("bert.", "roberta.", "xlm_roberta.", "model."),
    ignored=(r"position_ids$", r"^cls\.", r"^lm_head\.", r"^classifier\.", r"^qa_outputs\."),
)
DECODER_KEYMAP = KeyMap(
    rules=_decoder_rules(),
    prefixes=("model.",),
    ignored=(r"rotary_emb\.inv_freq$",),
)


def keymap_for(model_type: str) -> KeyMap:
    from jaxcult.models.decoder import DECODER_TYPES
    from jaxcult.models.encoder import ENCODER_TYPES

    if model_type in ENCODER_TYPES:
        return ENCODER_KEYMAP
    if model_type in DECODER_TYPES:
        return DECODER_KEYMAP
    raise KeyError(model_type)


def hf_name_for_export(model_type: str, path: str) -> tuple[str, bool] | None:
    """HF tensor name for an NNX path, with the base-model prefix transformers expects."""
    keymap = keymap_for(model_type)
    found = keymap.to_hf(path)
    if found is None:
        return None
    name, transpose = found
    from jaxcult.models.decoder import DECODER_TYPES

    if model_type in DECODER_TYPES and not name.startswith("lm_head."):
        name = "model." + name
    return name, transpose
