"""`jaxcult vqa score DIR`: score a model's xGQA predictions (IGLUE's released outputs or
jaxcult's own) per language, per question type, with the yes/no share.

DIR holds one JSON list of `{"questionId", "prediction"}` per language, named as IGLUE names
them (`test_<lang>_0_result.json`) or `<lang>.json`; predictions for questions outside the split
are counted (`beyond_split`, "not scored") and named in a warning, never silently dropped.
Gold answers are GQA test-dev's (`gqa_iglue/datasets/gqa/annotations/testdev.json` under
`--data`), the same English answer in every language; `--split fewshot_test` keeps the 9,666
questions of xGQA's few-shot test split (`iglue_xgqa/gold_aux.json`), on which IGLUE reports its
zero-shot table.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from jaxcult.data.registry import read_json
from jaxcult.data.vqa import XGQA_LANGUAGES
from jaxcult.errors import UserError
from jaxcult.eval.vqa import score_answers

log = logging.getLogger(__name__)
SPLITS = ("fewshot_test", "testdev")
_NAME = re.compile(r"^(?:test_)?([a-z]{2})(?:_\d+_result)?\.json$")


def read_gold(data: Path, split: str) -> tuple[dict[str, str], dict[str, dict]]:
    """(question id -> gold answer of the split, question id -> its known types)."""
    if split not in SPLITS:
        raise UserError(f"--split: expected one of {', '.join(SPLITS)}, found {split!r}")
    testdev = read_json(data / "gqa_iglue" / "datasets" / "gqa" / "annotations" / "testdev.json")
    gold = {str(q["question_id"]): max(q["label"], key=q["label"].get) if q["label"] else ""
            for q in testdev}
    aux_path = data / "iglue_xgqa" / "gold_aux.json"
    aux = read_json(aux_path) if aux_path.is_file() or split == "fewshot_test" else {}
    if split == "fewshot_test":
        keep = set(aux.get("fewshot_split", {}).get("test", []))
        if not keep:
            raise UserError(f"{aux_path}: no fewshot_split.test question ids")
        gold = {qid: answer for qid, answer in gold.items() if qid in keep}
    return gold, aux.get("types", {})


def read_predictions(path: Path, gold: dict[str, str]) -> tuple[list[str], list[str]]:
    """(the predictions of `path` for every gold question, in gold order; the question ids it
    answers beyond the split, which are not scored). Two different answers to one question
    are an error: which one counts would be a guess."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise UserError(f"{path}: expected a JSON list of {{questionId, prediction}}")
    found = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or "questionId" not in row or "prediction" not in row:
            raise UserError(f"{path}: record {index}: expected questionId and prediction")
        qid, answer = str(row["questionId"]), str(row["prediction"])
        if found.get(qid, answer) != answer:
            raise UserError(f"{path}: record {index}: question {qid} answered twice, "
                            f"{found[qid]!r} and {answer!r}")
        found[qid] = answer
    missing = [qid for qid in gold if qid not in found]
    if missing:
        raise UserError(f"{path}: no prediction for {len(missing)} of the split's {len(gold)} "
                        f"questions (first: {missing[0]})")
    return [found[qid] for qid in gold], [qid for qid in found if qid not in gold]


def _scored(path: Path, gold: dict[str, str], known: list[dict]) -> dict:
    predictions, beyond = read_predictions(path, gold)
    if beyond:
        log.warning(f"{path}: {len(beyond)} prediction(s) for questions outside the split, not "
                    f"scored (first: {beyond[0]})")
    return {**score_answers(predictions, list(gold.values()), known), "count": len(gold),
            "beyond_split": len(beyond)}


def score_folder(folder: Path, data: Path, split: str) -> dict:
    """Per-language metrics of every prediction file in `folder`, and the target mean."""
    gold, types = read_gold(data, split)
    files = {m.group(1): p for p in sorted(folder.glob("*.json"))
             if (m := _NAME.match(p.name)) and m.group(1) in XGQA_LANGUAGES}
    if not files:
        raise UserError(f"{folder}: no prediction files (test_<lang>_0_result.json or <lang>.json "
                        f"for {', '.join(XGQA_LANGUAGES)})")
    known = [types.get(qid, {}) for qid in gold]
    languages = {lang: _scored(path, gold, known)
                 for lang, path in sorted(files.items(), key=lambda kv: XGQA_LANGUAGES.index(kv[0]))}
    targets = [m["accuracy"] for lang, m in languages.items() if lang != "en"]
    return {"split": split, "languages": languages,
            "target_mean": sum(targets) / len(targets) if targets else None,
            "targets": [lang for lang in languages if lang != "en"]}


def format_scores(scores: dict) -> str:
    """The per-language table, the target mean and the per-structural-type table."""
    lines = [f"{'language':<10}{'accuracy':>10}{'yes/no':>9}{'questions':>11}{'not scored':>12}"]
    for lang, m in scores["languages"].items():
        lines.append(f"{lang:<10}{100 * m['accuracy']:>9.2f}%{100 * m['yes_no_share']:>8.1f}%"
                     f"{m['count']:>11,}{m['beyond_split']:>12,}")
    if scores["target_mean"] is not None:
        lines.append(f"{'mean of ' + str(len(scores['targets'])) + ' targets (no en)':<30}"
                     f"{100 * scores['target_mean']:.2f}%")
    kinds = sorted({k for m in scores["languages"].values() for k in m.get("by_structural", {})})
    if kinds:
        lines += ["", "accuracy per structural type (questions whose type is known)",
                  f"{'language':<10}" + "".join(f"{k:>10}" for k in kinds)]
        for lang, m in scores["languages"].items():
            table = m.get("by_structural", {})
            lines.append(f"{lang:<10}" + "".join(
                f"{100 * table[k]['accuracy']:>9.2f}%" if k in table else f"{'-':>10}" for k in kinds))
        counts = next(iter(scores["languages"].values())).get("by_structural", {})
        lines.append(f"{'(n)':<10}" + "".join(f"{counts.get(k, {}).get('count', 0):>10}" for k in kinds))
    return "\n".join(lines)


def score_command(folder: Path, data: Path, split: str, out: Path | None,
                  plot: Path | None = None) -> dict:
    scores = score_folder(folder, data, split)
    if out is not None:
        out.write_text(json.dumps(scores, indent=1))
    if plot is not None:
        import matplotlib.pyplot as plt

        from jaxcult.report import by_type_figure

        tables = {lang: m["by_structural"] for lang, m in scores["languages"].items()
                  if m.get("by_structural")}
        if not tables:
            raise UserError(f"--plot: no question of the {split} split has a known structural type")
        fig = by_type_figure(tables, f"{folder.name}: accuracy per structural type ({split})")
        fig.savefig(plot, dpi=110)
        plt.close(fig)
    return scores
