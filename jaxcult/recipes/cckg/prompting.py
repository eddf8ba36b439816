"""The students' prompts, in jaxcult's words: a cultural multiple-choice question (options
lettered, or the question to complete), optionally after knowledge from the graph, and the
story request; how the answer is read off (the continuations scored)."""

from __future__ import annotations

from jaxcult.generation.prompts import Chat, render_chat
from jaxcult.recipes.cckg.benchmarks import LETTERS, Question

KNOWLEDGE_HEADS = {"assertions": "Things people in {country} commonly know:",
                   "path": "How events typically unfold in {country}:"}
LETTER_TASK = "Which option is the most plausible? Answer with its letter."
OPTION_TASK = "Complete the text with what is most plausible."
THINK = ("First think step by step about what people there would do and why, then give your "
         "answer.")
ANSWER_LEAD = "Answer:"
STORY = ("Write a short story (about 150 words) set in {country} about {topic}, true to how "
         "people there live.")


def knowledge_block(unit: str, country: str, texts: list[str]) -> str:
    if not texts:
        return ""
    lines = texts if unit == "path" else [f"- {t}" for t in texts]
    return KNOWLEDGE_HEADS[unit].format(country=country) + "\n" + "\n".join(lines) + "\n\n"


def question_chat(question: Question, scoring: str, knowledge: str, think: bool) -> Chat:
    if scoring == "letter":
        body = "\n".join([question.question, *(f"{LETTERS[i]}. {option}" for i, option
                                               in enumerate(question.options))])
        task = LETTER_TASK
    else:
        body, task = question.question, OPTION_TASK
    ask = f"{knowledge}{body}\n\n{task}" + (f" {THINK}" if think else "")
    return [{"role": "user", "content": ask}]


def render(chat: Chat, tokenizer) -> str:
    """The chat as the model reads it: its chat template, or plain text for a base model."""
    if getattr(tokenizer, "chat_template", None):
        return render_chat(chat, tokenizer)
    return "\n\n".join(m["content"] for m in chat) + "\n\n"


def scored(question: Question, scoring: str, prompt: str, reasoning: str | None
           ) -> tuple[str, list[str]]:
    """The prompt the options continue and the options: after the model's reasoning (if
    any), each letter after 'Answer:', or each option completing the question."""
    lead = prompt + (reasoning.strip() + "\n" if reasoning is not None else "")
    if scoring == "letter":
        return lead + ANSWER_LEAD, [f" {LETTERS[i]}" for i in range(len(question.options))]
    return lead + question.question, [f" {option}" for option in question.options]


def story_chat(country: str, topic: str, knowledge: str) -> Chat:
    return [{"role": "user", "content": knowledge + STORY.format(country=country, topic=topic)}]
