"""Generation settings bounded before anything is allocated.

A `max_new_tokens` beyond the model's context, or a KV cache larger than the memory the device
has free, would otherwise hang in the decode loop or end in an allocator's traceback minutes
later; both are one line naming the setting here.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from jaxcult.config import GenerationConfig
from jaxcult.errors import UserError

MIB = 1024 ** 2


def free_bytes(device: jax.Device) -> int | None:
    """Memory this device can still allocate: the accelerator's own count, or the host's
    available memory for the CPU backend (None when neither says)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def kv_cache_bytes(model_config, batch: int, positions: int) -> int:
    """Keys and values of every layer for `batch` rows of `positions` each."""
    per_position = (2 * model_config.num_hidden_layers * model_config.num_key_value_heads
                    * model_config.head_dim * jnp.dtype(model_config.dtype).itemsize)
    return batch * positions * per_position


def check_generation_fits(model_config, config: GenerationConfig, devices: int = 1,
                          free: int | None = None) -> None:
    """Refuse settings whose decoding cannot fit: new tokens past the model's context (after
    the shortest prompt bucket), or a cache (`devices` share the batch) above `free` bytes
    (default: what the first device has free now)."""
    context = model_config.max_position_embeddings
    room = context - min(config.length_buckets)
    if config.max_new_tokens > room:
        raise UserError(f"generation.max_new_tokens={config.max_new_tokens}: the model's context "
                        f"is {context} positions, so after a prompt of "
                        f"{min(config.length_buckets)} (the smallest of generation.length_buckets)"
                        f" at most {room} new tokens fit")
    positions = max(config.length_buckets) + config.max_new_tokens
    needed = kv_cache_bytes(model_config, config.batch_size, positions) // max(devices, 1)
    pool = f" plus the {config.prefix_cache_mb} MiB prefix cache" if config.prefix_cache_mb else ""
    needed += config.prefix_cache_mb * MIB
    free = free_bytes(jax.devices()[0]) if free is None else free
    if free is not None and needed > free:
        raise UserError(f"generation: a KV cache of generation.batch_size={config.batch_size} x "
                        f"{positions} positions (largest length bucket + max_new_tokens){pool} "
                        f"needs {needed / MIB:,.0f} MiB per device, {free / MIB:,.0f} MiB is free; "
                        f"lower generation.max_new_tokens, batch_size, length_buckets"
                        f"{' or prefix_cache_mb' if pool else ''}")
