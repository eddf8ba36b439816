"""The `jaxcult train` use case: one run, or one run per seed of `trainer.seeds`."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

from jaxcult import rundir
from jaxcult.config import RunConfig
from jaxcult.config_loading import dump_config, load_config
from jaxcult.errors import UserError
from jaxcult.run.summary import format_scores
from jaxcult.rundir import RunDir

log = logging.getLogger(__name__)


def train(config: RunConfig, run: RunDir, *, resume: bool = False,
          overwrite: bool = False) -> dict:
    """Train `config` into `run`, holding its lock (a second writer fails naming this one);
    returns the summary (`Interrupted` when a signal stopped it).

    JAX and the model code are imported here, not at module level, so config mistakes answer
    before those heavy imports."""
    import jax

    from jaxcult.locks import FolderLock, held_by
    from jaxcult.run.seeds import train_seeds
    from jaxcult.run.single import start_distributed, train_one

    if config.mesh.distributed:
        start_distributed(config.mesh)  # first: the lock is process 0's, the one that writes
    parent = held_by(run.root.parent) if run.root.name.startswith("seed-") else None
    if parent is not None:  # a multi-seed run holds its own folder, not each seed's
        raise UserError(f"{run.root}: a seed of the multi-seed run in {run.root.parent}, which "
                        f"is being trained ({parent}); wait for it")
    lock = FolderLock(run.root, "run directory") if jax.process_index() == 0 else nullcontext()
    with lock:
        rundir.check_writable(run.root, overwrite=overwrite, resume=resume)  # again, as holder
        if resume and not config.trainer.seeds:  # a multi-seed run starts such a seed afresh
            rundir.check_resumable(run)
        if config.trainer.seeds:
            return train_seeds(config, run, resume=resume, overwrite=overwrite)
        return train_one(config, run, resume=resume, overwrite=overwrite)


DEFAULT_CONFIG = Path("experiments") / "default.yaml"


def default_config_path() -> Path:
    """`experiments/default.yaml` in the working directory, else in the source checkout."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = root / DEFAULT_CONFIG
        if candidate.exists():
            return candidate
    raise UserError(f"no config given and {DEFAULT_CONFIG} not found in {Path.cwd()} or the "
                    f"jaxcult source tree; pass a config file")


def train_command(config_path: Path | None, overrides: list[str], *, run_dir: str | None = None,
                  resume: str | None = None, overwrite: bool = False, print_config: bool = False,
                  dry: bool = False) -> str:
    """`jaxcult train`: resolve the config and the run directory, then train (or only show
    the config, or dry-run); returns what the command shows: the per-language scores (mean
    and std over seeds for several), the resolved config, or the dry run's report."""
    if resume:
        moved = [o for o in overrides if not o.startswith("mesh.")]
        if config_path is not None or moved:
            raise UserError("--resume continues a run with its own config.yaml; do not pass a "
                            "config file or overrides other than mesh.* (found "
                            f"{config_path or moved[0]!r})")
        run = rundir.check_writable(Path(resume), overwrite=False, resume=True)
        config = load_config(run.config, overrides)
    else:
        config = load_config(config_path or default_config_path(), overrides)
        root = Path(run_dir) if run_dir else rundir.default_run_root(config.name)
        run = rundir.check_writable(root, overwrite=overwrite, resume=False)
    if print_config:
        return dump_config(config)
    if dry:
        from jaxcult.run.dry_run import dry_run

        return dry_run(config)
    log.info(f"run directory: {run.root} (written once the model and data have loaded)")
    summary = train(config, run, resume=bool(resume), overwrite=overwrite)
    import jax

    if jax.process_index() != 0:  # one table per run, from the process that writes it
        return ""
    if config.trainer.seeds:
        from jaxcult.run.seeds import format_mean_std

        table = format_mean_std(summary)
    else:
        table = format_scores(summary)
    return f"{table}\nrun directory: {run.root}"  # repeated: the start's line has scrolled away
