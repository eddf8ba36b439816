"""Preference optimisation against transformers-TRL on a tiny random Llama: the same tokens,
and each objective's loss and LoRA gradient on the same batch; the adapter-off reference is the
base model; bad pairs and settings are one line, exit 2."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from jaxcult import load_pretrained  # noqa: E402
from jaxcult.config_loading import load_config  # noqa: E402
from jaxcult.hub.peft_format import export_peft  # noqa: E402
from jaxcult.run.build import build_run  # noqa: E402

PLAIN = [{"prompt": "Say hi to Ana", "chosen": " Hi Ana!", "rejected": " Go away."},
         {"prompt": "Best tea?", "chosen": " Green tea from Japan", "rejected": " no"},
         {"prompt": "2+2=", "chosen": "4", "rejected": "five"}]
CHAT = [{"messages": [{"role": "user", "content": "Name a fruit"}], "chosen": "Mango",
         "rejected": "A rock, I think"},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Capital of Peru?"}],
         "chosen": "Lima", "rejected": "I could not say, sorry"}]
BETA = 0.3


def write_pairs(folder, records, validation=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", records), ("validation", validation or records)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def settings(root, data, objective: str, *extra: str) -> list[str]:
    return ["task.name=preference", f"task.objective={objective}", f"task.beta={BETA}",
            f"model.name={root}", "model.max_length=96", "data.name=preference_jsonl",
            f"data.manual_dir={data}", "data.eval_split=validation", "schedule.name=standard",
            "fisher.track_every=0", "peft.kind=lora", "peft.lora_r=4", "peft.lora_alpha=8",
            "peft.target_modules=[q, v]",
            "trainer.batch_size=2", "trainer.eval_batch_size=4", "logging.progress=off",
            "logging.tensorboard=false", "checkpoint.async_save=false", *extra]


def trained_adapter(built):
    """The run's LoRA parameters with non-zero B factors (the policy differs from the base)."""
    counter = iter(range(1000))

    def randomise(path, value):
        if "lora_b" not in jax.tree_util.keystr(path):
            return value
        return 0.3 * jax.random.normal(jax.random.key(next(counter)), value.shape, value.dtype)
    return {g: jax.tree_util.tree_map_with_path(randomise, s) for g, s in built.parts.params.items()}


def jax_loss_and_grads(built, params, batch):
    program, task = built.model_program(), built.plugins.task

    def loss(params):
        return task.loss(program.outputs(params, built.parts.frozen, batch), batch)
    (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return float(value), metrics, grads


def torch_grads_by_jax_path(model) -> dict[str, np.ndarray]:
    """PEFT's LoRA gradients under jaxcult's parameter paths (jaxcult's kernels are [in, out])."""
    grads = {}
    for name, parameter in model.named_parameters():
        found = re.search(r"layers\.(\d+)\.self_attn\.(\w)_proj\.lora_([AB])", name)
        if found and parameter.grad is not None:
            layer, projection, factor = found.groups()
            key = (f"['lora/layer_{layer}']['layers'][{layer}]['{projection}_proj']"
                   f"['lora_{factor.lower()}'].value")
            grads[key] = parameter.grad.numpy().T
    return grads


def hf_records(records):
    """TRL's spelling of the same pairs (conversational: the replies are assistant turns)."""
    if "messages" not in records[0]:
        return records
    return [{"prompt": r["messages"], **{k: [{"role": "assistant", "content": r[k]}]
                                         for k in ("chosen", "rejected")}} for r in records]


def from_dpo_collator(batch) -> dict[str, jnp.ndarray]:
    """TRL's [chosen rows; rejected rows] batch as jaxcult's [pairs, 2, length] arrays."""
    def paired(x):
        x = x.numpy()
        return np.stack(np.split(x, 2), axis=1)
    ids, attention, reply = (paired(batch[k]) for k in ("input_ids", "attention_mask",
                                                        "completion_mask"))
    return as_pairs(ids, attention, reply)


def from_orpo_collator(batch) -> dict[str, jnp.ndarray]:
    """ORPO/CPO's chosen_* and rejected_* rows (labels -100 on the prompt) as jaxcult arrays."""
    width = max(batch[f"{side}_input_ids"].shape[1] for side in ("chosen", "rejected"))

    def padded(key, value):
        x = batch[key].numpy()
        return np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=value)
    ids = np.stack([padded(f"{s}_input_ids", 0) for s in ("chosen", "rejected")], axis=1)
    attention = np.stack([padded(f"{s}_attention_mask", 0) for s in ("chosen", "rejected")], 1)
    reply = np.stack([padded(f"{s}_labels", -100) != -100 for s in ("chosen", "rejected")], 1)
    return as_pairs(ids, attention, reply.astype(np.int32))


def as_pairs(ids, attention, reply) -> dict[str, jnp.ndarray]:
    labels, loss_mask = np.zeros_like(ids), np.zeros_like(ids)
    labels[..., :-1], loss_mask[..., :-1] = ids[..., 1:], reply[..., 1:]
    return {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(attention),
            "labels": jnp.asarray(labels), "loss_mask": jnp.asarray(loss_mask)}


def trl_trainer(objective, model, tokenizer, records, out):
    common = dict(output_dir=str(out), beta=BETA, report_to=[], use_cpu=True, bf16=False,
                  per_device_train_batch_size=len(records))
    dataset = datasets.Dataset.from_list(hf_records(records))
    if objective in ("dpo", "ipo"):
        loss_type = "sigmoid" if objective == "dpo" else "ipo"
        args = trl.DPOConfig(loss_type=[loss_type], max_length=None, **common)
        reference = transformers.AutoModelForCausalLM.from_pretrained(model.peft_config[
            "default"].base_model_name_or_path)
        return trl.DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=dataset,
                              processing_class=tokenizer)
    if objective == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
        return ORPOTrainer(model=model, args=ORPOConfig(max_length=96, **common),
                           train_dataset=dataset, processing_class=tokenizer)
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    args = CPOConfig(loss_type="simpo", cpo_alpha=0.0, simpo_gamma=0.5, max_length=96, **common)
    return CPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


@pytest.fixture
def policy(tiny_chat_model, tmp_path):
    """(run builder, PEFT-wrapped HF twin builder) for one objective and record set."""
    root, _, tokenizer = tiny_chat_model

    def make(objective, records, *extra):
        write_pairs(tmp_path / "data", records)
        built = build_run(load_config(None, settings(root, tmp_path / "data", objective, *extra)))
        params = trained_adapter(built)
        from flax import nnx
        export_peft(nnx.merge(built.parts.graphdef, *params.values(), built.parts.frozen),
                    tmp_path / "adapter", alpha=8.0, base_model=str(root))
        hf = transformers.AutoModelForCausalLM.from_pretrained(root)
        twin = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter", is_trainable=True)
        return built, params, twin, tokenizer
    return make


@pytest.mark.parametrize("records", [PLAIN, CHAT], ids=["text", "chat"])
def test_pairs_tokenise_as_trl_does(policy, records, tmp_path):
    built, _, twin, tokenizer = policy("dpo", records)
    trainer = trl_trainer("dpo", twin, tokenizer, records, tmp_path / "trl")
    split = built.data.validation.arrays                       # in file order
    for i, row in enumerate(trainer.train_dataset):
        for j, side in enumerate(("chosen", "rejected")):
            length = int(split["attention_mask"][i, j].sum())
            assert split["input_ids"][i, j, :length].tolist() == row["prompt_ids"] + row[f"{side}_ids"]
            reply = np.flatnonzero(split["loss_mask"][i, j]) + 1   # positions of reply tokens
            assert reply.tolist() == list(range(len(row["prompt_ids"]), length))


@pytest.mark.parametrize("objective", ["dpo", "ipo", pytest.param("orpo", marks=pytest.mark.slow),
                                       "simpo"])   # orpo ~12 s: in the slow suite
def test_loss_and_gradient_equal_trl_on_the_same_batch(policy, objective, tmp_path):
    built, params, twin, tokenizer = policy(objective, PLAIN)
    trainer = trl_trainer(objective, twin, tokenizer, PLAIN, tmp_path / "trl")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PLAIN))])
    twin.train()
    if objective in ("dpo", "ipo"):
        expected = trainer.compute_loss(twin, batch)
        trl_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
        ours = from_dpo_collator(batch)
    else:
        expected, trl_metrics = trainer.get_batch_loss_metrics(twin, batch)
        ours = from_orpo_collator(batch)
    expected.backward()
    loss, metrics, grads = jax_loss_and_grads(built, params, ours)
    assert abs(loss - float(expected)) < 1e-5
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                 "logps/chosen", "logps/rejected"):     # what TRL logs for the same batch
        assert abs(float(metrics[name]) - trl_metrics[name]) < 1e-5, name
    theirs = torch_grads_by_jax_path(twin)
    ours_flat = {jax.tree_util.keystr(p): np.asarray(v)
                 for p, v in jax.tree_util.tree_leaves_with_path(grads)}
    assert set(theirs) == set(ours_flat) and len(theirs) == 8
    for key, value in theirs.items():
        np.testing.assert_allclose(ours_flat[key], value, atol=1e-5, err_msg=key)
    assert max(np.abs(v).max() for v in theirs.values()) > 1e-3   # the gradients are not trivial


def test_cdpo_label_smoothing_is_the_papers_loss(policy):
    """cDPO: -(1-e) log s(b.d) - e log s(-b.d), d the difference of the policy/reference log
    ratios, against a float64 computation from the sequences' log-probs."""
    built, params, _, _ = policy("dpo", PLAIN, "task.label_smoothing=0.2")
    task = built.plugins.task
    batch = {k: jnp.asarray(v[:3]) for k, v in built.data.train.arrays.items()}
    outputs = built.model_program().outputs(params, built.parts.frozen, batch)
    logps, reference = (np.asarray(outputs[k], np.float64) for k in ("logps", "reference"))
    delta = BETA * ((logps[:, 0] - reference[:, 0]) - (logps[:, 1] - reference[:, 1]))
    log_sigmoid = lambda x: -np.log1p(np.exp(-x))  # noqa: E731
    expected = -(0.8 * log_sigmoid(delta) + 0.2 * log_sigmoid(-delta))
    np.testing.assert_allclose(np.asarray(task.pair_losses(outputs)[0]), expected, rtol=1e-5)
    assert np.abs(delta).max() > 1e-2


@pytest.mark.parametrize("kind", ["lora", "pfeiffer", "houlsby"])
def test_adapters_off_reference_is_the_base_model(tiny_chat_model, tmp_path, kind):
    root = tiny_chat_model[0]
    write_pairs(tmp_path / "data", PLAIN)
    overrides = settings(root, tmp_path / "data", "dpo")
    if kind != "lora":
        overrides = [o for o in overrides if not o.startswith(("peft.lora", "peft.target"))]
        overrides[overrides.index("peft.kind=lora")] = f"peft.kind={kind}"
    built = build_run(load_config(None, overrides))
    params = trained_adapter(built) if kind == "lora" else jax.tree.map(
        lambda x: x + 0.2, built.parts.params)                  # any non-trivial adapter
    batch = {k: jnp.asarray(v) for k, v in built.data.train.arrays.items()}
    outputs = built.model_program().outputs(params, built.parts.frozen, batch)
    base, _ = load_pretrained(root)
    flat = lambda k: batch[k].reshape(-1, batch[k].shape[-1])  # noqa: E731
    log_probs = jax.nn.log_softmax(base(flat("input_ids"), flat("attention_mask")).logits, -1)
    picked = jnp.take_along_axis(log_probs, flat("labels")[..., None], -1)[..., 0]
    expected = np.asarray((picked * flat("loss_mask")).sum(-1)).reshape(-1, 2)
    np.testing.assert_allclose(np.asarray(outputs["reference"]), expected, atol=1e-4)
    assert np.abs(np.asarray(outputs["logps"]) - expected).max() > 1e-2  # the policy is not


def test_a_dpo_run_logs_trls_numbers_and_both_references_agree(tiny_chat_model, tmp_path):
    """At step 0 the adapters are the identity, so the precomputed reference equals the
    adapter-off one: two runs, one with each, log the same numbers step by step."""
    from jaxcult.cli import main

    root = tiny_chat_model[0]
    write_pairs(tmp_path / "data", PLAIN + CHAT)
    rows = {}
    for reference in ("adapters_off", "precomputed"):
        out = tmp_path / reference
        assert main(["train", "--run-dir", str(out), *settings(
            root, tmp_path / "data", "dpo", f"task.reference={reference}", "trainer.steps=6",
            "trainer.log_every=1", "trainer.eval_every=3", "optimizer.lr=0.05")]) == 0
        rows[reference] = [json.loads(line) for line in (out / "metrics.jsonl").read_text()
                           .splitlines()]
    train = [r for r in rows["adapters_off"] if r["split"] == "train"]
    assert len(train) == 6 and {"rewards/margins", "rewards/chosen", "rewards/rejected",
                                "rewards/accuracies", "logps/chosen", "logps/rejected",
                                "loss", "grad_norm"} <= set(train[0])
    assert abs(train[0]["loss"] - np.log(2)) < 1e-5          # policy == reference at step 0
    assert train[-1]["rewards/margins"] > train[0]["rewards/margins"]
    other = [r for r in rows["precomputed"] if r["split"] == "train"]
    for a, b in zip(train, other, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    evaluated = [r for r in rows["adapters_off"] if r["split"] != "train"]
    assert evaluated and {"loss", "accuracy", "rewards/margins"} <= set(evaluated[-1])
    summary = json.loads((tmp_path / "adapters_off" / "summary.json").read_text())
    assert summary["primary_metric"] == "loss"


@pytest.mark.parametrize("case, record, setting, message", [
    ("missing chosen", {"prompt": "Hi", "rejected": "no"}, None,
     r"train\.jsonl:1: missing or empty field 'chosen'"),
    ("identical", {"prompt": "Hi", "chosen": " yes", "rejected": "yes "}, None,
     r"train\.jsonl:1: 'chosen' and 'rejected' are the same reply"),
    ("empty after templating", {"prompt": "x" * 120, "chosen": "a", "rejected": "b"}, None,
     r"train\.jsonl:1: the prompt fills model\.max_length"),
    ("beta", None, "task.beta=0", r"task\.beta"),
    ("full model, adapters-off reference", None, "peft.kind=full",
     r"command line 'peft\.kind=full': peft\.kind: full trains no adapter"),
    ("reference for orpo", None, "task.reference=precomputed", r"task\.reference"),
    ("one reference, per-seed backbones", None,
     "task.reference=precomputed trainer.seeds=[0,1] model.name=random",
     r"trainer\.seeds: with model\.name=random every seed has its own backbone"),
])
def test_bad_pairs_and_settings_are_one_line_exit_2(tiny_chat_model, tmp_path, capsys, case,
                                                     record, setting, message):
    records = [record, *PLAIN] if record else PLAIN
    extra = setting.split() if setting else []
    if case == "full model, adapters-off reference":
        extra = ["peft.kind=full"]
    objective = "orpo" if case == "reference for orpo" else "dpo"
    write_pairs(tmp_path / "data", records, validation=PLAIN)
    overrides = settings(tiny_chat_model[0], tmp_path / "data", objective, *extra)
    (tmp_path / "pairs.yaml").write_text("name: pairs\n")
    if case == "full model, adapters-off reference":
        overrides = [o for o in overrides if not o.startswith(("peft.lora", "peft.target",
                                                                "peft.kind=lora"))]
    from jaxcult.cli import main
    code = main(["train", str(tmp_path / "pairs.yaml"), "--run-dir", str(tmp_path / "run"),
                 *overrides])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert code == 2 and len(errors) == 1 and re.search(message, errors[0]), errors
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_resumed_run_ends_as_the_uninterrupted_one(tiny_chat_model, tmp_path):
    """With the precomputed reference, which a resumed run scores again from the model as built
    (before the checkpoint is restored): the same losses, step by step."""
    import shutil

    from jaxcult.cli import main

    root = tiny_chat_model[0]
    write_pairs(tmp_path / "data", PLAIN + CHAT)
    overrides = settings(root, tmp_path / "data", "ipo", "task.reference=precomputed",
                         "trainer.steps=6", "trainer.log_every=1", "checkpoint.every=3",
                         "optimizer.lr=0.05")
    for name in ("whole", "cut"):
        assert main(["train", "--run-dir", str(tmp_path / name), *overrides]) == 0
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "6")   # preempted after step 3's checkpoint
    (tmp_path / "cut" / "summary.json").unlink()
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0

    def train_losses(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}
    whole, cut = train_losses(tmp_path / "whole"), train_losses(tmp_path / "cut")
    assert sorted(cut) == sorted(whole) == list(range(1, 7))
    for step in whole:
        assert cut[step] == pytest.approx(whole[step], abs=1e-6), step
