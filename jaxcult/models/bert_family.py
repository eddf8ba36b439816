"""BERT, RoBERTa and XLM-R: the encoder family's registration and its foreign names.

The HF key table, the class names written on export, and AdapterHub's key prefix and model
class live here, beside the registration, so adding a family never touches `hub/`.
"""

from __future__ import annotations

from jaxcult.models.encoder import ENCODER_TYPES, Encoder, EncoderConfig
from jaxcult.models.keytable import KeyMap, Rule, dense, norm
from jaxcult.models.registry import Architecture, register_architecture


def _rules() -> list[Rule]:
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


BERT_FAMILY = register_architecture(Architecture(
    name="bert",
    kind="encoder",
    model_types=ENCODER_TYPES,
    config_class=EncoderConfig,
    module_class=Encoder,
    keymap=KeyMap(
        rules=_rules(),
        prefixes=("bert.", "roberta.", "xlm_roberta.", "model."),
        ignored=(r"position_ids$", r"^cls\.", r"^lm_head\.", r"^classifier\.", r"^qa_outputs\."),
    ),
    hf_classes={"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel"},
    peft_task_type=None,
    dropout_settings=("hidden_dropout_prob", "attention_probs_dropout_prob"),
    pooler_classifiers=("bert",),
    adapterhub={"bert": ("bert", "BertAdapterModel"), "roberta": ("roberta", "RobertaAdapterModel"),
                "xlm-roberta": ("roberta", "XLMRobertaAdapterModel")},
))
