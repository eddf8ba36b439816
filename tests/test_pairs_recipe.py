"""`jaxcult pairs`: sample, judge, build, train and evaluate on a tiny random chat Llama; the
judge's rating against a brute-force reading of its option log-probs; ties, duplicates and
unscorable judgements counted, never silently dropped."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from jaxcult.data.preference import check_pair
from jaxcult.errors import UserError
from jaxcult.recipes.pairs import RECIPE
from jaxcult.recipes.pairs.stages import pairs_of
from jaxcult.recipes.runner import run_recipe

PROMPTS = ["How do people greet in Japan?", "What is Diwali?", "Is tipping usual in Peru?",
           "What is fika?", "How is Nowruz celebrated?", "What is a siesta?"]


@pytest.fixture
def pairs_config(tiny_chat_model, tmp_path):
    root = tiny_chat_model[0]
    (tmp_path / "prompts.jsonl").write_text("".join(
        json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({
        "task": {"objective": "dpo", "beta": 0.5}, "model": {"name": str(root), "max_length": 128},
        "peft": {"kind": "lora", "lora_r": 4, "lora_alpha": 8.0, "target_modules": ["q", "v"]},
        "schedule": {"name": "standard"}, "fisher": {"track_every": 0},
        "optimizer": {"lr": 0.01}, "trainer": {"steps": 2, "batch_size": 2, "eval_batch_size": 4},
        "logging": {"tensorboard": False, "progress": "off"},
        "checkpoint": {"async_save": False, "every": 0}}))
    config = tmp_path / "pairs.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny-pairs", "prompts": "prompts.jsonl",
        "sample": {"model": str(root), "samples_per_prompt": 3, "prompts_per_batch": 4,
                   "system": "Be brief.",
                   "generation": {"max_new_tokens": 6, "batch_size": 12, "length_buckets": [64]}},
        "judge": {"min_option_mass": 0.0, "generation": {"batch_size": 8,
                                                         "length_buckets": [256]}},
        "build": {"min_margin": 0.0, "validation_share": 0.34},
        "train": {"config": "train.yaml"},
        "evaluate": {"generation": {"max_new_tokens": 6, "length_buckets": [64]}}}))
    return config


def test_every_stage_runs_and_pairs_train_a_preference_adapter(pairs_config, tmp_path):
    out = tmp_path / "out"
    facts = run_recipe(RECIPE, "run", pairs_config, [], out)
    assert facts["sample"]["replies"] == 3 * len(PROMPTS)
    build = facts["build"]
    assert build["held_out_prompts"] == 2
    assert sum(build["pairs"].values()) + sum(build["prompts_without_pair"].values()) == len(PROMPTS)
    for split in ("train", "validation"):
        for number, line in enumerate((out / "pairs" / f"{split}.jsonl").read_text().splitlines()):
            pair = check_pair(json.loads(line), f"{split}:{number}")   # a valid preference record
            assert pair["scores"]["chosen"] >= pair["scores"]["rejected"]
            assert pair["messages"][0] == {"role": "system", "content": "Be brief."}
            assert pair["made_by"]["sampler"].endswith("tiny-chat0")
    held_out = {json.loads(line)["id"] for line in
                (out / "pairs" / "validation.jsonl").read_text().splitlines()}
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert {r["id"] for r in evaluation["replies"]["trained"]} >= held_out
    assert evaluation["base"]["scored"] + evaluation["base"]["unscorable"] == 2
    assert (out / "adapter" / "peft" / "adapter_config.json").exists()
    assert "rewards/margins" in evaluation["held_out_pairs"]["en"]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"sample", "judge", "build", "train", "evaluate"}


def test_judge_rating_is_the_probability_weighted_mean_of_its_options(pairs_config, tmp_path):
    """Against one forward per option (`generation.scoring.score`), read by hand."""
    from jaxcult.config_loading import load_section
    from jaxcult.generation.scoring import score
    from jaxcult.recipes.pairs.stages import PairsRun

    config = load_section(RECIPE.settings, pairs_config, [])
    run = PairsRun(config, pairs_config.parent, tmp_path / "out")
    judge = run.judge()
    record, reply = {"prompt": PROMPTS[0]}, "People bow."
    found = judge.judge([(record, reply, None), (record, " ", None), (record, "x", "failed")])
    prompt = judge.prompt(record, reply)
    logps = np.array([s.logprob for s in score(judge.model, judge.tokenizer, [prompt] * 5,
                                               list("12345"), add_special_tokens=False)])
    p = np.exp(logps)
    assert found[0].score == pytest.approx(float((np.arange(1, 6) * p).sum() / p.sum()), abs=1e-5)
    assert found[0].option_mass == pytest.approx(float(p.sum()), rel=1e-5)
    assert [j.unscorable for j in found[1:]] == ["empty reply", "failed"]


def test_ties_duplicates_and_unscorable_replies_are_reported():
    replies = [{"text": t} for t in ("a", "b", "a ", "c")]
    judged = [{"score": s} for s in (3.0, 2.0, 1.0, None)]
    assert pairs_of(replies, judged, "best_worst", 0.5) == ([(0, 1)], None)  # "a " repeats "a"
    assert pairs_of(replies, judged, "best_worst", 1.5) == ([], "tie")
    assert pairs_of(replies[2:], judged[2:], "all", 0.0) == ([], "fewer than two distinct "
                                                                 "scored replies")
    three = [{"score": s} for s in (3.0, 2.0, 1.0)]
    assert pairs_of([{"text": t} for t in "xyz"], three, "all", 1.0) == (
        [(0, 1), (0, 2), (1, 2)], None)


def test_changed_settings_are_refused_and_unscorable_judgements_counted(pairs_config, tmp_path):
    out = tmp_path / "out"
    run_recipe(RECIPE, "sample", pairs_config, [], out)
    with pytest.raises(UserError, match="samples_per_prompt"):
        run_recipe(RECIPE, "sample", pairs_config, ["sample.samples_per_prompt=2"], out)
    other = tmp_path / "other"
    other.mkdir()
    for name in ("samples.jsonl", "samples.provenance.json"):
        shutil.copy(out / name, other / name)
    facts = run_recipe(RECIPE, "judge", pairs_config, ["judge.min_option_mass=0.99"], other)
    assert facts["judge"]["unscorable"] == 3 * len(PROMPTS)
    with pytest.raises(UserError, match=r"no train pair \(prompts without a pair: "
                                        r"\{'fewer than two distinct scored replies': 6\}"):
        run_recipe(RECIPE, "build", pairs_config, ["judge.min_option_mass=0.99"], other)


def test_a_bad_prompt_file_names_the_line(pairs_config, tmp_path):
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "ok"}\n{"messages": [{"role": "user"}]}\n')
    with pytest.raises(UserError, match=r"prompts\.jsonl:2: 'messages' must be a non-empty list"):
        run_recipe(RECIPE, "sample", pairs_config, [], tmp_path / "out")


def test_a_killed_sample_stage_resumes_to_the_same_file(pairs_config, tmp_path):
    """Killed after its first prompt batch, mid-write of the second: the rerun drops the torn
    line and samples the rest with the same random streams."""
    out = tmp_path / "out"
    run_recipe(RECIPE, "sample", pairs_config, [], out)
    whole = (out / "samples.jsonl").read_text()
    lines = whole.splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(lines[:4]) + lines[4][:20])  # 4 prompts per batch
    run_recipe(RECIPE, "sample", pairs_config, [], out)
    assert (out / "samples.jsonl").read_text() == whole
