"""Surveys→Narratives (EMNLP 2025): training views against hand-written records, the source
readers and their errors, the offensive-language parser and macro-F1 against hand-computed
values, log-prob answers against transformers, and the pipeline end to end on a tiny model."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from jaxcult.data.narrative_sources import read_normad, split_sentences
from jaxcult.data.narrative_views import build_records, survey_answer
from jaxcult.data.narratives_synthetic import write_synthetic_narratives
from jaxcult.data.offensive import Example, read_task
from jaxcult.data.survey import Question, Respondent
from jaxcult.data.survey_synthetic import write_synthetic_worldvaluesbench
from jaxcult.errors import UserError
from jaxcult.eval.offensive import (
    f1_scores,
    macro_f1,
    parse_choice,
    parse_choice_official,
    parse_offensive,
    parse_offensive_official,
    score_task,
)

QUESTION = Question("Q7", "Is tolerance important?", 1, 2, ("Mentioned", "Not mentioned"))


def _person(code: int | None) -> Respondent:
    inside = code if code is not None and 1 <= code <= 4 else None
    return Respondent("r", "X", {}, {"Q7": inside}, {"Q7": code})


def test_survey_answer_is_the_truncated_mean_with_negative_codes_flipped_or_dropped():
    people = [_person(c) for c in (-1, 3, 4, None, -2)]
    assert survey_answer(people, QUESTION, "flip") == int((1 + 3 + 4 + 2) / 4)   # 2
    assert survey_answer(people, QUESTION, "drop") == int((3 + 4) / 2)           # 3
    assert survey_answer([_person(None)], QUESTION) is None


def test_the_official_answer_rule_flips_the_mean_of_the_raw_codes_not_each_code():
    """The official data's precomputed answers: the mean of the raw codes (negative ones
    included), its sign flipped when negative; simulated here on the raw codes."""
    def official(codes: list[int]) -> int:
        mean = sum(codes) / len(codes)
        return int(-mean if mean < 0 else mean)

    for codes in ([-1, 3, 4, -2], [4, 4, -1], [-1, -1, -5, 4], [-2, -2], [1, 2, 2]):
        people = [_person(c) for c in codes]
        assert survey_answer(people, QUESTION, "official") == official(codes)
    people = [_person(c) for c in (4, 4, -1)]
    assert (survey_answer(people, QUESTION, "official"), survey_answer(people, QUESTION, "flip")) \
        == (2, 3)


def _official_survey_prompt(text: str) -> str:
    """The official loader's survey record (src/llama_finetune.py, add_survey_prompt)."""
    question = text.split("### Question:")[1].split("### Answer:")[0].strip()
    answer = text.split("### Answer:")[1].strip()
    return f"### Task: Survey Question-Answer\n### Question: {question}\n### Answer: {answer}"


def test_survey_qa_files_read_both_layouts_and_name_bad_records(tmp_path):
    from jaxcult.data.narrative_sources import read_survey_qa

    path = tmp_path / "China.jsonl"
    text = ("### Question: Give me the answer from 1 to 4: Do you agree with X? 1. Strongly "
            "agree 2. agree 3. Disagree 4. Strongly disagree.\n ### Answer: 2")
    path.write_text(json.dumps({"text": text}) + "\n\n" + json.dumps({"messages": [
        {"role": "system", "content": "You are a China chatbot."},
        {"role": "user", "content": "Do you agree with Y?"},
        {"role": "assistant", "content": "3"}]}) + "\n")
    pairs = read_survey_qa(path)
    assert pairs[1] == ("Do you agree with Y?", "3")
    assert build_records("normal", "China", survey_pairs=pairs[:1])[0]["text"] == \
        _official_survey_prompt(text)
    for line, message in (('{"text": "no markers"}', "China.jsonl:1: expected"),
                          ('{"messages": [{"role": "user", "content": "q"}]}', "an assistant turn"),
                          ("[1]", "expected a 'text' or a 'messages' record"),
                          ("{", "China.jsonl:1: invalid JSON")):
        path.write_text(line + "\n")
        with pytest.raises(UserError, match=re.escape(message)):
            read_survey_qa(path)


def test_views_and_scenario_mixes_match_the_paper_format():
    from jaxcult.data.narrative_sources import NormAdStory

    story = NormAdStory("china", "Gifts.", "Open gifts later.", "Li opened it later.", "Fine.")
    records = build_records("all_combined", "Chinese", questions=[QUESTION],
                            people=[_person(1), _person(2)], sentences=["Tea is common."],
                            stories=[story])
    assert [r["text"] for r in records] == [
        "### Task: Survey Question-Answer\n### Question: Is tolerance important?\n### Answer: 1",
        "### Task: Cultural Context\n### Culture: Chinese\n### Description: Tea is common.",
        "### Task: NormAd Cultural Context\n### Culture: Chinese\n### Country: china\n"
        "### Background: Gifts.\n### Rule-of-Thumb: Open gifts later.\n### Story: Li opened it "
        "later.\n### Explanation: Fine."]
    assert {r["culture"] for r in records} == {"Chinese"}
    views = {name: [r["view"] for r in build_records(name, "C", questions=[QUESTION],
                                                     people=[_person(1)], sentences=["a."],
                                                     stories=[story])]
             for name in ("normal", "cultural_context", "normad_context", "wiki_only",
                          "normad_only")}
    assert views == {"normal": ["survey"], "cultural_context": ["survey", "culture_text"],
                     "normad_context": ["survey", "normad"], "wiki_only": ["culture_text"],
                     "normad_only": ["normad"]}


def test_sentences_split_on_latin_and_cjk_punctuation_and_paragraphs():
    text = ("Tea is served first. Guests wait!\nThen \"dinner starts.\" Really?\n\n"
            "新年很重要。大家团聚！Dr Li agrees")
    assert split_sentences(text) == ["Tea is served first.", "Guests wait!",
                                     "Then \"dinner starts.\"", "Really?", "新年很重要。",
                                     "大家团聚！", "Dr Li agrees"]


def test_normad_reader_takes_csv_and_jsonl_and_names_a_missing_field(tmp_path):
    files = write_synthetic_narratives(tmp_path, ("China",))
    stories = read_normad(files["normad"])
    assert len(stories) == 3 and stories[0].country == "china"
    rows = [{"Country": "peru", "Background": "b", "Rule-of-Thumb": "r", "Story": "s",
             "Explanation": "e"}, {"Country": "peru", "Background": "b", "Story": "s",
                                   "Explanation": "e"}]
    path = tmp_path / "normad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(UserError, match=r"normad.jsonl: record 2: missing or empty 'Rule-of-Thumb'"):
        read_normad(path)
    with pytest.raises(UserError, match="normad.xml: NormAd file not found"):
        read_normad(tmp_path / "normad.xml")
    (tmp_path / "normad.xml").write_text("<rows/>")
    with pytest.raises(UserError, match=r"\.csv, \.tsv, \.json or \.jsonl"):
        read_normad(tmp_path / "normad.xml")


@pytest.mark.parametrize("completion, expected", [
    (" 1", True), (" 2. Not offensive", False), ("1. Offensive", True), ("Offensive", True),
    ("\n\nNot offensive, because it is polite.", False), ("non-offensive", False),
    ("It is not.", False), ("3", None), ("", None), ("I cannot tell.", None),
    ("Answer: 2", False), (" 12", None), ("Option 2", False), ("1.5", None),
])
def test_offensive_parser(completion, expected):
    assert parse_offensive(completion) is expected


@pytest.mark.parametrize("completion, expected", [
    (" 1", True), ("", True), ("   ", True),            # empty: the official "1"
    (" Not offensive", None), ("not", None),           # one token "Not": no option
    ("not offensive", None), ("non-offensive", True),  # the substring rule on the first word
    ("Offensive.", True),
    (" 2", False), ("2. Not offensive", False), ("12", True), (" Maybe", None),
])
def test_official_quirks_parser_reads_the_first_word_as_the_official_code(completion, expected):
    assert parse_offensive_official(completion) is expected


def test_official_quirks_decode_one_token_and_are_refused_where_they_do_nothing(monkeypatch):
    from jaxcult.data.offensive import Example
    from jaxcult.eval import offensive
    from jaxcult.generation.engine import Completion
    from jaxcult.recipes.narratives.config import NarrativesEvalConfig

    seen = []

    def fake_generate(model, tokenizer, prompts, config, on_batch=None):
        seen.append(config.max_new_tokens)
        return [Completion(text, [], "length", 1) for text in ("non-offensive", "", " 2")]

    monkeypatch.setattr(offensive, "generate", fake_generate)
    examples = [Example("a", True), Example("b", False), Example("c", False)]
    assert offensive.predict(None, None, examples, official_quirks=True) == [True, True, False]
    assert offensive.predict(None, None, examples) == [False, None, False]
    assert seen == [1, 64]
    with pytest.raises(ValueError, match="quirks are of the generate mode"):
        NarrativesEvalConfig(mode="logprob", official_quirks=True)
    with pytest.raises(ValueError, match="max_new_tokens has no effect"):
        NarrativesEvalConfig(official_quirks=True, generation={"max_new_tokens": 10})


def test_macro_f1_by_hand_with_parse_failures_as_false_negatives():
    gold = [True, True, True, False, False, False]
    predicted = [True, None, False, False, True, False]
    # offensive: tp 1, fp 1, fn 2 -> 2/5; not: tp 2, fp 1, fn 1 -> 4/6
    assert f1_scores(gold, predicted) == {True: pytest.approx(0.4), False: pytest.approx(2 / 3)}
    assert macro_f1(gold, predicted) == pytest.approx((0.4 + 2 / 3) / 2)
    assert macro_f1([True, True], [True, True]) == pytest.approx(0.5)  # no "not" class at all
    result = score_task("t", [Example("x", g) for g in gold], predicted)
    assert (result.accuracy, result.parse_failure_rate, result.predicted) == \
        (pytest.approx(3 / 6), pytest.approx(1 / 6),
         {"offensive": pytest.approx(2 / 6), "not offensive": pytest.approx(3 / 6)})


def test_task_reader_normalises_labels_and_names_bad_ones(tmp_path):
    good = tmp_path / "t.tsv"
    good.write_text("text\tlabel\nyou fool\tOFF\nnice day\tNOT\n")
    assert read_task(good).examples == [Example("you fool", True), Example("nice day", False)]
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "maybe"}\n')
    with pytest.raises(UserError, match=r"b.jsonl:2: label 'maybe' is neither offensive"):
        read_task(bad)


FINE_GRAINED = """\
prompt: "Which offense is in: {text}? 1 none, 2 profanity, 3 group, 4 person, 5 other. Answer:"
labels:
  non: {answer: "1", words: [not hatespeech]}
  prof: {answer: "2", words: [profanity]}
  grp: {answer: "3", words: [offense towards a group]}
  indv: {answer: "4", words: [offense towards an individual]}
  oth: {answer: "5", words: [offense towards an other]}
"""


def test_declared_label_sets_read_their_labels_and_name_bad_ones(tmp_path):
    (tmp_path / "fine.jsonl").write_text('{"text": "a", "label": "GRP"}\n{"text": "b", "label": "oth"}\n')
    (tmp_path / "fine.yaml").write_text(FINE_GRAINED)
    task = read_task(tmp_path / "fine.jsonl")
    assert task.examples == [Example("a", "grp"), Example("b", "oth")]
    assert task.labels == ("non", "prof", "grp", "indv", "oth") and "{text}" in task.prompt
    (tmp_path / "fine.jsonl").write_text('{"text": "a", "label": "grp"}\n{"text": "b", "label": "HS"}\n')
    with pytest.raises(UserError, match=r"fine.jsonl:2: label 'HS' is not one of the task's labels"):
        read_task(tmp_path / "fine.jsonl")
    for broken, message in ((FINE_GRAINED.replace("{text}", "it"), "must be a string holding"),
                            (FINE_GRAINED.replace('"5"', '"4"'), "its own non-empty answer"),
                            ("prompt: '{text}'\nlabels: {a: {answer: '1'}}\n", "at least two"),
                            (FINE_GRAINED + "extra: 1\n", "exactly the keys prompt and labels")):
        (tmp_path / "fine.yaml").write_text(broken)
        with pytest.raises(UserError, match=message):
            read_task(tmp_path / "fine.jsonl")


def _official_fine_grained(output: str) -> str:
    """The official postprocess of offensive_detect_finegrained (src/test_cross.py at 8ea273c):
    ordered substring checks on the lowercased first word of the answer, else the word itself."""
    if output == "":
        return output
    output = output.lower()
    for digit, phrase, label in (("1", "not hatespeech", "non"), ("2", "profanity", "prof"),
                                 ("3", "offense towards a group", "grp"),
                                 ("4", "offense towards an individual", "indv"),
                                 ("5", "offense towards an other", "oth")):
        if digit in output or phrase in output:
            return label
    return output


def test_multi_class_official_reading_and_macro_f1_match_the_official_code(tmp_path):
    metrics = pytest.importorskip("sklearn.metrics")
    (tmp_path / "fine.jsonl").write_text('{"text": "a", "label": "grp"}\n')
    (tmp_path / "fine.yaml").write_text(FINE_GRAINED)
    choices = read_task(tmp_path / "fine.jsonl").choices
    labels = ["non", "prof", "grp", "indv", "oth"]
    completions = [" 3", "2.", "profanity", "Offense", "", " 12", " maybe", "5", " 4", "1"]
    gold = ["grp", "prof", "prof", "indv", "non", "oth", "grp", "oth", "indv", "prof"]

    def official_response(text: str) -> str:   # getResponse: the first word after the prompt
        words = text.split()
        return words[0] if words else "1"

    official = [_official_fine_grained(official_response(c)) for c in completions]
    ours = [parse_choice_official(c, choices) for c in completions]
    assert [p if p in labels else None for p in official] == ours
    assert macro_f1(gold, ours, labels) == pytest.approx(
        metrics.f1_score(gold, official, labels=labels, average="macro", zero_division=0))
    # the default (lenient) reading: the first number, else the longest matching words
    assert [parse_choice(c, choices) for c in
            (" 3. Offense towards a group", "Offense towards an individual", "7", "profanity!")] \
        == ["grp", "indv", None, "prof"]


def test_logprob_answers_equal_transformers(tiny_chat_model):
    torch = pytest.importorskip("torch")
    from jaxcult.config import GenerationConfig
    from jaxcult.eval.offensive import OPTIONS, PROMPT, predict
    from jaxcult.generation.scoring import option_logprobs
    from jaxcult.hub.pretrained import load_pretrained

    root, hf, hf_tokenizer = tiny_chat_model
    model, tokenizer = load_pretrained(root)
    examples = [Example("you fool", True), Example("nice weather today", False)]
    prompts = [PROMPT.format(text=e.text) for e in examples]
    config = GenerationConfig(batch_size=2, length_buckets=[128, 256])
    ours = option_logprobs(model, tokenizer, prompts, [OPTIONS] * 2, config, add_special_tokens=True)
    for prompt, logps in zip(prompts, ours):
        context = hf_tokenizer(prompt)["input_ids"]
        for option, value in zip(OPTIONS, logps):
            ids = hf_tokenizer(prompt + option)["input_ids"]
            with torch.no_grad():
                logprobs = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1)
            expected = sum(float(logprobs[t - 1, ids[t]]) for t in range(len(context), len(ids)))
            assert value == pytest.approx(expected, abs=1e-4)
    assert predict(model, tokenizer, examples, mode="logprob", config=config) == \
        [bool(a >= b) for a, b in ours]


def _mmlu_files(root, rows_by_subject: dict[str, list[list[str]]], header: bool = False) -> None:
    import csv

    for index, (subject, rows) in enumerate(rows_by_subject.items()):
        folder = root / "test" if index % 2 else root   # both places the reader looks
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"{subject}_test.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            if header:
                writer.writerow(["input", "A", "B", "C", "D", "target"])
            writer.writerows(rows)


MMLU_ROWS = {"college_physics": [["What falls?", "apples", "clouds", "sound", "light", "A"],
                                 ["Unit of force, with a comma?", "newton, N", "joule", "watt",
                                  "volt", "A"]],
             "high_school_statistics": [["Mean of 1 and 3?", "1", "2", "3", "4", "B"],
                                        ["Median of 1, 2, 9?", "1", "9", "2", "4", "C"],
                                        ["Mode of 4, 4, 5?", "5", "1", "0", "4", "D"]]}


def test_mmlu_reader_takes_the_standard_csv_and_names_bad_rows(tmp_path):
    from jaxcult.data.mmlu import read_mmlu

    _mmlu_files(tmp_path / "mmlu", MMLU_ROWS, header=True)
    questions = read_mmlu(tmp_path / "mmlu", list(MMLU_ROWS))
    assert [q.answer for q in questions] == ["A", "A", "B", "C", "D"]
    assert questions[1].options == ("newton, N", "joule", "watt", "volt")
    assert questions[2].subject == "high_school_statistics"
    assert len(read_mmlu(tmp_path / "mmlu", list(MMLU_ROWS), limit=3, seed=1)) == 3
    with pytest.raises(UserError, match="no astronomy_test.csv"):
        read_mmlu(tmp_path / "mmlu", ["astronomy"])
    _mmlu_files(tmp_path / "bad", {"a": [["q", "1", "2", "3", "4", "A"], ["q", "1", "2", "3", "E"]]})
    with pytest.raises(UserError, match=r"a_test.csv:2: expected 6 columns"):
        read_mmlu(tmp_path / "bad", ["a"])
    _mmlu_files(tmp_path / "bad2", {"a": [["q", "1", "2", "3", "4", "E"]]})
    with pytest.raises(UserError, match=r"a_test.csv:1: answer 'E' is not one of A, B, C, D"):
        read_mmlu(tmp_path / "bad2", ["a"])


def test_mmlu_generate_rule_and_scores_match_the_official_code():
    r"""The official src/test_mmlu.py: the letter is `### Answer:\s*([A-D])` searched in the
    decoded prompt + output ("A" and invalid when absent); accuracy and scikit-learn's macro-F1
    over A-D. Simulated here on the prompts jaxcult builds and one-token completions."""
    import re

    metrics = pytest.importorskip("sklearn.metrics")
    from jaxcult.data.mmlu import MMLUQuestion
    from jaxcult.eval.mmlu import prompt, read_letter, score

    questions = [MMLUQuestion("s", f"q{i}", ("w", "x", "y", "z"), "ABCDAB"[i]) for i in range(6)]
    completions = [" B", "B", " \nC", " none", "", " A"]

    def official(text: str) -> tuple[str, bool]:
        found = re.search(r"### Answer:\s*([A-D])", text)
        return (found.group(1), False) if found else ("A", True)

    simulated = [official(prompt(q) + c) for q, c in zip(questions, completions)]
    result = score(questions, [read_letter(c) for c in completions])
    gold, letters = [q.answer for q in questions], [letter for letter, _ in simulated]
    assert result.accuracy == metrics.accuracy_score(gold, letters)
    assert result.macro_f1 == pytest.approx(metrics.f1_score(
        gold, letters, average="macro", labels=["A", "B", "C", "D"], zero_division=0))
    assert result.invalid == sum(invalid for _, invalid in simulated) == 2


def test_mmlu_logprob_letters_are_the_likeliest_under_transformers(tiny_chat_model):
    torch = pytest.importorskip("torch")
    from jaxcult.config import GenerationConfig
    from jaxcult.data.mmlu import LETTERS, MMLUQuestion
    from jaxcult.eval.mmlu import predict, prompt
    from jaxcult.hub.pretrained import load_pretrained

    root, hf, hf_tokenizer = tiny_chat_model
    model, tokenizer = load_pretrained(root)
    questions = [MMLUQuestion("s", text, ("one", "two", "three", "four"), "A")
                 for text in ("How many?", "Which is the largest number here?", "Pick one.")]
    got = predict(model, tokenizer, questions, config=GenerationConfig(batch_size=2,
                                                                        length_buckets=[128]))
    def loglikelihood(text: str, letter: str) -> float:
        context, ids = hf_tokenizer(text)["input_ids"], hf_tokenizer(f"{text} {letter}")["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1)
        return sum(float(logprobs[t - 1, ids[t]]) for t in range(len(context), len(ids)))

    for question, letter in zip(questions, got):
        assert letter == max(LETTERS, key=lambda x: loglikelihood(prompt(question), x))


def _pipeline_files(tmp_path, root):
    write_synthetic_worldvaluesbench(tmp_path / "wvb", ("China", "Germany"), respondents=8, seed=2)
    files = write_synthetic_narratives(tmp_path / "src", ("China", "Germany"))
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump({
        "task": {"name": "causal_lm"}, "model": {"name": str(root), "max_length": 512},
        "peft": {"kind": "lora", "lora_r": 4, "lora_alpha": 8.0, "target_modules": ["q", "v"]},
        "data": {"eval_split": "validation", "length_buckets": [512]},
        "optimizer": {"lr": 0.05, "warmup_ratio": 0.03},
        "trainer": {"steps": 2, "batch_size": 2, "eval_batch_size": 8},
        "logging": {"tensorboard": False, "progress": "off"}, "checkpoint": {"async_save": False}}))
    config = tmp_path / "narratives.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "cultures": [{"name": "China"}, {"name": "Germany"}],
        "survey": str(tmp_path / "wvb"), "culture_texts": str(files["culture_texts"]),
        "normad": str(files["normad"]), "tasks": str(files["tasks"]),
        "build": {"questions": ["Q1", "Q2", "Q3"]}, "train": {"config": str(train)},
        "evaluate": {"mode": "logprob", "max_examples": 3,
                     "generation": {"batch_size": 4, "length_buckets": [256]}}}))
    return config


def test_a_culture_over_several_survey_countries_pools_their_respondents(tiny_chat_model, tmp_path):
    from jaxcult.data.narrative_views import survey_answer
    from jaxcult.data.survey import load_survey
    from jaxcult.recipes.narratives import run_stages

    config = _pipeline_files(tmp_path, tiny_chat_model[0])
    settings = yaml.safe_load(config.read_text())
    settings["cultures"] = [{"name": "both", "survey": ["China", "Germany"]},
                            {"name": "China"}]
    config.write_text(yaml.safe_dump(settings))
    run_stages(config, ["build.scenario=normal"], "build", tmp_path / "out")
    data = tmp_path / "out/data/normal/both"
    texts = {json.loads(line)["text"] for name in ("train", "validation")
             for line in (data / f"{name}.jsonl").read_text().splitlines()}
    survey = load_survey(tmp_path / "wvb", "full", ["China", "Germany"]).select(["Q1", "Q2", "Q3"])
    pooled = survey.respondents["China"] + survey.respondents["Germany"]
    answers = {q.id: survey_answer(pooled, q) for q in survey.questions}
    assert answers != {q.id: survey_answer(survey.respondents["China"], q) for q in survey.questions}
    assert all(any(t.endswith(f"### Answer: {answers[q.id]}") and q.text in t for t in texts)
               for q in survey.questions if answers[q.id] is not None)
    settings["cultures"] = [{"name": "x", "survey": ["China", "Atlantis"]}]
    config.write_text(yaml.safe_dump(settings))
    with pytest.raises(UserError, match="Atlantis"):
        run_stages(config, ["build.scenario=normal"], "build", tmp_path / "out2")


def test_the_build_takes_the_survey_view_from_official_survey_qa_files(tiny_chat_model, tmp_path):
    from jaxcult.recipes.narratives import run_stages

    config = _pipeline_files(tmp_path, tiny_chat_model[0])
    texts = {culture: [f"### Question: Give me the answer from 1 to 4: Do you agree with "
                       f"{culture} claim {i}? 1. Strongly agree 2. agree.\n ### Answer: {i % 4 + 1}"
                       for i in range(6)] for culture in ("China", "Germany")}
    for culture, lines in texts.items():
        (tmp_path / "qa").mkdir(exist_ok=True)
        (tmp_path / "qa" / f"{culture}.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in lines))
    settings = yaml.safe_load(config.read_text())
    del settings["build"]["questions"]
    settings.update(survey=None, survey_qa=str(tmp_path / "qa"))
    config.write_text(yaml.safe_dump(settings))
    done = run_stages(config, ["build.scenario=normal"], "build", tmp_path / "out")
    for culture, lines in texts.items():
        folder = tmp_path / "out/data/normal" / culture
        built = [json.loads(line)["text"] for split in ("train", "validation")
                 for line in (folder / f"{split}.jsonl").read_text().splitlines()]
        assert sorted(built) == sorted(_official_survey_prompt(t) for t in lines)
    assert done["build"]["China"]["train"] == {"survey": 5}
    with pytest.raises(UserError, match="build.questions has no effect with survey_qa"):
        run_stages(config, ["build.questions=[Q1]"], "build", tmp_path / "out2")
    with pytest.raises(UserError, match="survey and survey_qa: the survey view reads one"):
        run_stages(config, [f"survey={tmp_path / 'wvb'}"], "build", tmp_path / "out3")


def test_pipeline_builds_trains_and_writes_the_cross_culture_matrix(tiny_chat_model, tmp_path):
    from jaxcult.recipes.narratives import run_stages

    config = _pipeline_files(tmp_path, tiny_chat_model[0])
    _mmlu_files(tmp_path / "mmlu", MMLU_ROWS)
    settings = yaml.safe_load(config.read_text())
    china_tasks = tmp_path / settings["tasks"] / "China"   # a task with its own five labels
    (china_tasks / "fine.jsonl").write_text("".join(
        json.dumps({"text": f"sentence {i}", "label": label}) + "\n"
        for i, label in enumerate(["grp", "prof", "non", "oth"])))
    (china_tasks / "fine.yaml").write_text(FINE_GRAINED)
    settings["build"]["combined"] = True
    settings["mmlu"] = {"path": str(tmp_path / "mmlu"), "subjects": list(MMLU_ROWS)}
    config.write_text(yaml.safe_dump(settings))
    out = tmp_path / "out"
    done = run_stages(config, [], "run", out)
    data = out / "data/all_combined"
    train = [json.loads(line) for line in (data / "China/train.jsonl").read_text().splitlines()]
    assert {r["view"] for r in train} >= {"culture_text", "normad"}
    assert done["build"]["China"]["validation"] == 1
    for split in ("train", "validation"):   # the all-culture adapter's data: every culture's
        assert (data / f"combined/{split}.jsonl").read_text() == "".join(
            (data / f"{c}/{split}.jsonl").read_text() for c in ("China", "Germany"))
    matrix = json.loads((out / "matrix-all_combined.json").read_text())
    assert matrix["rows"] == ["base", "China", "Germany", "combined"]
    assert np.array(matrix["matrix"]).shape == (4, 2)
    assert 0.0 <= matrix["c_dist"] <= 1.0 and set(matrix["n"]) == {"China", "Germany"}
    assert (out / "matrix-all_combined.png").stat().st_size > 0
    assert (out / "matrix-all_combined.tsv").read_text().startswith("model\tChina\tGermany\n")
    fine = next(t for t in matrix["tasks"]["China"]["China"] if t["task"] == "fine")
    assert list(fine["predicted"]) == ["non", "prof", "grp", "indv", "oth"]
    assert fine["parse_failure_rate"] == 0.0 and sum(fine["predicted"].values()) == 1.0
    mmlu = done["evaluate"]["mmlu"]
    assert list(mmlu) == matrix["rows"] and {r["questions"] for r in mmlu.values()} == {5}
    assert (out / "mmlu-all_combined.tsv").read_text().splitlines()[0].startswith("model\taccuracy")
    rows = {p.name: p.stat().st_mtime_ns for p in (out / "evaluations/all_combined").iterdir()}
    assert set(rows) == {f"{row}{kind}.json" for row in matrix["rows"] for kind in ("", ".mmlu")}
    from flax import nnx

    from jaxcult.config import GenerationConfig
    from jaxcult.eval.offensive import OPTIONS, PROMPT
    from jaxcult.generation.scoring import option_logprobs
    from jaxcult.hub.peft_format import import_peft
    from jaxcult.hub.pretrained import load_pretrained

    base, tokenizer = load_pretrained(tiny_chat_model[0])
    adapted = nnx.clone(base)
    import_peft(adapted, out / "adapters/all_combined/China/peft")
    prompt, settings = [PROMPT.format(text="you fool")], GenerationConfig(length_buckets=[256])
    margins = [option_logprobs(m, tokenizer, prompt, [OPTIONS], settings, add_special_tokens=True)[0]
               for m in (base, adapted)]
    assert not np.allclose(margins[0], margins[1], atol=1e-4)   # the trained adapter is applied
    again = run_stages(config, [], "evaluate", out)["evaluate"]   # every row reused
    assert again["matrix"] == matrix["matrix"]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "evaluations/all_combined").iterdir()} == rows
    resolved = {p.name: p.read_text() for p in out.glob("*.yaml")}
    train = tmp_path / "train.yaml"  # other training settings: the trained adapters are stale
    train.write_text(train.read_text().replace("lr: 0.05", "lr: 0.01"))
    with pytest.raises(UserError, match=r"its train outputs were made with other settings "
                       r"\(runs\.China\.optimizer\.lr"):
        run_stages(config, [], "train", out)
    assert {p.name: p.read_text() for p in out.glob("*.yaml")} == resolved


def test_command_errors_name_the_missing_source_and_exit_2(tiny_chat_model, tmp_path):
    config = _pipeline_files(tmp_path, tiny_chat_model[0])
    cases = {("build.scenario=normad_only", "normad=null"):
             "build.scenario=normad_only uses the normad view: set normad",
             ("cultures=[{name: Peru}]",): "no respondents of 'Peru'",
             ("build.scenario=normad_only", "cultures=[{name: Peru}]"): "no story of ['Peru']",
             ("cultures=[{name: base}]",): "'base' cannot name a culture",
             ("cultures=[{name: combined}]",): "'combined' cannot name a culture",
             ("build.combined=true", "cultures=[{name: China}]"):
             "build.combined: an all-culture adapter needs at least two cultures"}
    for overrides, message in cases.items():
        result = subprocess.run([sys.executable, "-m", "jaxcult.cli", "narratives", "build",
                                 str(config), "--out", str(tmp_path / "o"), *overrides],
                                capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr


def test_the_paper_configs_state_the_official_quantisation_and_dtypes(repo):
    """Surveys→Narratives: NF4 without double quantisation, float16 compute, the rest float32;
    CLCA: NF4 with double quantisation, bfloat16 compute, the rest float16."""
    from jaxcult.config_loading import load_config

    model = load_config(repo / "experiments" / "narratives" / "train" / "llama-3.1-8b.yaml", []).model
    assert (model.quantize, model.quantize_double, model.compute_dtype, model.dtype) == (
        "nf4", False, "float16", "float32")
    papers = [p for p in (repo / "experiments" / "clca" / "train").glob("*.yaml")
              if p.stem not in ("base", "demo-smollm2")]
    assert len(papers) == 7
    for path in papers:
        model = load_config(path, []).model
        assert (model.quantize, model.quantize_double, model.compute_dtype, model.dtype) == (
            "nf4", True, "bfloat16", "float16"), path
