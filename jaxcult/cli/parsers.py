"""The `jaxcult` command line's parsers: one function per command, then one command per
registered recipe (built-in, or from outside the package: `jaxcult.recipes.discover`)."""

from __future__ import annotations

import argparse
import sys

from jaxcult.cli.commands import (
    cmd_assets,
    cmd_convert,
    cmd_data,
    cmd_eval,
    cmd_eval_survey,
    cmd_export,
    cmd_generate,
    cmd_plan,
    cmd_plot,
    cmd_recipe,
    cmd_serve,
    cmd_sweep,
    cmd_train,
    cmd_vqa,
)
from jaxcult.recipes import RECIPES, Recipe, discover


def _train(sub, common) -> None:
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


def _plan(sub, common) -> None:
    plan = sub.add_parser(
        "plan", parents=[common], help="will a config fit? compile its train step without weights",
        description="Build CONFIG's model as shapes (its config.json, or the built-in table of "
                    "the paper configs' models), place it on simulated CPU devices, compile the "
                    "real train step and print XLA's per-device memory beside an analytic "
                    "estimate; reads no weights and no data.")
    plan.add_argument("items", nargs="*", metavar="[CONFIG] [KEY=VALUE ...]")
    plan.add_argument("--devices", type=int, help="simulated devices (default: the config's mesh "
                                                  "on the devices JAX sees)")
    plan.add_argument("--mesh", help="mesh shape, e.g. data=2,fsdp=4,tensor=1 (replaces mesh.*)")
    plan.add_argument("--device-memory", help="memory of one device, e.g. 80GiB: say whether the "
                                              "step fits, and what would make it fit")
    plan.set_defaults(command_parser=plan, func=cmd_plan)


def _latest_checkpoint(parser) -> None:
    parser.add_argument("--latest-checkpoint", action="store_true",
                        help="a run still training: use the newest checkpoint saved so far "
                             "(refused otherwise)")


def _eval(sub, common) -> None:
    ev = sub.add_parser("eval", parents=[common],
                        help="re-score a run's best checkpoint on every (or some) language(s)")
    ev.add_argument("run_dir")
    ev.add_argument("--languages", nargs="*", help="languages to score (default: the run's)")
    ev.add_argument("overrides", nargs="*",
                    help="data.* / task decoding / trainer.eval_batch_size overrides")
    _latest_checkpoint(ev)
    ev.set_defaults(command_parser=ev, func=cmd_eval)


def _export(sub, common) -> None:
    export = sub.add_parser("export", parents=[common], help="export adapters (AdapterHub / PEFT)")
    export.add_argument("run_dir")
    export.add_argument("--format", choices=["adapterhub", "peft"], required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--name", help="adapter name inside the AdapterHub files (default: run name)")
    export.add_argument("--overwrite", action="store_true")
    export.add_argument("--no-head", action="store_true",
                        help="AdapterHub: adapters only; the task head is saved beside them in "
                             "jaxcult's format (for heads AdapterHub cannot hold, e.g. mean pooling)")
    _latest_checkpoint(export)
    export.set_defaults(command_parser=export, func=cmd_export)


def _convert(sub, common) -> None:
    convert = sub.add_parser("convert", parents=[common],
                             help="convert weights (asset, HF dir, E5S1 file) to an HF directory")
    convert.add_argument("source")
    convert.add_argument("--out", required=True)
    convert.add_argument("--overwrite", action="store_true")
    convert.set_defaults(command_parser=convert, func=cmd_convert)


def _plot(sub, common) -> None:
    plot = sub.add_parser("plot", parents=[common], help="regenerate plots/ and report.md of a run")
    plot.add_argument("run_dir")
    plot.set_defaults(command_parser=plot, func=cmd_plot)


def _generate(sub, common) -> None:
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


def _serve(sub, common) -> None:
    serve = sub.add_parser("serve", parents=[common], help="an OpenAI-compatible HTTP server",
                           description="Serve a model (and LoRA adapters on it) over the OpenAI "
                                       "API: /v1/chat/completions, /v1/completions, /v1/models. "
                                       "Concurrent requests are batched. Settings as KEY=VALUE, "
                                       "as for generate: batch_size (default 16), "
                                       "max_new_tokens (the cap on max_tokens, default 256), "
                                       "length_buckets, chunk (tokens per streamed piece); "
                                       "temperature, top_k, top_p, min_p, repetition_penalty: "
                                       "defaults for requests that leave them unset (before "
                                       "the model's generation_config.json).")
    serve.add_argument("model", help="asset name, HF directory, .gguf file or Hub id")
    serve.add_argument("--adapter", action="append", default=[], metavar="[NAME=]DIR",
                       help="a PEFT LoRA adapter served as NAME (default: its folder name); "
                            "repeat for more")
    serve.add_argument("--name", help="the base model's name in requests (default: MODEL)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    serve.add_argument("--gather-ms", type=float, default=50.0,
                       help="how long a new batch may wait for as many requests as the last "
                            "batch held")
    serve.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    serve.set_defaults(command_parser=serve, func=cmd_serve)


def _survey(sub, common) -> None:
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
    survey.add_argument("--parsing", default="official", choices=["official", "lenient"],
                        help="generate mode: how answers are read — official (the CLCA code's "
                             "rule, the paper's protocol) or lenient (option labels, numbers "
                             "inside a sentence)")
    survey.add_argument("--baseline", default="persona", help="persona (country + demographics), "
                        "cultural (country only), tao (Tao et al.'s cultural prompting: an "
                        "average person born in and living in the country) or none (no system "
                        "prompt)")
    survey.add_argument("--seed", type=int, default=0, help="persona sampling seed")
    survey.add_argument("--questions", action="append",
                        help="question ids (comma-separated; default: CLCA's Q1-Q45 without Q42)")
    survey.add_argument("--translations", help="JSON file translating the prompts and questions")
    survey.add_argument("--adapter", help="a PEFT LoRA adapter directory to apply")
    survey.add_argument("--split", default="full", help="WorldValuesBench split (full, train, ...)")
    survey.add_argument("--endpoint", help="MODEL is served at this OpenAI-compatible base URL "
                        "(e.g. http://localhost:8000/v1; generate mode)")
    survey.add_argument("--api-key-env", help="with --endpoint: the environment variable holding "
                        "the API key")
    survey.add_argument("--concurrency", type=int,
                        help="with --endpoint: requests in flight (default 8)")
    survey.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    survey.set_defaults(command_parser=survey, func=cmd_eval_survey)


def _sweep(sub, common) -> None:
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


def _vqa(sub, common) -> None:
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


def _data(sub, common) -> None:
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


def _assets(sub, common) -> None:
    assets_parser = sub.add_parser("assets", parents=[common], help="offline pretrained assets")
    assets_parser.add_argument("action", choices=["list", "path", "install"])
    assets_parser.add_argument("names", nargs="*")
    assets_parser.set_defaults(command_parser=assets_parser, func=cmd_assets)


def _recipe(sub, common, recipe: Recipe) -> None:
    """A recipe's command: `jaxcult NAME STAGE CONFIG [--out DIR] [KEY=VALUE ...]`."""
    stages = "; ".join(f"{s.name}: {s.help}" for s in recipe.stages if s.help)
    parser = sub.add_parser(recipe.name, parents=[common], help=recipe.help,
                            description=recipe.description + (f" Stages: {stages}." if stages
                                                              else ""))
    parser.add_argument("stage", choices=[*(s.name for s in recipe.stages), "run"])
    example = f" (e.g. {recipe.example})" if recipe.example else ""
    parser.add_argument("config", help=f"the recipe's YAML{example}")
    parser.add_argument("--out", help=f"output folder (default runs/{recipe.name}-<name>)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.set_defaults(command_parser=parser, func=cmd_recipe, recipe=recipe)


COMMANDS = (_train, _plan, _eval, _export, _convert, _plot, _generate, _serve, _survey, _sweep, _vqa, _data,
            _assets)
# where each command collects dotted overrides typed after its options
OVERRIDES = {"train": "items", "plan": "items", "generate": "overrides", "serve": "overrides",
             "eval-survey": "overrides",
             "sweep": "overrides"}


def build_parser(description: str, version: str) -> argparse.ArgumentParser:
    """Every command's parser, then one per recipe."""
    parser = argparse.ArgumentParser(prog="jaxcult", description=description)
    parser.add_argument("--version", action="version", version=version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    for add in COMMANDS:
        add(sub, common)
    for warning in discover():
        print(warning, file=sys.stderr)
    for name, recipe in RECIPES:
        if name in sub.choices:
            print(f"warning: recipe {name!r} is named like a jaxcult command; not added",
                  file=sys.stderr)
            continue
        _recipe(sub, common, recipe)
    return parser


def overrides_field(args: argparse.Namespace) -> str | None:
    """The argument of the parsed command that collects stray `key=value` items."""
    return "overrides" if getattr(args, "recipe", None) else OVERRIDES.get(args.command)
