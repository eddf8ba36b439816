"""`jaxcult care`: the released annotation schema, the strategies, the seven-metric judge against
a hand computation from a tiny Llama's logits, every stage on that model (resume, provenance,
training refused without permission), and bad input as one line with exit code 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import require_asset

from jaxcult.cli import main
from jaxcult.errors import UserError
from jaxcult.eval.agreement import kendall_tau_b, spearman
from jaxcult.recipes.care import RECIPE
from jaxcult.recipes.care.adapt import best_and_worst
from jaxcult.recipes.care.judge import normalised
from jaxcult.recipes.care.report import mentions_signal
from jaxcult.recipes.care.schema import CULTURES, check_annotation, read_annotations
from jaxcult.recipes.care.strategies import load_strategies
from jaxcult.recipes.runner import run_recipe

RELEASED = os.environ.get("JAXCULT_CULTURECARE_DATA")   # the official repository's data folder
RUBRIC = {"warmth": {"group": "emotional", "definition": "Is the reply warm?",
                     "scale": {1: "cold", 2: "cool", 3: "neutral", 4: "warm", 5: "very warm"}},
          "clarity": {"definition": "Is it clear?",
                      "scale": {1: "no", 2: "barely", 3: "somewhat", 4: "mostly", 5: "yes"}}}


def _annotation(culture: str, post_id: str, **post) -> dict:
    return {"culture": culture, "post_id": post_id, "post": {
        "text": f"https://example.invalid/{post_id}",
        "emotional_distress": [{"phrase": "I feel alone", "intensity": "high"}],
        "cultural_signals": [{"phrase": "Spring Festival", "type": "Concepts"}],
        "demographic_info": {"age": "unknown"}, **post},
        "response": {"emotional_support": [{"phrase": "Hang in there", "strategy": "Others"}],
                     "cultural_signals": [], "empathy_score": "3 moderately empathetic"}}


@pytest.fixture
def care_config(tiny_chat_model, tmp_path):
    root = tiny_chat_model[0]
    folder = tmp_path / "annotations"
    folder.mkdir()
    texts = []
    for culture in ("Chinese", "German"):
        with open(folder / f"{culture}_data.jsonl", "w") as f:
            for n in range(3):
                f.write(json.dumps(_annotation(culture, f"{culture[:2]}{n}")) + "\n")
                texts.append({"post_id": f"{culture[:2]}{n}",
                              "text": f"Post {n}: I feel alone before Spring Festival."})
    (tmp_path / "posts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    (tmp_path / "rubrics.yaml").write_text(yaml.safe_dump(RUBRIC))
    train = {"model": {"name": str(root), "max_length": 512},
             "peft": {"kind": "lora", "lora_r": 2, "lora_alpha": 4.0, "target_modules": ["q", "v"]},
             "schedule": {"name": "standard"}, "fisher": {"track_every": 0},
             "optimizer": {"lr": 0.01}, "trainer": {"steps": 2, "batch_size": 2,
                                                    "eval_batch_size": 2},
             "logging": {"tensorboard": False, "progress": "off"},
             "checkpoint": {"async_save": False, "every": 0}}
    (tmp_path / "distill.yaml").write_text(yaml.safe_dump(train))
    (tmp_path / "prefer.yaml").write_text(yaml.safe_dump(
        {**train, "task": {"objective": "dpo", "beta": 0.5}}))
    config = tmp_path / "care.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny-care", "annotations": "annotations", "posts": "posts.jsonl",
        "cultures": ["Chinese", "German"], "posts_may_train": True,
        "strategies": ["baseline", "combined"],
        "generate": {"model": str(root), "posts_per_batch": 4, "generation": {
            "max_new_tokens": 6, "batch_size": 4, "length_buckets": [512, 2048]}},
        "judge": {"rubrics": "rubrics.yaml", "metrics": ["warmth", "clarity", "fluency"],
                  "min_option_mass": 0.0, "replies_per_batch": 8,
                  "generation": {"batch_size": 8, "length_buckets": [1024]}},
        "split": {"held_out_share": 0.34},
        "distill": {"train": {"config": "distill.yaml"}},
        "prefer": {"min_margin": 0.0, "per_culture": False, "train": {"config": "prefer.yaml"}}}))
    return config


def test_released_schema_with_nulls_and_empty_labels():
    record = _annotation("Jewish", "x1", cultural_signals=None)
    record["post"]["emotional_distress"][0]["intensity"] = None
    record["response"]["cultural_signals"] = [{"phrase": "shul", "type": "None"}]
    record["response"]["empathy_score"] = ""
    post = check_annotation(record, "f:1")
    assert post.signals == () and post.distress[0].label is None and post.empathy is None
    assert post.reply_signals[0].label is None and post.support[0].label == "Others"
    record["post"]["emotional_distress"][0]["intensity"] = "extreme"
    with pytest.raises(UserError, match=r"f:1: intensity 'extreme' is not one of light, mod"):
        check_annotation(record, "f:1")


@pytest.mark.skipif(not RELEASED, reason="set JAXCULT_CULTURECARE_DATA to the official data folder")
def test_the_four_released_files_read_unchanged(tmp_path):
    folder = Path(RELEASED)
    posts = {c: read_annotations(folder, c) for c in CULTURES}
    assert {c: len(p) for c, p in posts.items()} == {"Arabic": 110, "Chinese": 141,
                                                     "German": 119, "Jewish": 92}
    (tmp_path / "posts.jsonl").write_text("".join(
        json.dumps({"post_id": p[0].post_id, "text": "a post"}) + "\n" for p in posts.values()))
    (tmp_path / "care.yaml").write_text(yaml.safe_dump({"annotations": str(folder),
                                                        "posts": "posts.jsonl"}))
    facts = run_recipe(RECIPE, "read", tmp_path / "care.yaml", [], tmp_path / "out")["read"]
    totals = {k: sum(c[k] for c in facts["annotations"].values())
              for k in facts["annotations"]["Arabic"]}
    assert totals == {"posts": 462, "distress_spans": 1729, "post_signals": 1190,
                      "reply_signals": 334, "support_strategies": 1043}
    assert facts["posts_used"] == dict.fromkeys(CULTURES, 1)
    assert facts["posts_without_text"]["count"] == 458


def test_strategies_render_the_annotations_and_templates_add_strategies(tmp_path):
    post = check_annotation(_annotation("Chinese", "z"), "f:1")
    from dataclasses import replace

    post = replace(post, text="My exam went badly.")
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(
        {"short": {"user": "{post} ({culture})"}}))
    found = load_strategies(["baseline", "combined", "short"], tmp_path / "extra.yaml")
    combined = "\n".join(m["content"] for m in found["combined"].chat(post))
    for text in ("Chinese", "My exam went badly.", '"I feel alone" (intensity: high)',
                 '"Spring Festival" (type: Concepts)', "Norms and Morals"):
        assert text in combined
    baseline = "\n".join(m["content"] for m in found["baseline"].chat(post))
    assert "Spring Festival" not in baseline and "Chinese" not in baseline
    assert found["short"].chat(post) == [{"role": "user", "content": "My exam went badly. (Chinese)"}]
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump({"bad": {"user": "{post} {mood}"}}))
    with pytest.raises(UserError, match=r"unknown field \{mood\}"):
        load_strategies(["bad"], tmp_path / "extra.yaml")


def test_judge_scores_equal_a_hand_computation_from_the_logits(care_config, tiny_chat_model,
                                                               tmp_path):
    """p(digit) from the transformers model's logits at the answer position, by hand."""
    import torch

    from jaxcult.config_loading import load_section
    from jaxcult.recipes.care.run import CareRun

    _, hf, tokenizer = tiny_chat_model
    run = CareRun(load_section(RECIPE.settings, care_config, []), care_config.parent,
                  tmp_path / "out")
    judge = run.judge(next(iter(run.judge_specs().values())))
    post, reply = run.posts[0].text, "That sounds hard; call your sister tonight."
    found = judge.judge([(post, reply, None), (post, "", None)])[0]
    digits = [tokenizer.convert_tokens_to_ids(d) for d in "12345"]
    mean = []
    for name, metric_judge in judge.judges.items():
        ids = tokenizer(metric_judge.prompt({"prompt": post}, reply), add_special_tokens=False,
                        return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = hf(ids).logits[0, -1].double()
        p = torch.softmax(logits, -1)[digits].numpy()
        digit = int(p.argmax()) + 1
        result = found["metrics"][name]
        assert result["digit"] == digit
        assert result["probability"] == pytest.approx(p[digit - 1], abs=1e-5)
        assert result["weighted"] == pytest.approx(digit * p[digit - 1], abs=1e-5)
        assert result["expected"] == pytest.approx((np.arange(1, 6) * p).sum() / p.sum(), abs=1e-5)
        mean.append(digit * p[digit - 1])
    assert found["normalised"] == pytest.approx(np.mean(mean), abs=1e-5)   # the official mean
    assert list(found["metrics"]) == ["warmth", "clarity", "fluency"]
    empty = judge.judge([(post, "", None)])[0]
    assert empty["normalised"] is None and empty["metrics"]["warmth"]["unscorable"] == "empty reply"


def test_official_normalised_score_and_pairs():
    metrics = {m: {"weighted": w} for m, w in zip("abc", (4 * 0.5, 3 * 0.9, 5 * 0.2))}
    assert normalised(metrics) == pytest.approx((2.0 + 2.7 + 1.0) / 3)
    assert normalised({**metrics, "d": {"weighted": None}}) is None
    assert best_and_worst([(0.5, "a"), (0.9, "b"), (0.1, "a ")], 0.1) == ((0.9, "b"), (0.5, "a"))
    assert best_and_worst([(0.5, "a"), (0.52, "b")], 0.1) == "tie"
    assert best_and_worst([(0.5, "a"), (0.7, "a")], 0.0) == "fewer than two distinct scored replies"


def test_agreement_equals_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(1, 6, 40).astype(float), rng.integers(1, 6, 40).astype(float)
    b[:20] = a[:20]
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert kendall_tau_b(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_signal_mentions():
    post = check_annotation(_annotation("Chinese", "z"), "f:1")
    assert mentions_signal("Enjoy the festival with friends.", post)
    assert not mentions_signal("Take care of yourself.", post)
    chinese = check_annotation(_annotation(
        "Chinese", "y", cultural_signals=[{"phrase": "春节", "type": "Concepts"}]), "f:1")
    assert mentions_signal("春节快乐", chinese)
    no_signal = check_annotation(_annotation("Chinese", "w", cultural_signals=[]), "f:1")
    assert mentions_signal("anything", no_signal) is None


def test_every_stage_runs_resumes_and_reports(care_config, tmp_path):
    out = tmp_path / "out"
    facts = run_recipe(RECIPE, "generate", care_config, [], out)
    assert facts["generate"]["replies"] == 2 * 6
    whole = (out / "replies.jsonl").read_text()
    lines = whole.splitlines(keepends=True)
    (out / "replies.jsonl").write_text("".join(lines[:4]) + lines[4][:15])   # killed mid-batch
    run_recipe(RECIPE, "generate", care_config, [], out)
    assert (out / "replies.jsonl").read_text() == whole                    # same replies again
    with pytest.raises(UserError, match="generation differ"):
        run_recipe(RECIPE, "generate", care_config, ["generate.generation.temperature=0.9"], out)
    facts = run_recipe(RECIPE, "run", care_config, [], out)
    assert list(facts) == ["read", "generate", "judge", "distill", "prefer", "report"]
    assert facts["judge"]["judged"] == 12
    assert set(facts["distill"]["groups"]) == {"Chinese", "German"}       # one per culture
    assert facts["distill"]["groups"]["German"]["held_out_posts"] == 1
    assert facts["prefer"]["groups"]["all"]["held_out_posts"] == 2        # one for both
    for stage, group in (("distill", "German"), ("prefer", "all")):
        assert facts[stage]["judged"]["judged"] == 2
        assert (out / stage / "adapters" / group / "peft" / "adapter_config.json").exists()
    rows = [json.loads(x) for x in (out / "distill/data/Chinese/train.jsonl").read_text().splitlines()]
    assert rows[0]["messages"][-1]["role"] == "assistant" and "Annotations" not in json.dumps(rows)
    report = json.loads((out / "report.json").read_text())
    assert report["strategies"] == ["baseline", "combined", "distilled", "preferred"]
    assert report["table"]["all"]["baseline"]["replies"] == 6
    assert report["table"]["German"]["distilled"]["replies"] == 1
    assert report["paired_with_baseline"]["all"]["combined"]["posts"] <= 6
    assert (out / "plots" / "normalised.png").exists() and "| culture |" in (
        out / "report.md").read_text()


def test_two_judges_agree_in_the_report(care_config, tmp_path, tiny_chat_model):
    from jaxcult.config_loading import load_section
    from jaxcult.recipes.care.report import write_report
    from jaxcult.recipes.care.run import CareRun
    from jaxcult.recipes.care.stages import generate, judge

    second = tmp_path / "second"
    second.symlink_to(tiny_chat_model[0])
    config = load_section(RECIPE.settings, care_config, [f"judge.second_model={second}",
                                                         "cultures=[German]"])
    run = CareRun(config, care_config.parent, tmp_path / "out")
    generate(run)
    assert set(judge(run)) == {"judged", str(tiny_chat_model[0]), str(second)}
    facts = write_report(run)
    agreement = facts["agreement_normalised"]
    assert agreement["replies"] == 6 and agreement["spearman"] == pytest.approx(1.0)


def _exit_2(argv: list[str], capsys, match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


def test_bad_input_is_one_line_with_exit_2(care_config, tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    _exit_2(["care", "read", str(care_config), "strategies=[baseline,combined,empathic]", *out], capsys,
            "unknown strategy 'empathic'")
    rubric = {"warmth": {**RUBRIC["warmth"], "scale": {1: "a", 2: "b", 4: "d", 5: "e"}}}
    (tmp_path / "rubrics.yaml").write_text(yaml.safe_dump(rubric))
    _exit_2(["care", "read", str(care_config), *out], capsys,
            "metric 'warmth': scale point 3 is missing")
    (tmp_path / "rubrics.yaml").write_text(yaml.safe_dump(RUBRIC))
    posts = (tmp_path / "posts.jsonl").read_text()
    (tmp_path / "posts.jsonl").write_text(posts + posts.splitlines()[0] + "\n")
    _exit_2(["care", "read", str(care_config), *out], capsys, "post id 'Ch0' appears twice")
    (tmp_path / "posts.jsonl").write_text(posts)
    _exit_2(["care", "distill", str(care_config), "posts_may_train=false", *out], capsys,
            "set posts_may_train: true only if their terms allow it")
    _exit_2(["care", "read", str(care_config), "distill=null", "prefer=null", *out], capsys,
            "care.posts_may_train has no effect here: it only applies with a distill or prefer")
    _exit_2(["care", "read", str(care_config), "judge.model={endpoint: 'http://x:1/v1', model: m}",
             *out], capsys, "judge.generation has no effect here")
    assert main(["care", "read", str(care_config), *out]) == 0
    (tmp_path / "posts.jsonl").write_text("".join(posts.splitlines(keepends=True)[1:]))
    facts = run_recipe(RECIPE, "read", care_config, [], tmp_path / "out")["read"]
    assert facts["posts_without_text"] == {"count": 1, "ids": ["Ch0"]}
    assert facts["posts_used"] == {"Chinese": 2, "German": 3}


@pytest.mark.slow   # ~7.5 min on 2 cores
def test_the_offline_demo_runs_every_stage(tmp_path):
    require_asset("smollm2-135m-instruct")
    demo = Path(__file__).resolve().parent.parent / "experiments" / "care" / "demo.yaml"
    assert main(["care", "run", str(demo), "--out", str(tmp_path / "demo")]) == 0
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["table"]["all"]["baseline"]["replies"] == 12
    assert report["table"]["all"]["distilled"]["replies"] == 4
    assert report["table"]["all"]["preferred"]["replies"] == 4
    assert all(cell["unscorable"] == 0 for cell in report["table"]["all"].values())
