"""Surveys→Narratives (EMNLP 2025): training views against hand-written records, the source
readers and their errors, the offensive-language parser and macro-F1 against hand-computed
values, log-prob answers against transformers, and the pipeline end to end on a tiny model."""

from __future__ import annotations

import json
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
    assert (result.accuracy, result.parse_failure_rate, result.predicted_offensive) == \
        (pytest.approx(3 / 6), pytest.approx(1 / 6), pytest.approx(2 / 6))


def test_task_reader_normalises_labels_and_names_bad_ones(tmp_path):
    good = tmp_path / "t.tsv"
    good.write_text("text\tlabel\nyou fool\tOFF\nnice day\tNOT\n")
    assert read_task(good) == [Example("you fool", True), Example("nice day", False)]
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "maybe"}\n')
    with pytest.raises(UserError, match=r"b.jsonl:2: label 'maybe' is neither offensive"):
        read_task(bad)


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


def test_pipeline_builds_trains_and_writes_the_cross_culture_matrix(tiny_chat_model, tmp_path):
    from jaxcult.recipes.narratives import run_stages

    config = _pipeline_files(tmp_path, tiny_chat_model[0])
    out = tmp_path / "out"
    done = run_stages(config, [], "run", out)
    data = out / "data/all_combined/China"
    train = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    assert {r["view"] for r in train} >= {"culture_text", "normad"}
    assert done["build"]["China"]["validation"] == 1
    matrix = json.loads((out / "matrix-all_combined.json").read_text())
    assert matrix["rows"] == ["base", "China", "Germany"]
    assert np.array(matrix["matrix"]).shape == (3, 2)
    assert 0.0 <= matrix["c_dist"] <= 1.0 and set(matrix["n"]) == {"China", "Germany"}
    assert (out / "matrix-all_combined.png").stat().st_size > 0
    assert (out / "matrix-all_combined.tsv").read_text().startswith("model\tChina\tGermany\n")
    rows = {p.name: p.stat().st_mtime_ns for p in (out / "evaluations/all_combined").iterdir()}
    assert set(rows) == {"base.json", "China.json", "Germany.json"}
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
             ("cultures=[{name: base}]",): "'base' cannot name a culture"}
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
