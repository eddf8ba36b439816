"""Survey evaluation end to end on a tiny random chat model: the WorldValuesBench reader on
synthetic files, log-prob mode against transformers, the command and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from jaxcult.config import GenerationConfig
from jaxcult.data.survey import CLCA_QUESTIONS, load_survey
from jaxcult.data.survey_synthetic import write_synthetic_worldvaluesbench
from jaxcult.errors import UserError
from jaxcult.eval.survey_prompts import PromptTexts, chat, load_prompt_texts, sample_personas

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BUCKETS = "length_buckets=[512,1024]"


@pytest.fixture(scope="module")
def survey_dir(tmp_path_factory):
    return write_synthetic_worldvaluesbench(tmp_path_factory.mktemp("wvb"), ("China", "Germany"),
                                            respondents=12, seed=3)


def test_reader_gives_clca_questions_scales_and_personas(survey_dir):
    survey = load_survey(survey_dir)
    assert [q.id for q in survey.questions] == list(CLCA_QUESTIONS)
    assert sorted((q.high - q.low + 1) for q in survey.questions).count(2) == 20
    assert {c: len(p) for c, p in survey.respondents.items()} == {"China": 12, "Germany": 12}
    only = load_survey(survey_dir, cultures=["China"])      # the value file streamed, filtered
    assert list(only.respondents) == ["China"] and only.respondents["China"] == survey.respondents["China"]
    codes = [(p.answers[q], c) for p in only.respondents["China"] for q, c in p.codes.items()]
    assert codes and all(a is None and c < 0 for a, c in codes)  # the raw codes of missing answers
    person = survey.respondents["China"][0]
    assert set(person.demographics) >= {"Gender", "Age", "Social class"}
    assert all(a is None or 1 <= a <= 5 for a in person.answers.values())
    assert sample_personas(survey.respondents["China"], 5, 1) == \
        sample_personas(survey.respondents["China"], 5, 1)
    with pytest.raises(UserError, match="13 personas requested but China has only 12"):
        sample_personas(survey.respondents["China"], 13, 1)
    system = chat(person, survey.questions[0], "persona", PromptTexts())[0]["content"]
    assert system.startswith("You live in China. Your basic demographic information:\n")
    assert len(chat(person, survey.questions[0], "none", PromptTexts())) == 1


def test_the_tao_baseline_is_an_average_person_born_in_and_living_in_the_country(survey_dir,
                                                                                 tmp_path):
    """The CLCA paper's cultural-prompting baseline (Tao et al., 2024): the system prompt asks
    for an average person who was born in and lives in the country, answering a survey question;
    a translation file may replace it (the country placeholder required)."""
    survey = load_survey(survey_dir, cultures=["Germany"])
    person = survey.respondents["Germany"][0]
    system = chat(person, survey.questions[0], "tao", PromptTexts())[0]["content"]
    assert "average person" in system and "survey question" in system
    assert "born in Germany" in system and "lives in Germany" in system
    assert person.demographics["Gender"] not in system.split("Germany")
    translated = tmp_path / "de.json"
    translated.write_text(json.dumps({"tao": "Durchschnittsmensch aus {country}.",
                                      "countries": {"Germany": "Deutschland"}}))
    texts = load_prompt_texts(translated)
    assert chat(person, survey.questions[0], "tao", texts)[0]["content"] == \
        "Durchschnittsmensch aus Deutschland."
    translated.write_text(json.dumps({"tao": "Durchschnittsmensch."}))
    with pytest.raises(UserError, match="'tao' must contain the placeholder {country}"):
        load_prompt_texts(translated)


@pytest.mark.parametrize("one_forward", [True, False])
def test_logprob_mode_equals_transformers(tiny_chat_model, survey_dir, one_forward):
    from jaxcult.eval.survey_eval import option_distributions
    from jaxcult.generation.prompts import render_chat
    from jaxcult.hub.pretrained import load_pretrained

    root, hf, hf_tokenizer = tiny_chat_model
    model, tokenizer = load_pretrained(root)
    survey = load_survey(survey_dir).select(["Q1", "Q7", "Q33", "Q44"])
    person = survey.respondents["Germany"][2]
    chats = [chat(person, q, "cultural", PromptTexts()) for q in survey.questions]
    prompts = [render_chat(c, tokenizer) for c in chats]
    ours = option_distributions(model, tokenizer, prompts, survey.questions,
                                GenerationConfig(batch_size=4, length_buckets=[256, 512]),
                                one_forward=one_forward)
    for q, c, distribution in zip(survey.questions, chats, ours):
        text = hf_tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
        context = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        logps = []
        for option in q.options:
            ids = hf_tokenizer(text + str(option), add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = hf(torch.tensor([ids])).logits[0].double()
            logprobs = torch.log_softmax(logits, -1)
            logps.append(sum(float(logprobs[t - 1, ids[t]]) for t in range(len(context), len(ids))))
        expected = np.exp(np.array(logps) - max(logps))
        np.testing.assert_allclose(distribution[:-1], expected / expected.sum(), atol=1e-4)
        assert distribution[-1] == 0.0


@pytest.mark.parametrize("mode", ["generate", "logprob"])
def test_eval_survey_command_writes_metrics_table_and_plot(tiny_chat_model, survey_dir, tmp_path, mode):
    root = tiny_chat_model[0]
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "jaxcult.cli", "eval-survey", str(root), "--survey", str(survey_dir),
         "--culture", "China", "--culture", "Germany", "--personas", "3", "--questions",
         "Q1,Q7,Q33", "--mode", mode, "--out", str(out), BUCKETS, "batch_size=9",
         "max_new_tokens=10"],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    record = json.loads(next((out / "evaluations").glob("survey-*.json")).read_text())
    assert "definitions:" in result.stdout and "kl_paper_direction:" in result.stdout
    assert record["questions"] == ["Q1", "Q7", "Q33"] and record["mode"] == mode
    assert record["parsing"] == ("official" if mode == "generate" else None)
    for culture in ("China", "Germany"):
        metrics = record["cultures"][culture]
        assert metrics["kl_official"] >= 0
        # undefined only where the tiny random model never gave an option
        assert metrics["kl_paper_direction"] >= 0 or metrics["parse_failure_rate"] == 1
        assert 0 <= metrics["js_distance"] <= np.sqrt(np.log(2)) + 1e-9
        assert 0 <= metrics["individual_accuracy"] <= metrics["answered_accuracy"] <= 1
        for q in record["per_question"][culture]:
            assert sum(q["model"]) == pytest.approx(1) and sum(q["survey"]) == pytest.approx(1)
            assert q["survey"][-1] == 0  # missing survey answers count in no bin
    if mode == "logprob":
        assert record["average"]["parse_failure_rate"] == 0
    rows = (out / "survey-questions.tsv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3
    assert (out / "survey-worst.png").stat().st_size > 0


@pytest.mark.parametrize("args,message", [
    (["--culture", "Atlantis"],
     "full_demographic_qa.tsv: no respondents of 'Atlantis' (cultures: China, Germany)"),
    (["--culture", "China", "--personas", "50"], "50 personas requested but China has only 12"),
    (["--culture", "China", "--mode", "vote"], "--mode: expected one of generate, logprob"),
    (["--culture", "China", "--questions", "Q1,Q999"], "unknown question ids ['Q999']"),
    (["--culture", "China", "do_sample=true"], "do_sample=true is not the paper's protocol"),
    (["--culture", "China", "--concurrency", "4"], "--concurrency: only with --endpoint"),
    (["--culture", "China", "--api-key-env", "K"], "--api-key-env: only with --endpoint"),
    (["--culture", "China", "--endpoint", "http://127.0.0.1:9/v1", "batch_size=4"],
     "batch_size=4: shapes local decoding only"),
    (["--culture", "China", "--personas", "3", "--endpoint", "http://127.0.0.1:9/v1",
      "--concurrency", "0"],
     "--concurrency: Input should be greater than 0"),
])
def test_eval_survey_errors_are_one_line(tiny_chat_model, survey_dir, tmp_path, args, message):
    result = subprocess.run(
        [sys.executable, "-m", "jaxcult.cli", "eval-survey", str(tiny_chat_model[0]), "--survey",
         str(survey_dir), "--out", str(tmp_path / "out"), *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}" or \
        message in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
