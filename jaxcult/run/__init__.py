"""Use cases: one module per command (train, eval, export, ...); `cli.py` calls nothing else."""
