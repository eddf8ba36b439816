"""Parameter-efficient fine-tuning modules (bottleneck, NICE invertible, LoRA) and the
parameter groups schedules unfreeze. Their foreign file formats live in `jaxcult.hub`."""
