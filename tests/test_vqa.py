"""VQA: the vision-language encoder against hand computations, the xGQA scorer against IGLUE's
published zero-shot table, a tiny end-to-end run with every switch, and bad inputs."""

from __future__ import annotations

import json
import re
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
    rows = json.loads((shared_data / "iglue_xgqa/zero_shot/uc2/test_de_0_result.json").read_text())
    (folder / "de.json").write_text(json.dumps([*rows, {"questionId": "x1", "prediction": "no"}]))
    assert main(["vqa", "score", str(folder), "--data", str(shared_data)]) == 0
    out, err = capsys.readouterr()
    # IGLUE's file answers all 12,578 test-dev questions: 2,912 lie outside the few-shot test
    assert "de.json: 2913 prediction(s) for questions outside the split, not scored" in err
    assert re.search(r"^de .* 9,666 +2,913$", out, re.M), out
    twice = {**rows[0], "prediction": rows[0]["prediction"] + "s"}
    (folder / "de.json").write_text(json.dumps([*rows, twice]))
    assert main(["vqa", "score", str(folder), "--data", str(shared_data)]) == 2
    assert f"de.json: record {len(rows)}: question {rows[0]['questionId']} answered twice" in \
        capsys.readouterr().err


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
    train = [{"question_id": f"t{i}", "img_id": f"img{i % 4}", "sent": q,
              "label": {a: 1.0} if a != "blue" else {"blue": 1.0, "red": 0.3},
              "types": {"structural": t}} for i, (q, a, t) in enumerate(questions * 4)]
    (annotations / "train.json").write_text(json.dumps(train))
    (annotations / "testdev.json").write_text(json.dumps(
        [{"question_id": f"q{i}", "img_id": f"img{4 + i % 2}", "sent": q, "label": {a: 1.0}}
         for i, (q, a, t) in enumerate(questions)]))
    (root / "iglue_xgqa").mkdir()
    (root / "iglue_xgqa" / "gold_aux.json").write_text(json.dumps({
        "types": {f"q{i}": {"structural": t} for i, (q, a, t) in enumerate(questions)},
        "fewshot_split": {"test": ["q0", "q1", "q2", "q3"]}}))
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
  options: {{features: {root / 'features'}, feature_dim: 8}}
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
def test_tiny_vqa_run_with_probes_predicted_types_and_switches(tmp_path, capsys):
    from jaxcult.config_loading import load_config
    from jaxcult.run.build import build_run

    run = tmp_path / "run"
    config = _config(tmp_path, "")
    assert main(["train", str(config), "--run-dir", str(run), "task.options.type_token=predicted"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    metrics = summary["metrics"]["de"]
    for key in ("accuracy", "yes_no_share", "blind_accuracy", "shuffled_accuracy", "type_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert set(metrics["by_structural"]) == {"verify", "query"}
    # the run's predictions are IGLUE's format: `jaxcult vqa score` gives the run's own accuracy
    capsys.readouterr()
    assert main(["vqa", "score", str(run / "predictions"), "--data", str(tmp_path / "data"),
                 "--split", "testdev", "--out", str(tmp_path / "scores.json"),
                 "--plot", str(tmp_path / "types.png")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["languages"]["de"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert (tmp_path / "types.png").stat().st_size > 0
    assert (run / "plots" / "by_structural.png").is_file()
    assert "plots/by_structural.png" in (run / "report.md").read_text()
    # model.init_from starts a run (e.g. few-shot) from another run's best parameters, head included
    follow = tmp_path / "follow"
    assert main(["train", str(config), "--run-dir", str(follow), "task.options.type_token=predicted",
                 f"model.init_from={run}", "optimizer.lr=1e-12", "trainer.steps=1"]) == 0
    from jaxcult.run.restore import load_run_model

    before, after = (nnx.state(load_run_model(path)[1].head.classifier) for path in (run, follow))
    assert jax.tree.all(jax.tree.map(lambda a, b: np.allclose(a, b, atol=1e-6), before, after))
    assert main(["train", str(config), "--run-dir", str(tmp_path / "other"),
                 f"model.init_from={run}"]) == 2  # no type token: another head structure
    assert "another model, PEFT or head structure" in capsys.readouterr().err
    # switches are config changes only: the sequence head, gold type tokens, 7-d locations, CE
    built = build_run(load_config(config, [
        "task.options.head=sequence", "task.options.type_token=gold",
        "task.options.location_dim=7", "task.options.loss=ce", "task.options.global_token=true"]))
    assert "head" in built.parts.groups
    split = built.data.tests["de"]
    assert split.arrays["visual_locations"].shape[-1] == 7
    assert built.plugins.task.type_names == ("query", "verify")
    assert split.arrays["type_ids"].tolist() == [1, 0, 1, 0]
    # soft answer scores (IGLUE's labels) are the BCE targets
    train = build_run(load_config(config, [])).data.train
    assert train.arrays["answer_scores"][1].tolist() == pytest.approx([1.0, 0.3])


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


def test_type_tokens_and_the_honest_type_predictor():
    from jaxcult.models.vision_language import VisionLanguageModel

    encoder, _ = _tiny_vl()
    ids = jnp.asarray([[0, 5, 9, 2, 1], [0, 7, 2, 1, 1]])
    mask = (ids != 1).astype(jnp.int32)
    visual = (jnp.ones((2, 2, 6)), jnp.full((2, 2, 5), 0.5), jnp.ones((2, 2), jnp.int32))
    gold = VisionLanguageModel(encoder, 7, feature_dim=6, types=3, type_source="gold", seed=1)
    by_type = [np.asarray(gold(ids, mask, *visual, jnp.full(2, t))) for t in range(3)]
    assert not np.allclose(by_type[0], by_type[1])  # the type token is attended
    # the predictor reads the mean of the question's embeddings, without back-propagating into them
    predicted = VisionLanguageModel(encoder, 7, feature_dim=6, types=3, type_source="predicted", seed=1)
    answers, logits = predicted.outputs(ids, mask, *visual)
    types = predicted.head.types
    text = np.asarray(encoder.embed(ids))
    weights = np.asarray(mask, np.float32)[..., None]
    mean = (text * weights).sum(1) / weights.sum(1)
    hidden = np.asarray(jax.nn.gelu(mean @ np.asarray(types.hidden.kernel[...])
                                    + np.asarray(types.hidden.bias[...]), approximate=False))
    hand = hidden @ np.asarray(types.out.kernel[...]) + np.asarray(types.out.bias[...])
    assert np.abs(np.asarray(logits) - hand).max() <= 1e-5
    chosen = np.asarray(predicted(ids, mask, *visual, jnp.asarray([2, 2])))  # gold ids are ignored
    assert np.allclose(chosen, np.asarray(answers), atol=1e-6)
    grads = jax.grad(lambda e: (types.predict(e, mask) ** 2).sum())(jnp.asarray(text))
    assert float(jnp.abs(grads).max()) == 0.0


def test_soft_answer_scores_are_the_bce_targets():
    from jaxcult.tasks.vqa import VisualQuestionAnswering

    task = VisualQuestionAnswering(VisualQuestionAnswering.Settings(type_token="predicted"),
                                   labels=("yes", "no", "red"))
    logits = np.asarray([[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]], np.float32)
    types = np.asarray([[2.0, -1.0], [0.0, 1.0]], np.float32)
    batch = {"labels": jnp.asarray([2, 0]), "answer_ids": jnp.asarray([[2, 0], [0, -1]]),
             "answer_scores": jnp.asarray([[1.0, 0.3], [1.0, 0.0]]), "type_ids": jnp.asarray([0, -1])}
    loss, accuracy = task.loss({"logits": jnp.asarray(logits), "types": jnp.asarray(types)}, batch)
    targets = np.asarray([[0.3, 0, 1.0], [1.0, 0, 0]])
    sigmoid = 1 / (1 + np.exp(-logits))
    bce = -(targets * np.log(sigmoid) + (1 - targets) * np.log(1 - sigmoid))
    type_nll = -np.log(np.exp(2.0) / (np.exp(2.0) + np.exp(-1.0)))  # only the known type counts
    assert float(loss) == pytest.approx(bce.mean() * 3 + type_nll, rel=1e-5)
    assert float(accuracy) == 0.5


def _feature_record(rng, n, dim=8):
    xy = rng.uniform(0, 40, (n, 2)).astype(np.float32)
    return {"features": rng.normal(size=(n, dim)).astype(np.float32),
            "boxes": np.concatenate([xy, xy + 20], 1), "image_w": 64, "image_h": 80}


def test_region_feature_layouts_npz_h5_lmdb_agree(tmp_path):
    import base64
    import pickle

    h5py = pytest.importorskip("h5py")
    lmdb = pytest.importorskip("lmdb")
    from jaxcult.data.region_features import RegionFeatures
    from jaxcult.errors import UserError

    rng = np.random.default_rng(0)
    images = {f"img{i}": _feature_record(rng, 3 + i) for i in range(3)}
    (tmp_path / "npz").mkdir()
    with h5py.File(tmp_path / "feats.h5", "w") as h5:
        for image_id, fields in images.items():
            np.savez(tmp_path / "npz" / f"{image_id}.npz", **fields)
            group = h5.create_group(image_id)
            group["features"], group["boxes"] = fields["features"], fields["boxes"]
            group.attrs["image_w"], group.attrs["image_h"] = 64, 80
    env = lmdb.open(str(tmp_path / "feats.lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, (image_id, fields) in enumerate(images.items()):
            if i == 0:  # VOLTA: base64 float32 bytes, img_w / img_h names
                record = {"image_id": image_id, "img_w": 64, "img_h": 80, "num_boxes": 3,
                          "features": base64.b64encode(fields["features"].tobytes()),
                          "boxes": base64.b64encode(fields["boxes"].tobytes())}
            else:  # numpy arrays pickled directly
                record = {**fields, "image_id": image_id, "num_boxes": len(fields["boxes"])}
            txn.put(image_id.encode(), pickle.dumps(record))
        txn.put(b"keys", pickle.dumps([k.encode() for k in images]))
        txn.put(b"hostile", pickle.dumps(Path("/etc/passwd")))
    env.close()
    readers = [RegionFeatures(tmp_path / name) for name in ("npz", "feats.h5", "feats.lmdb")]
    assert [r.kind for r in readers] == ["npz", "h5", "lmdb"]
    for image_id, fields in images.items():
        expected = fields["boxes"] / np.asarray([64, 80, 64, 80], np.float32)
        for reader in readers:
            tokens = reader(image_id, 8)
            assert np.array_equal(tokens.features, fields["features"])
            assert np.allclose(tokens.boxes, expected)
    for reader in readers:
        with pytest.raises(UserError, match="img7"):
            reader("img7", 8)
        with pytest.raises(UserError, match="dimension 8, expected 16"):
            reader("img0", 16)
    with pytest.raises(UserError, match="refusing to load pathlib"):  # never runs a pickle's code
        readers[2]("hostile", 8)
    with pytest.raises(UserError, match="not found"):
        RegionFeatures(tmp_path / "nowhere")
