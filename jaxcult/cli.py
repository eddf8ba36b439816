"""The `jaxcult` command line: train, eval, export, convert, generate, eval-survey, clca,
narratives, sweep, vqa, plot, assets.

Argument parsing only: each command calls one use case in `jaxcult.run`. Heavy imports (jax,
flax, transformers) happen inside the command functions so that `--help` answers instantly.
A `UserError` becomes one line on stderr and exit code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from jaxcult.errors import Interrupted, UserError
from jaxcult.run.compile_cache import enable_compilation_cache


def _split_config_and_overrides(args: argparse.Namespace) -> tuple[Path | None, list[str]]:
    items = list(args.items)
    config = None
    if items and "=" not in items[0]:
        config = Path(items.pop(0))
    stray = [i for i in items if "=" not in i]
    if stray:
        raise UserError(f"command line: {stray[0]!r} is not an override (expected section.key=value;"
                        f" the config file must come first)")
    return config, items


def cmd_train(args: argparse.Namespace) -> int:
    from jaxcult.run.train import train_command

    config_path, overrides = _split_config_and_overrides(args)
    train_command(config_path, overrides, run_dir=args.run_dir, resume=args.resume,
                  overwrite=args.overwrite, print_config=args.print_config, dry=args.dry_run)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from jaxcult.run.restore import rescore_run

    languages = [x for x in args.languages or [] if "=" not in x]  # overrides typed after them
    overrides = args.overrides + [x for x in args.languages or [] if "=" in x]
    rescore_run(Path(args.run_dir), overrides, languages=languages or None)
    return 0


def cmd_vqa(args: argparse.Namespace) -> int:
    from jaxcult.run.vqa_score import score_command

    score_command(Path(args.predictions), Path(args.data), args.split,
                  Path(args.out) if args.out else None, Path(args.plot) if args.plot else None)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from jaxcult.run.data_command import inspect_command, prepare_command

    data_dir = Path(args.data_dir) if args.data_dir else None
    if args.action == "prepare":
        prepare_command(args.name, Path(args.manual_dir) if args.manual_dir else None, data_dir)
    else:
        inspect_command(args.name, data_dir, args.examples)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from jaxcult.run.assets import plot_run

    plot_run(Path(args.run_dir))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from jaxcult.run.export import convert_model

    print(convert_model(args.source, Path(args.out), overwrite=args.overwrite))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from jaxcult.run.export import export_run

    print(export_run(Path(args.run_dir), args.format, Path(args.out), name=args.name,
                     overwrite=args.overwrite, no_head=args.no_head))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from jaxcult.run.generate import generate_command

    generate_command(args.model, Path(args.prompts), Path(args.out), args.overrides,
                     chat=args.chat, system=args.system, adapter=args.adapter, merge=args.merge)
    return 0


def cmd_eval_survey(args: argparse.Namespace) -> int:
    from jaxcult.run.survey import survey_command

    questions = [q for item in args.questions for q in item.split(",") if q] if args.questions \
        else None
    survey_command(args.model, Path(args.survey), args.culture, Path(args.out), args.overrides,
                   personas=args.personas, mode=args.mode, baseline=args.baseline, seed=args.seed,
                   questions=questions, translations=Path(args.translations) if args.translations
                   else None, adapter=args.adapter, split=args.split)
    return 0


def cmd_clca(args: argparse.Namespace) -> int:
    from jaxcult.run.clca import run_stages

    run_stages(Path(args.config), args.overrides, args.stage,
               out=Path(args.out) if args.out else None)
    return 0


def _seed_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--seeds: expected N or a comma-separated list of integers, found "
                        f"{text!r}") from None
    if len(values) == 1:
        if values[0] <= 0:
            raise UserError(f"--seeds: expected a positive number of seeds, found {text!r}")
        return list(range(values[0]))
    return values


def cmd_sweep(args: argparse.Namespace) -> int:
    import shlex

    from jaxcult.run.sweep import (
        grid_cells,
        override_text,
        parse_grid,
        read_sweep_file,
        sweep_command,
    )

    command = "jaxcult " + shlex.join(args.argv)
    found = read_sweep_file(Path(args.config))
    if found is None:
        missing = [flag for flag, value in (("--grid", args.grid), ("--seeds", args.seeds),
                                            ("--out", args.out)) if value is None]
        if missing:
            raise UserError(f"{args.config}: a run config needs {', '.join(missing)} (or give a "
                            f"sweep file, whose `sweep:` section holds them; see docs/schedules.md)")
        config, baseline, overrides = Path(args.config), args.baseline, args.overrides
        cells, seeds, out = parse_grid(args.grid), _seed_list(args.seeds), Path(args.out)
    else:
        settings, config = found
        cells = parse_grid(args.grid) if args.grid else grid_cells(
            [(key, [override_text(v) for v in values]) for key, values in settings.grid.items()],
            f"{args.config}: sweep.grid")
        if args.seeds:
            seeds = _seed_list(args.seeds)
        else:
            seeds = (list(range(settings.seeds)) if isinstance(settings.seeds, int)
                     else list(settings.seeds))
        out, baseline = Path(args.out or settings.out), args.baseline or settings.baseline
        overrides = [*settings.overrides, *args.overrides]
    sweep_command(config, cells, seeds, out, overrides, baseline=baseline, command=command)
    return 0


def cmd_narratives(args: argparse.Namespace) -> int:
    from jaxcult.run.narratives import run_stages

    run_stages(Path(args.config), args.overrides, args.stage,
               out=Path(args.out) if args.out else None)
    return 0


def cmd_assets(args: argparse.Namespace) -> int:
    from jaxcult.run.assets import asset_command

    asset_command(args.action, args.names)
    return 0


def _pipeline_parser(sub, common, name: str, func, stages: list[str], *, help: str,
                     description: str, example: str) -> None:
    """A staged pipeline's subcommand: `jaxcult NAME STAGE CONFIG [--out DIR] [KEY=VALUE ...]`."""
    parser = sub.add_parser(name, parents=[common], help=help, description=description)
    parser.add_argument("stage", choices=[*stages, "run"])
    parser.add_argument("config", help=f"pipeline YAML (e.g. {example})")
    parser.add_argument("--out", help=f"output folder (default runs/{name}-<name>)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.set_defaults(command_parser=parser, func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcult", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")

    train = sub.add_parser("train", parents=[common], help="train a run from a YAML config",
                           description="Train from CONFIG (default experiments/default.yaml) with "
                                       "dotted overrides such as optimizer.lr=5e-4 schedule.name=gu.")
    train.add_argument("items", nargs="*", metavar="[CONFIG] [KEY=VALUE ...]")
    train.add_argument("--run-dir", help="output directory (default runs/<name>-<timestamp>)")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace outputs in --run-dir")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    train.add_argument("--dry-run", action="store_true",
                       help="print mesh, parameter groups and memory estimate; do not train")
    train.set_defaults(command_parser=train, func=cmd_train)

    ev = sub.add_parser("eval", parents=[common],
                        help="re-score a run's best checkpoint on every (or some) language(s)")
    ev.add_argument("run_dir")
    ev.add_argument("--languages", nargs="*", help="languages to score (default: the run's)")
    ev.add_argument("overrides", nargs="*",
                    help="data.* / task decoding / trainer.eval_batch_size overrides")
    ev.set_defaults(command_parser=ev, func=cmd_eval)

    export = sub.add_parser("export", parents=[common], help="export adapters (AdapterHub / PEFT)")
    export.add_argument("run_dir")
    export.add_argument("--format", choices=["adapterhub", "peft"], required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--name", help="adapter name inside the AdapterHub files (default: run name)")
    export.add_argument("--overwrite", action="store_true")
    export.add_argument("--no-head", action="store_true",
                        help="AdapterHub: adapters only; the task head is saved beside them in "
                             "jaxcult's format (for heads AdapterHub cannot hold, e.g. mean pooling)")
    export.set_defaults(command_parser=export, func=cmd_export)

    convert = sub.add_parser("convert", parents=[common],
                             help="convert weights (asset, HF dir, E5S1 file) to an HF directory")
    convert.add_argument("source")
    convert.add_argument("--out", required=True)
    convert.add_argument("--overwrite", action="store_true")
    convert.set_defaults(command_parser=convert, func=cmd_convert)

    plot = sub.add_parser("plot", parents=[common], help="regenerate plots/ and report.md of a run")
    plot.add_argument("run_dir")
    plot.set_defaults(command_parser=plot, func=cmd_plot)

    gen = sub.add_parser("generate", parents=[common], help="complete a JSONL file of prompts",
                         description="Batched generation: one output line per prompt line, in "
                                     "input order; an interrupted run continues where it stopped. "
                                     "Settings as KEY=VALUE: max_new_tokens, do_sample, temperature, "
                                     "top_k, top_p, min_p, repetition_penalty, seed, stop_strings, "
                                     "stop_token_ids, batch_size, length_buckets, chunk.")
    gen.add_argument("model", help="asset name, HF directory, .gguf file or Hub id")
    gen.add_argument("--prompts", required=True, help='JSONL: {"prompt": ...} or {"messages": [...]}')
    gen.add_argument("--out", required=True, help="output JSONL (appended to when resuming)")
    gen.add_argument("--chat", action="store_true", help="render plain prompts as user turns of "
                     "the model's chat template")
    gen.add_argument("--system", help="system message for chat prompts that have none")
    gen.add_argument("--adapter", help="a PEFT LoRA adapter directory to apply")
    gen.add_argument("--merge", action="store_true", help="merge the LoRA adapter into the weights")
    gen.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    gen.set_defaults(command_parser=gen, func=cmd_generate)

    survey = sub.add_parser(
        "eval-survey", parents=[common], help="survey alignment of a chat LM (CLCA, WVS)",
        description="Simulated respondents (personas sampled from the survey) answer every "
                    "question; the model's answer distributions are scored against the culture's "
                    "(KL, JS distance, individual accuracy, parse failures). Decoding settings as "
                    "KEY=VALUE (batch_size, length_buckets, max_new_tokens, ...). See "
                    "docs/cultural-eval.md.")
    survey.add_argument("model", help="asset name, HF directory, .gguf file or Hub id")
    survey.add_argument("--survey", required=True,
                        help="a WorldValuesBench checkout or a survey.json (file or directory)")
    survey.add_argument("--culture", action="append", required=True,
                        help="a culture (WVS country name) to evaluate; repeat for several")
    survey.add_argument("--out", required=True, help="output directory")
    survey.add_argument("--personas", type=int, default=1000, help="respondents sampled per "
                        "culture (without replacement; the paper: 1000)")
    survey.add_argument("--mode", default="generate", help="generate (the paper: greedy, parsed) "
                        "or logprob (the model's distribution over the options)")
    survey.add_argument("--baseline", default="persona", help="persona (country + demographics), "
                        "cultural (country only) or none (no system prompt)")
    survey.add_argument("--seed", type=int, default=0, help="persona sampling seed")
    survey.add_argument("--questions", action="append",
                        help="question ids (comma-separated; default: CLCA's Q1-Q45 without Q42)")
    survey.add_argument("--translations", help="JSON file translating the prompts and questions")
    survey.add_argument("--adapter", help="a PEFT LoRA adapter directory to apply")
    survey.add_argument("--split", default="full", help="WorldValuesBench split (full, train, ...)")
    survey.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    survey.set_defaults(command_parser=survey, func=cmd_eval_survey)

    _pipeline_parser(
        sub, common, "clca", cmd_clca, ["simulate", "judge", "annotate", "build", "train"],
        help="CLCA: simulate, judge and annotate cultural dialogues; train one LoRA adapter per "
             "culture",
        description="Cultural-learning dialogue data with a local chat model and per-culture "
                    "LoRA fine-tuning (Liu et al., ACL 2025). Stages: simulate (role-play), judge "
                    "(filter), annotate (intents), build (training views), train (adapters); "
                    "`run` does all. Every stage resumes where it stopped. See docs/clca.md.",
        example="experiments/clca/demo.yaml")

    sweep = sub.add_parser(
        "sweep", parents=[common], help="train every cell of a grid over several seeds; report",
        description="Every combination of the --grid values (config overrides), each trained "
                    "over the same seeds; finished cells are read back, interrupted ones resume. "
                    "Writes sweep.json, results.md (per-language mean ± std, paired comparison "
                    "with the baseline cell) and plots/. See docs/schedules.md.")
    sweep.add_argument("config", help="run YAML every cell starts from, or a sweep file (a "
                       "`sweep:` section with config, grid, seeds, baseline, out, overrides; the "
                       "options below replace its settings)")
    sweep.add_argument("--grid", action="append", metavar="KEY=V1,V2",
                       help="one axis of the grid; repeat for more axes (required with a run YAML)")
    sweep.add_argument("--seeds", help="N (seeds 0..N-1) or a comma-separated list of seeds "
                       "(required with a run YAML)")
    sweep.add_argument("--baseline", help="KEY=VALUE pairs (space-separated) naming the cell "
                       "the others are compared with (default: the first cell)")
    sweep.add_argument("--out", help="output folder (cells/, sweep.json, results.md; required "
                       "with a run YAML)")
    sweep.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="applied to every cell")
    sweep.set_defaults(command_parser=sweep, func=cmd_sweep)

    _pipeline_parser(
        sub, common, "narratives", cmd_narratives, ["build", "train", "evaluate"],
        help="Surveys→Narratives: per-culture LoRA adapters on survey answers and culture text; "
             "cross-culture matrix",
        description="Training views from survey answers, culture texts and NormAd stories, one "
                    "LoRA adapter per culture, and every adapter on every culture's offensive-"
                    "language tasks (macro-F1 matrix, C-Dist, heatmap) (EMNLP 2025). Stages: "
                    "build, train, evaluate; `run` does all. See docs/cultural-eval.md.",
        example="experiments/narratives/paper.yaml")

    vqa = sub.add_parser("vqa", parents=[common], help="score xGQA predictions (IGLUE's or jaxcult's)")
    vqa_sub = vqa.add_subparsers(dest="action", required=True, metavar="ACTION")
    score = vqa_sub.add_parser(
        "score", parents=[common], help="per-language, per-type accuracy and yes/no share",
        description="Score one model's xGQA predictions (a folder of test_<lang>_0_result.json or "
                    "<lang>.json files, lists of {questionId, prediction}) against GQA test-dev "
                    "gold answers: accuracy per language, the mean over the targets without "
                    "English, accuracy per structural type where known, yes/no share. See "
                    "docs/vqa.md.")
    score.add_argument("predictions", help="folder of one model's prediction files")
    score.add_argument("--data", required=True, help="folder holding gqa_iglue/ and iglue_xgqa/ "
                       "(the layout of the shared data folder)")
    score.add_argument("--split", default="fewshot_test", help="fewshot_test (IGLUE's zero-shot "
                       "table: 9,666 questions) or testdev (all 12,578)")
    score.add_argument("--out", help="also write the scores as JSON here")
    score.add_argument("--plot", help="also draw accuracy per structural type and language (PNG)")
    score.set_defaults(command_parser=score, func=cmd_vqa)

    data = sub.add_parser("data", parents=[common],
                          help="prepare or inspect a TFDS dataset (array_record) for data.source=tfds")
    data_sub = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    prepare = data_sub.add_parser(
        "prepare", parents=[common], help="build a dataset's array_record files",
        description="Build jaxcult:NAME (xcopa, pawsx, xnli, squad, xgqa, easy_vqa, chat, survey) "
                    "under --data-dir from the local files in --manual-dir (without it, from the "
                    "official URLs). Training reads it with data.source=tfds (see docs/data.md).")
    inspect = data_sub.add_parser("inspect", parents=[common],
                                  help="print a prepared dataset's splits, counts and examples")
    for each in (prepare, inspect):
        each.add_argument("name", help="jaxcult:<dataset>, e.g. jaxcult:xcopa")
        each.add_argument("--data-dir", help="where prepared datasets live (default "
                          "~/.cache/jaxcult/tfds; training's data.data_dir)")
        each.set_defaults(command_parser=each, func=cmd_data)
    prepare.add_argument("--manual-dir", help="folder holding the dataset's source files")
    inspect.add_argument("--examples", type=int, default=3, help="examples shown per split")

    assets_parser = sub.add_parser("assets", parents=[common], help="offline pretrained assets")
    assets_parser.add_argument("action", choices=["list", "path", "install"])
    assets_parser.add_argument("names", nargs="*")
    assets_parser.set_defaults(command_parser=assets_parser, func=cmd_assets)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"jaxcult {version('jaxcult')}"
    except PackageNotFoundError:
        return "jaxcult (not installed)"


def main(argv: list[str] | None = None) -> int:
    # transformers' notice that PyTorch is absent is noise: jaxcult never needs torch to run
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if extra:  # overrides may follow options: `train cfg.yaml --run-dir d a.b=1`
        field = {"train": "items", "generate": "overrides", "eval-survey": "overrides",
                 "clca": "overrides", "narratives": "overrides", "sweep": "overrides"}.get(args.command)
        if field is None or any(item.startswith("-") for item in extra):
            args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, field, [*getattr(args, field), *extra])
    try:
        if args.command not in ("assets", "plot", "vqa", "data"):  # commands that compile programs
            enable_compilation_cache()
        return args.func(args)
    except UserError as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except Interrupted as stop:
        print(str(stop), file=sys.stderr)
        return stop.exit_code
    except OSError as err:  # a user path that cannot be read or written: one line, exit 2
        if err.filename is None or args.debug:
            raise
        print(f"error: {err.filename}: {err.strerror or type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
