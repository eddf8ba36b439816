"""Assistant-only loss masks for the three chat-template families CLCA trains on (ChatML,
Llama-3, Mistral v0.3), with tiny tokenizers built here that carry those templates: every
assistant message — also one that opens the conversation (CLCA's perspective 2) — is trained
with its end-of-turn marker, and nothing else is."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from jaxcult.data import lm

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}"
          "<|end_header_id|>\n\n{{ m.content | trim }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
          "{% endif %}")
# Mistral v0.3's rules: roles alternate starting with the user; the system text is written
# only before the last message, when that message is the user's.
MISTRAL = ("{% if messages[0].role == 'system' %}{% set system = messages[0].content %}"
           "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}"
           "{% endif %}{% for m in loop_messages %}{% if (m.role == 'user') != "
           "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
           "user/assistant/user/assistant/...') }}{% endif %}{% endfor %}{{ bos_token }}"
           "{% for m in loop_messages %}{% if m.role == 'user' %}{% if loop.last and system "
           "is defined %}[INST] {{ system }}\n\n{{ m.content }}[/INST]{% else %}[INST] "
           "{{ m.content }}[/INST]{% endif %}{% else %} {{ m.content | trim }}{{ eos_token }}"
           "{% endif %}{% endfor %}")

FAMILIES = {
    "chatml": (CHATML, ["<|im_start|>", "<|im_end|>"], {"eos_token": "<|im_end|>"}, "<|im_end|>"),
    "llama3": (LLAMA3, ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                        "<|eot_id|>"], {"bos_token": "<|begin_of_text|>",
                                        "eos_token": "<|eot_id|>"}, "<|eot_id|>"),
    "mistral": (MISTRAL, ["<s>", "</s>", "[INST]", "[/INST]"],
                {"bos_token": "<s>", "eos_token": "</s>"}, "</s>"),
}
SYSTEM = "Imagine you are Mei, a nurse from the Chinese culture."
PERSPECTIVE1 = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Good evening, auntie Mei."},
                {"role": "assistant", "content": "Ah, come in, you must be tired."},
                {"role": "user", "content": "Thank you, I brought some fruit."},
                {"role": "assistant", "content": "You are too polite, sit down please."}]
PERSPECTIVE2 = [{"role": "system", "content": SYSTEM},
                {"role": "assistant", "content": "Good evening, auntie Mei."},
                {"role": "user", "content": "Ah, come in, you must be tired."},
                {"role": "assistant", "content": "Thank you, I brought some fruit."}]


def tiny_tokenizer(family: str) -> PreTrainedTokenizerFast:
    template, specials, roles, _ = FAMILIES[family]
    model = Tokenizer(models.BPE(unk_token="<unk>"))
    if family == "mistral":  # sentencepiece-style: the space is part of the next word's token
        model.pre_tokenizer = pre_tokenizers.Metaspace()
        model.decoder = decoders.Metaspace()
    else:
        model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        model.decoder = decoders.ByteLevel()
    corpus = [m["content"] for m in PERSPECTIVE1 + PERSPECTIVE2] + ["system user assistant"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<pad>", *specials],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
                                  if family != "mistral" else [])
    model.train_from_iterator(corpus * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, pad_token="<pad>",
                                        unk_token="<unk>", **roles)
    tokenizer.chat_template = template
    return tokenizer


def trained_text(tokenizer, messages) -> str:
    split = lm.tokenize_chats([{"messages": messages}], tokenizer, 256, "chat")
    labels, mask = split.arrays["labels"][0], split.arrays["loss_mask"][0]
    return tokenizer.decode(labels[mask == 1])


def squeeze(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("messages", [PERSPECTIVE1, PERSPECTIVE2], ids=["user-first",
                                                                        "assistant-first"])
def test_only_assistant_messages_and_their_end_marker_are_trained(family, messages):
    tokenizer = tiny_tokenizer(family)
    marker = FAMILIES[family][3]
    assert lm.end_of_turn(tokenizer) == marker
    expected = "".join(m["content"] + marker for m in messages if m["role"] == "assistant")
    assert squeeze(trained_text(tokenizer, messages)) == squeeze(expected)


def test_mistral_conversations_keep_the_system_text_and_open_with_a_user_turn():
    """The template drops the system text of a conversation ending with the assistant and
    refuses one opening with the assistant: both are adapted, not lost."""
    tokenizer = tiny_tokenizer("mistral")
    for messages in (PERSPECTIVE1, PERSPECTIVE2):
        adapted, text = lm._render_trainable(messages, tokenizer)
        assert SYSTEM in text and adapted[0]["role"] == "user"
        assert text.startswith("<s>[INST] " + SYSTEM)


# Gemma 2's rules: turns between <start_of_turn> and <end_of_turn>, the assistant called
# `model`, and no system role (the template refuses one).
GEMMA2 = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}"
          "{{ raise_exception('System role not supported') }}{% endif %}<start_of_turn>"
          "{{ 'model' if m.role == 'assistant' else m.role }}\n{{ m.content | trim }}"
          "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
          "{% endif %}")


def test_a_template_without_a_system_role_is_obeyed_as_its_stock_template_does():
    """Gemma 2's template refuses a system turn: generation says so in one line (no
    traceback); a conversation without one trains its model turns and their end marker."""
    from jaxcult.errors import UserError
    from jaxcult.generation.prompts import render_chat

    FAMILIES["gemma2"] = (GEMMA2, ["<bos>", "<start_of_turn>", "<end_of_turn>"],
                          {"bos_token": "<bos>", "eos_token": "<end_of_turn>"}, "<end_of_turn>")
    try:
        tokenizer = tiny_tokenizer("gemma2")
    finally:
        del FAMILIES["gemma2"]
    with pytest.raises(UserError, match="refuses a conversation of roles system, user, "
                                        "assistant: System role not supported"):
        render_chat(PERSPECTIVE1, tokenizer)
    chat = PERSPECTIVE1[1:]
    assert render_chat(chat[:1], tokenizer).endswith("<start_of_turn>model\n")
    trained = squeeze(trained_text(tokenizer, chat))
    assert trained == squeeze("Ah, come in, you must be tired.<end_of_turn>"
                              "You are too polite, sit down please.<end_of_turn>")
