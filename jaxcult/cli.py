"""The `jaxcult` command line: train, eval, export, convert, plot, assets.

Heavy imports (jax, flax, transformers) happen inside the command functions so that `--help`
and config errors answer instantly. A `UserError` becomes one line on stderr and exit code 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from jaxcult.errors import UserError

DEFAULT_CONFIG = Path("experiments") / "default.yaml"


def default_config_path() -> Path:
    """`experiments/default.yaml` in the working directory, else in the source checkout."""
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        candidate = root / DEFAULT_CONFIG
        if candidate.exists():
            return candidate
    raise UserError(f"no config given and {DEFAULT_CONFIG} not found in {Path.cwd()} or the "
                    f"jaxcult source tree; pass a config file")


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
    from jaxcult import rundir
    from jaxcult.config_loading import dump_config, load_config

    config_path, overrides = _split_config_and_overrides(args)
    if args.resume:
        resume_dir = Path(args.resume)
        moved = [o for o in overrides if not o.startswith("mesh.")]
        if config_path is not None or moved:
            raise UserError("--resume continues a run with its own config.yaml; do not pass a "
                            "config file or overrides other than mesh.* (found "
                            f"{config_path or moved[0]!r})")
        run = rundir.check_writable(resume_dir, overwrite=False, resume=True)
        config = load_config(run.config, overrides)
    else:
        config = load_config(config_path or default_config_path(), overrides)
        root = Path(args.run_dir) if args.run_dir else rundir.default_run_root(config.name)
        run = rundir.check_writable(root, overwrite=args.overwrite, resume=False)
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    from jaxcult.trainers.loop import dry_run, train

    if args.dry_run:
        dry_run(config)
        return 0
    train(config, run, resume=bool(args.resume), overwrite=args.overwrite)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from jaxcult.trainers.restore import rescore_run

    languages = [x for x in args.languages or [] if "=" not in x]  # overrides typed after them
    overrides = args.overrides + [x for x in args.languages or [] if "=" in x]
    rescore_run(Path(args.run_dir), overrides, languages=languages or None)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from jaxcult.report import write_report

    for path in write_report(Path(args.run_dir)):
        print(path)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from jaxcult.hub.export import save_pretrained
    from jaxcult.hub.pretrained import load_pretrained

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"{out}: output directory is not empty; pass --overwrite to replace files")
    model, tokenizer = load_pretrained(args.source)
    save_pretrained(model, out, tokenizer=tokenizer)
    print(out)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"{out}: output directory is not empty; pass --overwrite to replace files")
    from jaxcult.trainers.restore import load_run_model

    config, model = load_run_model(Path(args.run_dir))
    backbone = getattr(model, "encoder", model)
    if args.format == "adapterhub":
        from jaxcult.peft.adapterhub import export_adapterhub
        from jaxcult.peft.bottleneck import PLACEMENTS

        if config.peft.kind not in PLACEMENTS:
            raise UserError(f"export --format adapterhub: {args.run_dir} trained peft.kind="
                            f"{config.peft.kind!r}; AdapterHub's format holds bottleneck adapters "
                            f"({', '.join(PLACEMENTS)})")
        export_adapterhub(model, out, name=args.name or config.name)
    else:
        from jaxcult.peft.lora import saved_modules
        from jaxcult.peft.peft_format import export_peft

        if config.peft.kind != "lora":
            raise UserError(f"export --format peft: {args.run_dir} trained peft.kind="
                            f"{config.peft.kind!r}; the PEFT format holds LoRA adapters only")
        export_peft(backbone, out, alpha=config.peft.lora_alpha, dropout=config.peft.lora_dropout,
                    base_model=config.model.name,
                    saved=saved_modules(backbone, config.peft.modules_to_save))
    print(out)
    return 0


def cmd_assets(args: argparse.Namespace) -> int:
    from jaxcult.hub import assets

    if args.action == "list":
        for asset in assets.ASSETS.values():
            state = "installed" if asset.installed() else "missing"
            print(f"{asset.name:24} {asset.kind:8} {state:9} {asset.description}")
        return 0
    if not args.names:
        raise UserError(f"assets {args.action}: name at least one asset ({', '.join(assets.ASSETS)})")
    for name in args.names:
        if args.action == "path":
            asset = assets.get_asset(name)
            for role in asset.files:
                print(asset.path(role))
        else:
            assets.install(name)
    return 0


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
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", parents=[common],
                        help="re-score a run's best checkpoint on every (or some) language(s)")
    ev.add_argument("run_dir")
    ev.add_argument("--languages", nargs="*", help="languages to score (default: the run's)")
    ev.add_argument("overrides", nargs="*",
                    help="data.* / task decoding / trainer.eval_batch_size overrides")
    ev.set_defaults(func=cmd_eval)

    export = sub.add_parser("export", parents=[common], help="export adapters (AdapterHub / PEFT)")
    export.add_argument("run_dir")
    export.add_argument("--format", choices=["adapterhub", "peft"], required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--name", help="adapter name inside the AdapterHub files (default: run name)")
    export.add_argument("--overwrite", action="store_true")
    export.set_defaults(func=cmd_export)

    convert = sub.add_parser("convert", parents=[common],
                             help="convert weights (asset, HF dir, E5S1 file) to an HF directory")
    convert.add_argument("source")
    convert.add_argument("--out", required=True)
    convert.add_argument("--overwrite", action="store_true")
    convert.set_defaults(func=cmd_convert)

    plot = sub.add_parser("plot", parents=[common], help="regenerate plots/ and report.md of a run")
    plot.add_argument("run_dir")
    plot.set_defaults(func=cmd_plot)

    assets_parser = sub.add_parser("assets", parents=[common], help="offline pretrained assets")
    assets_parser.add_argument("action", choices=["list", "path", "install"])
    assets_parser.add_argument("names", nargs="*")
    assets_parser.set_defaults(func=cmd_assets)
    return parser


def _version() -> str:
    from jaxcult import __version__

    return f"jaxcult {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides may follow options: `train cfg.yaml --run-dir d a.b=1`
        if args.command != "train" or any(item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.items = [*args.items, *extra]
    try:
        return args.func(args)
    except UserError as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
