"""Parameter-efficient fine-tuning: bottleneck adapters and parameter groups."""
