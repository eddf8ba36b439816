"""Key tables: Hugging Face tensor names <-> jaxcult NNX parameter paths.

A rule pairs an HF name template with an NNX path template (`{i}` = layer index) and says
whether the tensor is a torch Linear weight (stored (out, in), transposed to Flax's (in, out)).
Each architecture family declares its table beside its registration; the same table drives
import and export, so the two can never disagree.
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


def gguf_names(norms: dict[str, str], *, fused: bool = False, qk_norm: bool = False
               ) -> tuple[tuple[str, str], ...]:
    """llama.cpp's tensor names -> HF names of a decoder family (`norms`: GGUF norm name in
    a block -> HF norm module), as its converter writes them; `fused`: Phi-3's attn_qkv and
    ffn_up (gate and up together)."""
    block, hf = "blk.{i}", "model.layers.{i}"
    names = [("token_embd.weight", "model.embed_tokens.weight"),
             ("output_norm.weight", "model.norm.weight"), ("output.weight", "lm_head.weight")]
    names += [(f"{block}.{g}.weight", f"{hf}.{h}.weight") for g, h in norms.items()]
    attention = {"attn_qkv": "qkv_proj"} if fused else {"attn_q": "q_proj", "attn_k": "k_proj",
                                                         "attn_v": "v_proj"}
    for g, h in {**attention, "attn_output": "o_proj"}.items():
        names += [(f"{block}.{g}.{kind}", f"{hf}.self_attn.{h}.{kind}") for kind in ("weight", "bias")]
    if qk_norm:
        names += [(f"{block}.attn_q_norm.weight", f"{hf}.self_attn.q_norm.weight"),
                  (f"{block}.attn_k_norm.weight", f"{hf}.self_attn.k_norm.weight")]
    mlp = {"ffn_up": "gate_up_proj"} if fused else {"ffn_gate": "gate_proj", "ffn_up": "up_proj"}
    names += [(f"{block}.{g}.weight", f"{hf}.mlp.{h}.weight")
              for g, h in {**mlp, "ffn_down": "down_proj"}.items()]
    return tuple(names)


def decoder_rules(norms: dict[str, str], *, fused: bool = False, qk_norm: bool = False
                  ) -> list[Rule]:
    """The key table of a decoder family saved as `*ForCausalLM` (names under `model.`):
    embeddings, the final norm, the LM head, and per layer the attention and MLP projections
    (`fused`: Phi-3's `qkv_proj` and `gate_up_proj`), per-head `q_norm` / `k_norm`
    (`qk_norm`), and the layer's norms, `norms` mapping each HF norm module to ours."""
    layer, ours = "layers.{i}", "layers.{i}"
    rules = [Rule("embed_tokens.weight", "embed_tokens.embedding"), *norm("norm", "norm", bias=False),
             Rule("lm_head.weight", "lm_head.kernel", transpose=True)]
    for hf, nnx in norms.items():
        rules += norm(f"{layer}.{hf}", f"{ours}.{nnx}", bias=False)
    attention = ["qkv_proj"] if fused else ["q_proj", "k_proj", "v_proj"]
    for name in [*attention, "o_proj"]:
        rules += dense(f"{layer}.self_attn.{name}", f"{ours}.{name}")
    if qk_norm:
        rules += [*norm(f"{layer}.self_attn.q_norm", f"{ours}.q_norm", bias=False),
                  *norm(f"{layer}.self_attn.k_norm", f"{ours}.k_norm", bias=False)]
    for name in ["gate_up_proj" if fused else "gate_proj", *([] if fused else ["up_proj"]),
                 "down_proj"]:
        rules += dense(f"{layer}.mlp.{name}", f"{ours}.{name}", bias=False)
    return rules
