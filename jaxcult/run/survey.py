"""`jaxcult eval-survey MODEL --survey DIR --culture C ...`: survey alignment of a chat LM.

Writes into `--out`: `evaluations/<time>.json` (settings, per-culture metrics, every question's
distributions), `survey-questions.tsv` (one row per culture and question) and
`survey-worst.png` (model vs survey distributions of the questions with the largest KL).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from pathlib import Path

from jaxcult.errors import UserError
from jaxcult.run.generate import generation_config, load_generation_model

log = logging.getLogger(__name__)


def _check_choices(mode: str, baseline: str, cultures: list[str], survey, personas: int) -> None:
    from jaxcult.eval.survey_eval import MODES
    from jaxcult.eval.survey_prompts import BASELINES

    if mode not in MODES:
        raise UserError(f"--mode: expected one of {', '.join(MODES)}, found {mode!r}")
    if baseline not in BASELINES:
        raise UserError(f"--baseline: expected one of {', '.join(BASELINES)}, found {baseline!r}")
    unknown = [c for c in cultures if c not in survey.respondents]
    if unknown:
        raise UserError(f"--culture: {unknown} not in the survey (cultures: "
                        f"{', '.join(sorted(survey.respondents))})")
    for culture in cultures:
        if personas > len(survey.respondents[culture]):
            raise UserError(f"survey: {personas} personas requested but {culture} has only "
                            f"{len(survey.respondents[culture])} respondents")


METRICS = {  # printed with every result, so that nobody takes one KL for the other
    "kl_official": "the CLCA code's value (its tables): KL(survey || softmax(P_model)), summed "
                   "over the options and the safeguard bin",
    "kl_paper_direction": "KL(P_model || Q_survey) as the paper prints it, over the answer "
                          "options (safeguard left out, see parse_failure_rate)",
    "individual_accuracy": "the CLCA code's: per persona, the share of all questions answered as "
                           "that respondent did (missing real answers wrong), mean over personas",
    "answered_accuracy": "pooled over (persona, question) pairs whose real answer exists",
}


def write_question_table(results, path: Path) -> None:
    lines = ["culture\tquestion\tkl_official\tkl_paper_direction\tjs_distance\tparse_failures\t"
             "model\tsurvey"]
    for culture in results:
        for q in culture.questions:
            lines.append(f"{culture.culture}\t{q.id}\t{q.kl_official:.4f}\t{q.kl_paper_direction:.4f}\t"
                         f"{q.js_distance:.4f}\t{q.parse_failures:.3f}\t"
                         f"{','.join(f'{p:.3f}' for p in q.model)}\t"
                         f"{','.join(f'{p:.3f}' for p in q.survey)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot_worst(results, path: Path, count: int = 6) -> None:
    """Bars of model vs survey distributions for the questions with the largest (official) KL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worst = sorted(((c.culture, q) for c in results for q in c.questions), key=lambda cq: -cq[1].kl_official)
    worst = worst[:count]
    fig, axes = plt.subplots(1, len(worst), figsize=(3.2 * len(worst), 3), squeeze=False)
    for ax, (culture, q) in zip(axes[0], worst):
        bins = [str(i + 1) for i in range(len(q.model) - 1)] + ["?"]
        x = range(len(bins))
        ax.bar([i - 0.2 for i in x], q.survey, width=0.4, label="survey")
        ax.bar([i + 0.2 for i in x], q.model, width=0.4, label="model")
        ax.set_xticks(list(x), bins)
        ax.set_title(f"{culture} {q.id}\nKL (official) {q.kl_official:.3f}", fontsize=9)
    axes[0][0].set_ylabel("share of answers (? = no option)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _check_endpoint_flags(endpoint: str | None, api_key_env: str | None,
                          concurrency: int | None, overrides: list[str]) -> None:
    """Flags that mean something only with --endpoint, and settings only without it."""
    from jaxcult.remote.chat_model import ENGINE_ONLY

    if endpoint is None:
        unused = [flag for flag, value in (("--api-key-env", api_key_env),
                                           ("--concurrency", concurrency)) if value is not None]
        if unused:
            raise UserError(f"{unused[0]}: only with --endpoint (a model behind a server)")
        return
    local = [o for o in overrides if o.partition("=")[0] in ENGINE_ONLY]
    if local:
        raise UserError(f"{local[0]}: shapes local decoding only; a model behind --endpoint is "
                        f"batched by its server")


def remote_model(model: str, endpoint: str, api_key_env: str | None, concurrency: int | None,
                 mode: str, adapter: str | None, out: Path):
    """The chat model behind `endpoint` (its answers kept in `out`/remote-cache.jsonl, so a
    rerun asks nothing twice)."""
    from pydantic import ValidationError

    from jaxcult.remote.chat_model import RemoteChatModel
    from jaxcult.remote.settings import RemoteModel

    if mode != "generate":
        raise UserError(f"--mode {mode} scores every option's continuation, which an OpenAI-"
                        f"compatible API cannot; use --mode generate with --endpoint")
    if adapter is not None:
        raise UserError("--adapter applies to a local model; serve the adapter (jaxcult serve "
                        "--adapter NAME=DIR) and give NAME as MODEL")
    try:
        settings = RemoteModel(endpoint=endpoint, model=model, api_key_env=api_key_env,
                               **({} if concurrency is None else {"concurrency": concurrency}))
    except ValidationError as error:
        first = error.errors()[0]
        raise UserError(f"--{first['loc'][0]}: {first['msg']}".replace("_", "-", 1)) from None
    out.mkdir(parents=True, exist_ok=True)
    return RemoteChatModel(settings, out / "remote-cache.jsonl")


def survey_command(model: str, survey_path: Path, cultures: list[str], out: Path,
                   overrides: list[str], *, personas: int = 1000, mode: str = "generate",
                   baseline: str = "persona", seed: int = 0, questions: list[str] | None = None,
                   translations: Path | None = None, adapter: str | None = None,
                   split: str = "full", parsing: str = "official", endpoint: str | None = None,
                   api_key_env: str | None = None, concurrency: int | None = None) -> dict:
    """Evaluate `model` on the survey for each culture; write the outputs; return the summary.
    With `endpoint`, `model` names a model behind that OpenAI-compatible API."""
    from jaxcult.data.survey import CLCA_QUESTIONS, load_survey
    from jaxcult.eval.survey_eval import PARSINGS, evaluate_culture
    from jaxcult.eval.survey_prompts import PromptTexts, load_prompt_texts

    if personas <= 0:
        raise UserError(f"--personas: expected a positive count, found {personas}")
    _check_endpoint_flags(endpoint, api_key_env, concurrency, overrides)
    if parsing not in PARSINGS:
        raise UserError(f"--parsing: expected one of {', '.join(PARSINGS)}, found {parsing!r}")
    config = generation_config(["max_new_tokens=500", *overrides])  # the official budget
    if config.do_sample:
        raise UserError("eval-survey: do_sample=true is not the paper's protocol (greedy); remove it")
    texts = load_prompt_texts(translations) if translations is not None else PromptTexts()
    survey = load_survey(survey_path, split, cultures)
    wanted = questions if questions is not None else [
        q for q in CLCA_QUESTIONS if q in {x.id for x in survey.questions}]
    survey = survey.select(wanted or None)
    _check_choices(mode, baseline, cultures, survey, personas)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if endpoint is not None:
        loaded, tokenizer = remote_model(model, endpoint, api_key_env, concurrency, mode, adapter,
                                         out), None
    else:
        from jaxcult.generation.model_defaults import load_generation_defaults, with_model_defaults

        loaded, tokenizer = load_generation_model(model, adapter, merge=False)
        config = with_model_defaults(config, load_generation_defaults(model))
    results = []
    for culture in cultures:
        started = time.perf_counter()
        last = [0.0]

        def progress(done: int, total: int, culture: str = culture) -> None:
            now = time.perf_counter()
            if now - last[0] >= 10 or done == total:  # a line every 10 s at most
                last[0] = now
                log.info(f"eval-survey: {culture}: {done}/{total} prompts "
                      f"({done / max(now - started, 1e-9):.1f}/s)")

        result = evaluate_culture(loaded, tokenizer, survey, culture, personas=personas, seed=seed,
                                  mode=mode, baseline=baseline, texts=texts, config=config,
                                  parsing=parsing, progress=progress)
        log.info(f"eval-survey: {culture}: {personas} personas x {len(survey.questions)} questions "
              f"in {time.perf_counter() - started:.1f} s")
        results.append(result)
    summary = {
        "model": model, "endpoint": endpoint, "adapter": adapter, "survey": str(survey_path),
        "mode": mode,
        "parsing": parsing if mode == "generate" else None, "max_new_tokens": config.max_new_tokens,
        "repetition_penalty": config.repetition_penalty,   # greedy, but a model may set one
        "baseline": baseline, "personas": personas, "seed": seed,
        "questions": [q.id for q in survey.questions], "translations": str(translations or ""),
        "cultures": {r.culture: r.summary() for r in results},
        "definitions": METRICS,
        "average": {k: sum(r.summary()[k] for r in results) / len(results)
                    for k in ("kl_official", "kl_paper_direction", "js_distance",
                              "individual_accuracy", "answered_accuracy", "parse_failure_rate")},
    }
    (out / "evaluations").mkdir(parents=True, exist_ok=True)
    record = {**summary, "per_question": {r.culture: [vars(q) for q in r.questions] for r in results}}
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / "evaluations" / f"survey-{stamp}.json").write_text(json.dumps(record, indent=1),
                                                              encoding="utf-8")
    write_question_table(results, out / "survey-questions.tsv")
    plot_worst(results, out / "survey-worst.png")
    return summary
