"""VQA: the vision-language encoder against hand computations, the xGQA scorer against IGLUE's
published zero-shot table, a tiny end-to-end run with every switch, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcult.cli import main
from jaxcult.data.visual import VisualTable, VisualTokens, grid_tokens, locations
from jaxcult.models.encoder import Encoder, EncoderConfig
from jaxcult.models.layers import KeySplitter
from jaxcult.models.vision_language import VisionLanguageModel
from tests.conftest import needs_minilm, tiny_model_yaml

# IGLUE (Bugliarello et al., ICML 2022), xGQA zero-shot accuracy (%), few-shot test split:
# en, then the 7 targets, then their mean
IGLUE_ZERO_SHOT = {
    "uc2": (55.19, {"bn": 19.99, "de": 42.85, "id": 28.67, "ko": 21.36, "pt": 30.42, "ru": 31.00,
                    "zh": 31.16}, 29.35),
    "m3p": (53.75, {"bn": 18.64, "de": 33.42, "id": 32.48, "ko": 25.11, "pt": 31.40, "ru": 27.50,
                    "zh": 28.65}, 28.17),
    "ctrl_xuniter": (54.83, {"bn": 10.80, "de": 34.83, "id": 33.73, "ko": 12.12, "pt": 22.13,
                             "ru": 18.84, "zh": 19.55}, 21.72),
    "ctrl_muniter": (54.68, {"bn": 3.06, "de": 23.95, "id": 9.36, "ko": 4.21, "pt": 13.67,
                             "ru": 8.49, "zh": 7.03}, 9.97),
}


def _tiny_vl(head: str = "iglue", location_dim: int = 5):
    config = EncoderConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=24, model_type="xlm-roberta", pad_token_id=1,
                           type_vocab_size=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    encoder = Encoder(config, rngs=nnx.Rngs(0))
    return encoder, VisionLanguageModel(encoder, 7, feature_dim=6, location_dim=location_dim,
                                        head=head, seed=1)


def test_no_visual_tokens_is_the_text_encoder_and_visual_tokens_match_a_hand_computation():
    encoder, model = _tiny_vl()
    ids = jnp.asarray([[0, 5, 9, 2, 1], [0, 7, 2, 1, 1]])
    mask = (ids != 1).astype(jnp.int32)
    text = jax.jit(lambda i, m: encoder(i, m).last_hidden_state)(ids, mask)
    out = jax.jit(lambda i, m: model.encode(i, m, jnp.zeros((2, 0, 6)), jnp.zeros((2, 0, 5)),
                                            jnp.zeros((2, 0), jnp.int32), KeySplitter(None))[0])(ids, mask)
    assert np.abs(np.asarray(out.last_hidden_state) - np.asarray(text)).max() <= 1e-6

    features = np.random.default_rng(0).normal(size=(2, 3, 6)).astype(np.float32)
    boxes = np.asarray([[0, 0, .5, .5], [.5, 0, 1, .5], [0, .5, 1, 1]], np.float32)
    locs = np.broadcast_to(locations(boxes, 5), (2, 3, 5))
    v = model.head.visual
    hand = (features @ np.asarray(v.feature.kernel[...]) + np.asarray(v.feature.bias[...])
            + locs @ np.asarray(v.location.kernel[...]) + np.asarray(v.location.bias[...])
            + np.asarray(v.type_embedding[...]))
    assert np.abs(np.asarray(jax.jit(v.summed)(features, locs)) - hand).max() <= 1e-5
    normed = (hand - hand.mean(-1, keepdims=True)) / np.sqrt(hand.var(-1, keepdims=True) + 1e-12)
    expected = normed * np.asarray(v.layer_norm.scale[...]) + np.asarray(v.layer_norm.bias[...])
    assert np.abs(np.asarray(jax.jit(v)(features, locs)) - expected).max() <= 1e-4
    # attended visual tokens change the answer; masked-out ones do not count
    run = jax.jit(lambda visual_mask: model(ids, mask, features, locs, visual_mask))
    full, blind = run(jnp.ones((2, 3), jnp.int32)), run(jnp.zeros((2, 3), jnp.int32))
    assert full.shape == (2, 7) and not np.allclose(full, blind)


def test_locations_grid_boxes_and_the_visual_table():
    boxes = np.asarray([[0.1, 0.2, 0.5, 0.6]], np.float32)
    assert np.allclose(locations(boxes, 5), [[0.1, 0.2, 0.5, 0.6, 0.16]])
    assert np.allclose(locations(boxes, 7), [[0.1, 0.2, 0.5, 0.6, 0.16, 0.4, 0.4]])
    tokens = grid_tokens(np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4))
    assert tokens.features.shape == (6, 4)
    assert np.allclose(tokens.boxes[4], [1 / 3, 0.5, 2 / 3, 1.0])  # row 1, column 1
    small = VisualTokens(np.ones((2, 4), np.float32), tokens.boxes[:2])
    table = VisualTable.build([tokens, small], max_regions=4, location_dim=5, global_token=True)
    assert table.features.shape == (2, 5, 4) and table.mask.tolist() == [[1] * 5, [1, 1, 1, 0, 0]]
    assert np.allclose(table.features[1, 0], 1.0) and np.allclose(table.boxes[0, 0], [0, 0, 1, 1, 1])


def test_scorer_reproduces_iglue_zero_shot_table(shared_data):
    from jaxcult.run.vqa_score import score_folder

    for model, (english, targets, mean) in IGLUE_ZERO_SHOT.items():
        scores = score_folder(shared_data / "iglue_xgqa" / "zero_shot" / model, shared_data,
                              "fewshot_test")
        langs = scores["languages"]
        assert {m["count"] for m in langs.values()} == {9666}
        assert abs(100 * langs["en"]["accuracy"] - english) < 0.006, model
        for lang, value in targets.items():
            assert abs(100 * langs[lang]["accuracy"] - value) < 0.006, (model, lang)
        assert abs(100 * scores["target_mean"] - mean) < 0.006, model
        assert langs["ko"]["by_structural"]["verify"]["count"] == 270
    # UC2 collapses onto yes/no in Korean (gold: ~36%); its English does not
    langs = score_folder(shared_data / "iglue_xgqa" / "zero_shot" / "uc2", shared_data,
                         "testdev")["languages"]
    assert langs["en"]["count"] == 12578
    assert langs["ko"]["yes_no_share"] > 0.9 > 0.5 > langs["en"]["yes_no_share"]


def test_score_command_errors(tmp_path, shared_data, capsys):
    folder = tmp_path / "preds"
    folder.mkdir()
    assert main(["vqa", "score", str(folder), "--data", str(shared_data)]) == 2
    assert "no prediction files" in capsys.readouterr().err
    (folder / "de.json").write_text(json.dumps([{"questionId": "201307251", "prediction": "no"}]))
    assert main(["vqa", "score", str(folder), "--data", str(shared_data)]) == 2
    assert "no prediction for 9665 of the split's 9666 questions" in capsys.readouterr().err


# --- a tiny xGQA-layout dataset with region features, trained end to end -------------------------

ANSWERS = ["yes", "no", "red", "blue", "circle"]


def _write_xgqa(root: Path, feature_dim: int = 8) -> None:
    rng = np.random.default_rng(0)
    annotations = root / "gqa_iglue" / "datasets" / "gqa" / "annotations"
    annotations.mkdir(parents=True)
    (annotations / "trainval_label2ans.json").write_text(json.dumps(ANSWERS))
    features = root / "features"
    features.mkdir()
    for image in range(6):
        n = 3 + image % 3
        xy = rng.uniform(0, 40, (n, 2))
        np.savez(features / f"img{image}.npz", features=rng.normal(size=(n, feature_dim)),
                 boxes=np.concatenate([xy, xy + 20], 1), image_w=64, image_h=64)
    questions = [("is it red?", "yes", "verify"), ("what colour is it?", "blue", "query"),
                 ("is there a circle?", "no", "verify"), ("what shape is it?", "circle", "query")]
    train = [{"question_id": f"t{i}", "img_id": f"img{i % 4}", "sent": q, "label": {a: 1.0},
              "types": {"structural": t}} for i, (q, a, t) in enumerate(questions * 4)]
    (annotations / "train.json").write_text(json.dumps(train))
    (annotations / "valid.json").write_text(json.dumps(train[:4]))
    for lang in ("en", "de"):
        for kind, name in (("few_shot", "dev.json"), ("zero_shot", "testdev_balanced_questions.json")):
            folder = root / "xgqa" / "data" / kind / lang
            folder.mkdir(parents=True)
            folder.joinpath(name).write_text(json.dumps({
                f"q{i}": {"question": f"{lang}: {q}", "answer": a, "imageId": f"img{4 + i % 2}",
                          "types": {"structural": t, "semantic": "attr"}}
                for i, (q, a, t) in enumerate(questions)}))


def _config(tmp_path: Path, extra: str = "") -> Path:
    root = tmp_path / "data"
    if not root.exists():
        _write_xgqa(root)
    path = tmp_path / "vqa.yaml"
    path.write_text(tiny_model_yaml() + f"""peft:
  kind: full
data:
  name: xgqa
  manual_dir: {root}
  target_languages: [de]
  options: {{features_dir: {root / 'features'}, feature_dim: 8}}
task:
  name: vqa
  options: {{probes: [blind, shuffled], max_regions: 4}}
schedule:
  name: standard
optimizer:
  lr: 1.0e-3
  group_lr: {{embeddings: 0.0}}
trainer:
  steps: 3
  batch_size: 4
checkpoint:
  every: 0
logging:
  tensorboard: false
{extra}""")
    return path


@needs_minilm
def test_tiny_vqa_run_with_probes_types_and_switches(tmp_path):
    from jaxcult.config_loading import load_config
    from jaxcult.run.build import build_run

    run = tmp_path / "run"
    assert main(["train", str(_config(tmp_path)), "--run-dir", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    metrics = summary["metrics"]["de"]
    for key in ("accuracy", "yes_no_share", "blind_accuracy", "shuffled_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert set(metrics["by_structural"]) == {"verify", "query"}
    # switches are config changes only: the sequence head, gold type tokens, 7-d locations, CE
    built = build_run(load_config(_config(tmp_path), [
        "task.options.head=sequence", "task.options.type_token=gold",
        "task.options.location_dim=7", "task.options.loss=ce", "task.options.global_token=true"]))
    assert "head" in built.parts.groups
    split = built.data.tests["de"]
    assert split.arrays["visual_locations"].shape[-1] == 7
    first = built.tokenizer.decode(split.arrays["input_ids"][0])
    assert "verify :" in first


@needs_minilm
@pytest.mark.parametrize("breakage, message", [
    ("dim", "features have dimension 5, expected 8"),
    ("box", "lies outside the image"),
    ("answer", "answer 'purple' is not in the answer vocabulary"),
    ("image", "no region features for image 'img9'"),
])
def test_bad_vqa_inputs_name_the_record(tmp_path, capsys, breakage, message):
    config = _config(tmp_path)
    root = tmp_path / "data"
    if breakage == "dim":
        np.savez(root / "features" / "img5.npz", features=np.zeros((3, 5)),
                 boxes=np.zeros((3, 4)), image_w=64, image_h=64)
    elif breakage == "box":
        np.savez(root / "features" / "img5.npz", features=np.zeros((3, 8)),
                 boxes=[[0, 0, 10, 10], [0, 0, 70, 10], [1, 1, 2, 2]], image_w=64, image_h=64)
    else:
        path = root / "xgqa" / "data" / "zero_shot" / "de" / "testdev_balanced_questions.json"
        questions = json.loads(path.read_text())
        questions["q1"]["answer" if breakage == "answer" else "imageId"] = (
            "purple" if breakage == "answer" else "img9")
        path.write_text(json.dumps(questions))
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "img5.npz" in err or "q1" in err or "img9" in err


def test_easy_vqa_missing_image_names_the_record(tmp_path):
    from PIL import Image

    from jaxcult.config import DataConfig
    from jaxcult.data.vqa import EasyVqa
    from jaxcult.errors import UserError

    for split in ("train", "test"):
        (tmp_path / split / "images").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(tmp_path / "test" / "images" / "1.png")
    (tmp_path / "answers.txt").write_text("yes\nno\n")
    (tmp_path / "test" / "questions.json").write_text(json.dumps([["is it red?", "yes", 3]]))
    with pytest.raises(UserError, match="record 0: image 3 not found"):
        EasyVqa().read_eval(DataConfig(name="easy_vqa", manual_dir=str(tmp_path)), "de", "test")


def test_group_learning_rate_multipliers():
    import optax

    from jaxcult.config import OptimizerConfig
    from jaxcult.errors import UserError
    from jaxcult.trainers.optim import group_lr_scales, masked_optimizer

    groups = ["head", "layer_0", "embeddings"]
    config = OptimizerConfig(name="sgd", lr=1.0, max_grad_norm=None,
                             group_lr={"layer_*": 0.5, "embeddings": 0.0})
    assert group_lr_scales(config.group_lr, groups) == [1.0, 0.5, 0.0]
    params = {g: {"w": jnp.ones((2, 3 + i))} for i, g in enumerate(groups)}
    grads = jax.tree.map(jnp.ones_like, params)
    optimizer = masked_optimizer(config, groups, optax.constant_schedule(1.0))
    updates, _ = optimizer.update(grads, optimizer.init(params), params,
                                  mask=jnp.ones(3, bool), step=jnp.zeros((), jnp.int32))
    assert [float(updates[g]["w"][0, 0]) for g in groups] == [-1.0, -0.5, 0.0]
    with pytest.raises(UserError, match="'decoder' matches no parameter group"):
        group_lr_scales({"decoder": 0.0}, groups)
