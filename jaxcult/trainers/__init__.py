"""Train state, pure train/eval/Fisher steps, and the host loop."""
