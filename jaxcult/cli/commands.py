"""What each `jaxcult` command does with its parsed arguments: call one use case of
`jaxcult.run` (or a recipe), and print what it returns on stdout.

Heavy imports (jax, flax, transformers) happen inside the command functions so that `--help`
answers instantly.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import yaml

from jaxcult.errors import UserError


def _show(text: str) -> int:
    """A command's result on stdout (progress and notes go to stderr, through logging)."""
    if text:
        print(text.rstrip("\n"))
    return 0


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
    return _show(train_command(config_path, overrides, run_dir=args.run_dir, resume=args.resume,
                               overwrite=args.overwrite, print_config=args.print_config,
                               dry=args.dry_run))


def cmd_plan(args: argparse.Namespace) -> int:
    from jaxcult.run.plan import plan_command

    config_path, overrides = _split_config_and_overrides(args)
    return _show(plan_command(config_path, overrides, devices=args.devices, mesh=args.mesh,
                              device_memory=args.device_memory))


def cmd_eval(args: argparse.Namespace) -> int:
    from jaxcult.run.restore import rescore_run
    from jaxcult.run.summary import format_scores

    languages = [x for x in args.languages or [] if "=" not in x]  # overrides typed after them
    overrides = args.overrides + [x for x in args.languages or [] if "=" in x]
    summary, written = rescore_run(Path(args.run_dir), overrides, languages=languages or None,
                                   latest=args.latest_checkpoint)
    return _show(f"{format_scores(summary)}\nwritten: {written}")


def cmd_vqa(args: argparse.Namespace) -> int:
    from jaxcult.run.vqa_score import format_scores, score_command

    scores = score_command(Path(args.predictions), Path(args.data), args.split,
                           Path(args.out) if args.out else None,
                           Path(args.plot) if args.plot else None)
    return _show(format_scores(scores))


def cmd_data(args: argparse.Namespace) -> int:
    from jaxcult.run.data_command import inspect_command, prepare_command

    data_dir = Path(args.data_dir) if args.data_dir else None
    if args.action == "prepare":
        return _show(prepare_command(args.name, Path(args.manual_dir) if args.manual_dir else None,
                                     data_dir))
    return _show(inspect_command(args.name, data_dir, args.examples))


def cmd_plot(args: argparse.Namespace) -> int:
    from jaxcult.run.assets import plot_run

    return _show(plot_run(Path(args.run_dir)))


def cmd_convert(args: argparse.Namespace) -> int:
    from jaxcult.run.export import convert_model

    return _show(str(convert_model(args.source, Path(args.out), overwrite=args.overwrite)))


def cmd_export(args: argparse.Namespace) -> int:
    from jaxcult.run.export import export_run

    return _show(str(export_run(Path(args.run_dir), args.format, Path(args.out), name=args.name,
                                overwrite=args.overwrite, no_head=args.no_head,
                                latest=args.latest_checkpoint)))


def cmd_generate(args: argparse.Namespace) -> int:
    from jaxcult.run.generate import generate_command

    counts = generate_command(args.model, Path(args.prompts), Path(args.out), args.overrides,
                              chat=args.chat, system=args.system, adapter=args.adapter,
                              merge=args.merge)
    return _show(yaml.safe_dump({"out": str(args.out), **counts}, sort_keys=False))


def cmd_serve(args: argparse.Namespace) -> int:
    from jaxcult.run.serve import serve_command

    return _show(serve_command(args.model, args.overrides, adapters=args.adapter, name=args.name,
                               host=args.host, port=args.port, gather_ms=args.gather_ms))


def cmd_eval_survey(args: argparse.Namespace) -> int:
    from jaxcult.run.survey import survey_command

    questions = [q for item in args.questions for q in item.split(",") if q] if args.questions \
        else None
    summary = survey_command(args.model, Path(args.survey), args.culture, Path(args.out),
                             args.overrides, personas=args.personas, mode=args.mode,
                             baseline=args.baseline, seed=args.seed, questions=questions,
                             translations=Path(args.translations) if args.translations
                             else None, adapter=args.adapter, split=args.split,
                             parsing=args.parsing, endpoint=args.endpoint,
                             api_key_env=args.api_key_env, concurrency=args.concurrency)
    return _show(yaml.safe_dump({"out": str(args.out), "cultures": summary["cultures"],
                                 "average": summary["average"],
                                 "definitions": summary["definitions"]}, sort_keys=False))


def cmd_recipe(args: argparse.Namespace) -> int:
    from jaxcult.recipes.runner import run_recipe

    facts = run_recipe(args.recipe, args.stage, Path(args.config), args.overrides,
                       Path(args.out) if args.out else None)
    return _show(yaml.safe_dump(facts, sort_keys=False, allow_unicode=True))


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
    from jaxcult.run.sweep import (
        grid_cells,
        override_text,
        parse_grid,
        read_sweep_file,
        sweep_command,
    )
    from jaxcult.run.sweep_report import results_markdown

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
    record = sweep_command(config, cells, seeds, out, overrides, baseline=baseline,
                           command=command)
    return _show(results_markdown(record))


def cmd_assets(args: argparse.Namespace) -> int:
    from jaxcult.run.assets import asset_command

    return _show(asset_command(args.action, args.names))
