"""Train state, pure train/eval/Fisher steps, the masked optimizer, and the host loop with its
hooks. Receives a built model: never imports `hub/` or `models/`."""
