"""The figures of a plan: the config's model as shapes on the mesh, its compiled train step's
memory analysis, and the analytic estimate beside it (`jaxcult.run.plan`)."""

from __future__ import annotations

import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcult.config import RunConfig
from jaxcult.data import resolve_dataset
from jaxcult.errors import UserError
from jaxcult.hub.vision import load_backbone as load_image_backbone
from jaxcult.models.encoder import EncoderConfig
from jaxcult.run.build import ModelParts, build_model
from jaxcult.run.plan_report import Plan, size
from jaxcult.run.single import step_options
from jaxcult.sharding import (
    activation_rules,
    axes_of,
    batch_sharding,
    check_batch_divisible,
    make_mesh,
    named_sharding,
)
from jaxcult.tasks import Loaders, Task, resolve_task
from jaxcult.trainers.optim import lr_schedule, masked_optimizer
from jaxcult.trainers.program import ModelProgram, TrainProgram, init_state, step_shardings

log = logging.getLogger(__name__)


def plan_task(config: RunConfig) -> Task:
    """The task family, sized by the dataset's labels when they can be read without data files
    (a plan needs no data: a chat dataset's folder may not exist yet)."""
    try:
        labels = resolve_dataset(config.data).info(config.data).labels
        reason = ""
    except UserError as error:
        labels, reason = (), str(error)
    task = resolve_task(config.task, labels, Loaders(image_backbone=load_image_backbone))
    if task.uses_labels and not task.num_labels:
        raise UserError(f"jaxcult plan: the {task.name} head is sized by the dataset's labels, "
                        f"which could not be read ({reason}); set task.num_labels")
    return task


def on_mesh_abstract(tree, mesh, rules):
    """Every variable of an NNX state as a shape with the sharding its logical axes ask for."""
    def one(variable):
        value = variable.get_value()
        sharding = named_sharding(axes_of(variable), value.shape, rules, mesh)
        return variable.replace(value=jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding))

    return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def device_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded shapes."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        itemsize = 8 if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf.dtype.itemsize
        total += int(np.prod(shape)) * itemsize
    return total


def abstract_state(params, optimizer, groups: int, config: RunConfig):
    """The train state of `params` as sharded shapes: the optimizer's init is compiled once to
    learn where XLA puts each moment (beside its parameter)."""
    def init(params):
        return init_state(params, optimizer, jnp.ones(groups, bool), config.trainer.seed,
                          track=config.fisher.in_step)

    shapes = jax.eval_shape(init, params)
    shardings = jax.jit(init).lower(params).compile().output_shardings
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, shardings)


def make_plan(config: RunConfig, device_memory: int | None) -> Plan:
    """Build, place and compile the config's train step as shapes; collect both sets of figures."""
    mesh, rules = make_mesh(config.mesh), config.mesh.rules
    trainer = config.trainer
    if trainer.vectorize_seeds:
        raise UserError("jaxcult plan compiles one seed's train step; trainer.vectorize_seeds "
                        "trains several as one program, which it does not plan yet")
    check_batch_divisible(trainer.batch_size, mesh, rules, "trainer.batch_size")
    log.info("plan: building %s as shapes", config.model.name)
    task = plan_task(config)
    parts = build_model(config, task, None, shapes_only=True)
    frozen = on_mesh_abstract(parts.frozen, mesh, rules)
    lr = lr_schedule(config.optimizer, trainer.steps or 1000)   # its length changes no buffer
    optimizer = masked_optimizer(config.optimizer, parts.groups, lr)
    state = abstract_state(on_mesh_abstract(parts.params, mesh, rules), optimizer, len(parts.groups),
                           config)
    batch = {key: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=batch_sharding(mesh, rules, len(s.shape)))
             for key, s in task.plan_batch(trainer.batch_size, config.model.max_length).items()}
    program = TrainProgram(ModelProgram(task, None, parts.graphdef, parts.groups), optimizer, lr,
                           step_options(config, parts.groups),
                           step_shardings(state, frozen, batch_sharding(mesh, rules, 1), task.batch_keys))
    log.info("plan: compiling the train step for %d device(s) (a paper-size model: about a "
             "minute)", mesh.devices.size)
    with jax.set_mesh(mesh), activation_rules(rules):
        started = time.perf_counter()
        lowered = program.train_step.lower(state, frozen, batch)
        lowered_at = time.perf_counter()
        compiled = lowered.compile()
        seconds = (lowered_at - started, time.perf_counter() - lowered_at)
    compiled_figures = compiler_figures(compiled.memory_analysis())
    analytic = analytic_figures(config, task, parts, frozen, state, batch, mesh)
    per_row = int(np.prod(batch["input_ids"].shape[1:]))

    def activations_of(rows: int, remat: str) -> int:
        return activation_bytes(config, task, parts.architecture, rows * per_row, remat)

    return Plan(describe(config, parts, mesh, batch), analytic, compiled_figures, *seconds,
                device_memory, suggestions(config, analytic, activations_of, compiled_figures["peak"],
                                           mesh, device_memory))


def compiler_figures(analysis) -> dict[str, int]:
    """XLA's per-device figures; the peak counts donated (aliased) outputs once."""
    figures = {"arguments": analysis.argument_size_in_bytes,
               "outputs": analysis.output_size_in_bytes - analysis.alias_size_in_bytes,
               "temporaries": analysis.temp_size_in_bytes,
               "code": analysis.generated_code_size_in_bytes}
    figures["peak"] = sum(figures.values())
    return figures


def batch_split(mesh, rules) -> int:
    spec = batch_sharding(mesh, rules, 1).spec[0]
    axes = [spec] if isinstance(spec, str) else list(spec or [])
    return int(np.prod([mesh.shape[a] for a in axes])) if axes else 1


def rows_per_micro_step(config: RunConfig, mesh) -> int:
    """Rows one device computes per micro-batch. Micro-batch i takes rows i, i + accum, ...,
    so when a device holds a multiple of `grad_accum` rows each micro-step stays on its own
    rows; otherwise XLA gathers every micro-batch whole onto each device."""
    rows, accum = config.trainer.batch_size, config.trainer.grad_accum
    held = rows // batch_split(mesh, config.mesh.rules)
    return held // accum if held % accum == 0 else rows // accum


def tokens_per_device(config: RunConfig, batch: dict, mesh) -> int:
    """Tokens of one micro-batch on one device (choices and pairs included)."""
    return rows_per_micro_step(config, mesh) * int(np.prod(batch["input_ids"].shape[1:]))


def activation_bytes(config: RunConfig, task: Task, arch, tokens: int, remat: str) -> int:
    """What the backward keeps, per device. Per layer and token: about six hidden-size
    vectors, the key/value projections and the MLP-width vectors in the compute dtype (an
    encoder's GELU MLP two: the activation's derivative and its output; a gated decoder MLP
    four: gate, up, the activation and the product), and the attention weights twice
    (float32 for the softmax, the compute dtype for the product). With `remat` only each
    layer's input (`layer`) or also its matmul outputs (`layer_save_dots`), plus one layer
    recomputed at a time. The logits (`Task.logit_positions`: a decoder's every
    token, a masked LM's predicted positions) and their float32 gradient sit on top of all the
    layers' residuals, but a recomputed layer only after the logits are gone."""
    width = jnp.dtype(config.model.compute_dtype).itemsize
    hidden, inter = arch.hidden_size, arch.intermediate_size
    heads, layers, length = arch.num_attention_heads, arch.num_hidden_layers, config.model.max_length
    kv = getattr(arch, "num_key_value_heads", heads) * (hidden // heads)
    mlp = 2 if isinstance(arch, EncoderConfig) else 4
    full = tokens * ((6 * hidden + 2 * kv + mlp * inter) * width + heads * length * (4 + width))
    logits = task.logit_positions(tokens) * arch.vocab_size * (width + 4)
    if remat == "none":
        return layers * full + logits
    kept = hidden if remat == "layer" else 3 * hidden + 2 * kv + 2 * inter
    return layers * tokens * kept * width + max(logits, full)


def analytic_figures(config: RunConfig, task: Task, parts: ModelParts, frozen, state, batch,
                     mesh) -> dict[str, int]:
    trainable = device_bytes(state.params)
    figures = {"frozen": device_bytes(frozen), "trainable": trainable,
               "optimizer": device_bytes(state.opt_state), "batch": device_bytes(batch)}
    figures["arguments"] = sum(figures.values()) + device_bytes((state.step, state.mask, state.rng,
                                                                 state.track))
    tokens = tokens_per_device(config, batch, mesh)
    figures["activations"] = activation_bytes(config, task, parts.architecture, tokens,
                                              config.model.remat)
    figures["gradients"] = 3 * trainable   # gradients, Adam's update, the new parameters
    figures["temporaries"] = figures["activations"] + figures["gradients"]
    figures["peak"] = figures["arguments"] + figures["temporaries"]
    return figures


def describe(config: RunConfig, parts: ModelParts, mesh, batch: dict) -> list[str]:
    arch, trainer = parts.architecture, config.trainer
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in batch.items())
    quantized = f", {config.model.quantize} base" if config.model.quantize != "none" else ""
    notes = []
    held = trainer.batch_size // batch_split(mesh, config.mesh.rules)
    if held % trainer.grad_accum:
        notes.append(f"note: each device holds {held} row(s), not a multiple of trainer.grad_accum "
                     f"{trainer.grad_accum}: every micro-batch is computed whole on every device")
    if jnp.dtype(config.model.compute_dtype).itemsize < 4:
        notes.append("note: XLA's CPU backend computes 16-bit matmuls in float32, so the compiler "
                     "column includes float32 copies of their operands that a GPU or TPU program "
                     "does not hold (up to twice the 16-bit weights)")
    return [*notes, f"plan of {config.name}: mesh {dict(mesh.shape)} over {mesh.devices.size} simulated "
            f"CPU device(s)",
            f"model: {config.model.name} ({arch.num_hidden_layers} layers, "
            f"{parts.total_params:,} parameters{quantized}; trainable "
            f"{sum(parts.counts.values()):,}), remat {config.model.remat}"
            f"{', layers scanned' if config.model.scan_layers else ''}",
            f"batch: {shapes}; grad_accum {trainer.grad_accum}: "
            f"{tokens_per_device(config, batch, mesh):,} tokens per device per micro-batch"]


def suggestions(config: RunConfig, analytic: dict[str, int], activations_of, peak: int, mesh,
                device_memory: int | None) -> list[str]:
    """Single changes that would bring the compiled peak under `device_memory`, each with its
    estimated peak: the analytic change applied to the compiled figure. `activations_of(rows,
    remat)` is the activation estimate for `rows` rows per device and micro-step."""
    if device_memory is None or peak <= device_memory:
        return []
    rows = rows_per_micro_step(config, mesh)
    now = analytic["activations"]
    options = []
    if config.model.remat == "none":
        options.append(("model.remat=layer", peak - now + activations_of(rows, "layer")))
    held = config.trainer.batch_size // batch_split(mesh, config.mesh.rules)
    accum = config.trainer.grad_accum
    if held % accum:   # micro-batches gathered whole onto each device
        fitting = max(d for d in range(1, held + 1) if held % d == 0 and d <= accum)
        options.append((f"trainer.grad_accum={fitting}",
                        peak - now + activations_of(held // fitting, config.model.remat)))
    elif held % (2 * accum) == 0:
        options.append((f"trainer.grad_accum={2 * accum}",
                        peak - now + activations_of(rows // 2, config.model.remat)))
    if mesh.shape["data"] % 2 == 0:
        held_bytes = analytic["frozen"] + analytic["trainable"] + analytic["optimizer"]
        options.append((f"mesh.data={mesh.shape['data'] // 2} mesh.fsdp={2 * mesh.shape['fsdp']}",
                        peak - held_bytes // 2))
    if config.model.quantize == "none" and config.peft.kind != "full":
        options.append(("model.quantize=nf4", peak - int(analytic["frozen"] * 0.7)))
    fitting = [f"{change}: about {size(after)}" for change, after in options if after <= device_memory]
    if fitting:
        return fitting
    return ["no single change fits; estimates: " + "; ".join(
        f"{change} {size(after)}" for change, after in options)] if options else []
