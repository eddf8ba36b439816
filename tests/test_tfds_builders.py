"""TFDS builders prepare array_record files from local sources without TensorFlow and load
back with the source files' record counts (real samples from ../shared/data; fixtures here)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from jaxcult.data import tfds as jt
from jaxcult.errors import UserError

pytest.importorskip("tensorflow_datasets")


def counts(name, data_dir, manual_dir) -> dict[str, int]:
    jt.prepare(name, data_dir=data_dir, manual_dir=manual_dir)
    return {split: len(source) for split, source in jt.load(name, data_dir=data_dir).items()}


def test_shared_data_builders_keep_every_record(shared_data, tmp_path):
    xcopa = counts("jaxcult:xcopa", tmp_path, shared_data)
    assert (xcopa["train"], xcopa["validation"], xcopa["test"]) == (400, 100, 500)
    assert all(xcopa[f"test_{lang}"] == 500 and xcopa[f"validation_{lang}"] == 100
               for lang in ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"))
    squad = counts("jaxcult:squad", tmp_path, shared_data)
    assert all(squad[f"xquad_{lang}"] == 1190 for lang in ("en", "ar", "de", "zh", "th"))
    assert {lang: squad[f"mlqa_dev_{lang}"] for lang in ("ar", "de", "en", "es", "hi", "vi", "zh")} == {
        "ar": 517, "de": 512, "en": 1148, "es": 500, "hi": 507, "vi": 511, "zh": 504}
    pawsx = counts("jaxcult:pawsx", tmp_path, shared_data)
    assert pawsx == {"validation_en": 2000, "validation_de": 1932, "validation_es": 1962,
                     "validation_fr": 1992, "validation_ja": 1980, "validation_ko": 1965,
                     "validation_zh": 1984}
    xgqa = counts("jaxcult:xgqa", tmp_path, shared_data)
    assert all(xgqa[f"dev_{lang}"] == 1422 and xgqa[f"train_1_{lang}"] == 27
               and xgqa[f"train_5_{lang}"] == 155
               for lang in ("en", "de", "pt", "ru", "id", "bn", "ko", "zh"))
    assert xgqa["gqa_testdev"] == 12578
    first = jt.load("jaxcult:xgqa", data_dir=tmp_path)["dev_de"][0]
    assert first["label"] >= 0 and first["image_id"]  # in the answer vocabulary, image by id
    assert "tensorflow" not in sys.modules


def test_fixture_builders_for_nli_chat_survey_and_easy_vqa(tmp_path):
    src = tmp_path / "src"
    (src / "MNLI").mkdir(parents=True)
    (src / "MNLI" / "train.tsv").write_text(
        "index\tsentence1\tsentence2\tgold_label\n0\tA.\tB.\tentailment\n1\tC.\tD.\tneutral\n")
    (src / "xnli").mkdir()
    (src / "xnli" / "test-de.tsv").write_text("E.\tF.\tcontradiction\n")
    assert counts("jaxcult:xnli", tmp_path / "out", src) == {"train": 2, "test_de": 1}
    chat = tmp_path / "chat"
    chat.mkdir()
    turn = json.dumps({"messages": [{"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": "hello"}], "language": "en"})
    (chat / "train.jsonl").write_text(turn + "\n" + turn + "\n")
    assert counts("jaxcult:chat", tmp_path / "out", chat) == {"train": 2}
    record = jt.load("jaxcult:chat", data_dir=tmp_path / "out")["train"][0]
    assert list(record["messages"]["role"]) == [1, 2]  # user, assistant
    survey = tmp_path / "survey"
    survey.mkdir()
    (survey / "survey.json").write_text(json.dumps({
        "questions": [{"id": "q1", "text": "Trust people?", "scale": ["no", "some", "yes"]}],
        "respondents": [{"id": "r1", "demographics": {"country": "DE"}, "answers": {"q1": 2}},
                        {"id": "r2", "demographics": {"country": "JP"}, "answers": {"q1": 0}}]}))
    assert counts("jaxcult:survey", tmp_path / "out", survey) == {"questions": 1, "respondents": 2}
    easy = tmp_path / "easy"
    write_easy_vqa(easy)
    sizes = counts("jaxcult:easy_vqa", tmp_path / "out", easy)
    assert sizes == {"train": 3, "test": 1}
    row = jt.load("jaxcult:easy_vqa", data_dir=tmp_path / "out")["test"][0]
    assert row["image"].shape == (64, 64, 3) and row["image"].dtype == np.uint8
    assert row["question_de"].decode() == "Welche Farbe hat die Form Kreis?"
    assert row["question_zh"].decode() == "圆形是什么颜色？"


def write_easy_vqa(root):
    from PIL import Image

    for split, questions in (("train", [["what is the red shape?", "circle", 0],
                                        ["is there a triangle?", "no", 0],
                                        ["does the image not contain a gray shape?", "yes", 1]]),
                             ("test", [["what color is the circle?", "red", 0]])):
        (root / split / "images").mkdir(parents=True)
        (root / split / "questions.json").write_text(json.dumps(questions))
        for image_id in {q[2] for q in questions}:
            Image.fromarray(np.full((64, 64, 3), 40 * image_id, np.uint8)).save(
                root / split / "images" / f"{image_id}.png")
    (root / "answers.txt").write_text("circle\nred\nno\nyes\ntriangle\n")


def test_every_easy_vqa_question_has_a_translation():
    from jaxcult.data.tfds.easy_vqa_templates import LANGUAGES, translate

    for question in ("is no teal shape present?", "what shape is present?",
                     "is there not a rectangle in the image?"):
        assert len({translate(question, lang) for lang in LANGUAGES}) == len(LANGUAGES)
    with pytest.raises(UserError, match="matches no known template"):
        translate("how many shapes are there?", "de")


def test_bad_sources_name_the_file_and_record(tmp_path):
    survey = tmp_path / "survey"
    survey.mkdir()
    (survey / "survey.json").write_text(json.dumps({
        "questions": [{"id": "q1", "text": "?", "scale": ["a", "b"]}],
        "respondents": [{"id": "r1", "answers": {"q1": 5}}]}))
    with pytest.raises(UserError, match=r"survey.json: respondents\[0\]: answer 5 to 'q1' is outside"):
        jt.prepare("jaxcult:survey", data_dir=tmp_path / "out", manual_dir=survey)
    with pytest.raises(UserError, match="no train.jsonl"):
        jt.prepare("jaxcult:chat", data_dir=tmp_path / "out", manual_dir=tmp_path)
    with pytest.raises(UserError, match="manual_dir is not a folder"):
        jt.prepare("jaxcult:pawsx", data_dir=tmp_path / "out", manual_dir=tmp_path / "missing")
    with pytest.raises(UserError, match="unknown dataset 'jaxcult:nope'"):
        jt.builder("jaxcult:nope")
    with pytest.raises(UserError, match="not prepared"):
        jt.load("jaxcult:xcopa", data_dir=tmp_path / "empty")
    easy = tmp_path / "easy"
    write_easy_vqa(easy)
    (easy / "test" / "images" / "0.png").unlink()
    with pytest.raises(UserError, match=r"test/images/0.png: file not found \(record 0\)"):
        jt.prepare("jaxcult:easy_vqa", data_dir=tmp_path / "out2", manual_dir=easy)
