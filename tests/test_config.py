"""Config loading: inheritance, overrides, validation errors that name file and key."""

from __future__ import annotations

import pytest

from jaxcult.config_loading import dump_config, load_config, parse_override, same_config
from jaxcult.errors import UserError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_validate():
    config = load_config(None)
    assert config.schedule.name == "fun"
    assert config.optimizer.adam_count == "per_group"


def test_inheritance_merges_sections(tmp_path):
    write(tmp_path / "base.yaml", "name: base\noptimizer:\n  lr: 0.1\n  name: sgd\ntrainer:\n  steps: 5\n")
    write(tmp_path / "child.yaml", "base: base.yaml\nname: child\noptimizer:\n  lr: 0.2\n")
    config = load_config(tmp_path / "child.yaml")
    assert config.name == "child"
    assert config.optimizer.lr == 0.2
    assert config.optimizer.name == "sgd"  # inherited, not replaced by the child's section
    assert config.trainer.steps == 5


def test_inheritance_chain_and_cycle(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(UserError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_missing_base_names_file(tmp_path):
    write(tmp_path / "a.yaml", "base: nowhere.yaml\n")
    with pytest.raises(UserError, match="nowhere.yaml"):
        load_config(tmp_path / "a.yaml")


def test_overrides_take_precedence(tmp_path):
    write(tmp_path / "c.yaml", "optimizer:\n  lr: 0.1\n")
    config = load_config(tmp_path / "c.yaml", ["optimizer.lr=5e-4", "schedule.name=gu",
                                              "peft.leave_out=[0, 1]", "trainer.steps=7"])
    assert config.optimizer.lr == 5e-4
    assert config.schedule.name == "gu"
    assert config.peft.leave_out == [0, 1]
    assert config.trainer.steps == 7


def test_parse_override_nested():
    assert parse_override("a.b.c=3") == {"a": {"b": {"c": 3}}}
    with pytest.raises(UserError, match="key=value"):
        parse_override("novalue")


def test_unknown_key_suggests_closest(tmp_path):
    with pytest.raises(UserError) as err:
        load_config(None, ["optimiser.lr=1"])
    message = str(err.value)
    assert "optimiser" in message and "'optimizer'" in message and "\n" not in message


def test_unknown_nested_key_in_file_names_file(tmp_path):
    path = write(tmp_path / "x.yaml", "trainer:\n  stepz: 3\n")
    with pytest.raises(UserError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "trainer.stepz" in str(err.value)
    assert "'steps'" in str(err.value)


def test_wrong_type_names_key_and_expected():
    with pytest.raises(UserError) as err:
        load_config(None, ["optimizer.lr=abc"])
    assert "optimizer.lr" in str(err.value) and "a number" in str(err.value)
    assert "'abc'" in str(err.value)


@pytest.mark.parametrize("override, fragment", [
    ("trainer.steps=-1", "trainer.steps"),
    ("optimizer.name=foo", "'adamw'"),
    ("fisher.estimator=exact", "'sampled'"),
    ("mesh.fsdp=0", "mesh.fsdp"),
])
def test_range_and_choice_errors(override, fragment):
    with pytest.raises(UserError, match=fragment.replace(".", r"\.")):
        load_config(None, [override])


def test_cross_field_validation():
    with pytest.raises(UserError, match="grad_accum"):
        load_config(None, ["trainer.batch_size=5", "trainer.grad_accum=2"])
    with pytest.raises(UserError, match="not both"):
        load_config(None, ["trainer.steps=5", "trainer.epochs=1"])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.yaml", "optimizer:\n  lr: [1\n  name: adamw\n")
    with pytest.raises(UserError) as err:
        load_config(path)
    assert f"{path}:3" in str(err.value)


def test_dump_round_trips(tmp_path):
    config = load_config(None, ["name=x", "optimizer.lr=0.25"])
    path = write(tmp_path / "dump.yaml", dump_config(config))
    assert load_config(path) == config


def test_every_experiment_config_validates(repo):
    from jaxcult.config_loading import load_section
    from jaxcult.recipes.care.config import CareConfig
    from jaxcult.recipes.cckg.config import CckgConfig
    from jaxcult.recipes.clca.config import ClcaConfig
    from jaxcult.recipes.narratives.config import NarrativesConfig
    from jaxcult.recipes.pairs.config import PairsConfig
    from jaxcult.run.sweep import cell_configs, grid_cells, override_text, read_sweep_file

    pipelines = {path: schema for folder, schema in (("clca", ClcaConfig),
                                                     ("narratives", NarrativesConfig),
                                                     ("preference", PairsConfig),
                                                     ("care", CareConfig),
                                                     ("cckg", CckgConfig))
                 for path in (repo / "experiments" / folder).glob("*.yaml")}
    assert len(pipelines) == 10
    sweeps = sorted((repo / "experiments" / "sweeps").glob("*.yaml"))
    assert len(sweeps) == 2
    for path in sorted((repo / "experiments").rglob("*.yaml")):
        if path in pipelines:
            load_section(pipelines[path], path)
        elif path in sweeps:   # every cell of the sweep validates
            settings, config = read_sweep_file(path)
            cells = grid_cells([(key, [override_text(v) for v in values])
                                for key, values in settings.grid.items()], str(path))
            assert len(cell_configs(config, cells, [0, 1], settings.overrides)) == 5
        else:
            load_config(path)
    config = load_config(repo / "experiments" / "narratives" / "train" / "llama-3.1-8b.yaml")
    assert (config.peft.lora_r, config.peft.lora_alpha, config.optimizer.warmup_ratio,
            config.optimizer.max_grad_norm, config.trainer.epochs) == (64, 16.0, 0.03, 0.3, 6)
    fun = [p for p in (repo / "experiments" / "fun").glob("*-*-*.yaml") if p.stem.count("-") == 2]
    assert len(fun) == 40  # {xnli, xcopa, xquad, mlqa} x {mbert, xlmr} x 5 schedules
    config = load_config(repo / "experiments" / "fun" / "xcopa-mbert-gu.yaml")
    assert (config.schedule.k, config.optimizer.lr, config.trainer.epochs) == (50, 1e-5, 5000)
    config = load_config(repo / "experiments" / "fun" / "xquad-xlmr-standard.yaml")
    assert (config.optimizer.lr, config.trainer.epochs, config.trainer.batch_size) == (2e-4, 15, 32)


def test_file_settings_made_ineffective_by_the_command_line_are_noted(tmp_path, capsys):
    """A FUN experiment compared under another schedule: its Fisher settings sleep, with a note;
    the same contradiction inside the file, or on the command line, stays an error."""
    path = tmp_path / "fun.yaml"
    path.write_text("schedule: {name: fun, k: 5}\nfisher: {num_batches: 4}\n")
    config = load_config(path, ["schedule.name=gu"])
    assert config.schedule.name == "gu" and config.fisher.num_batches == 41
    assert "fun.yaml: fisher.num_batches has no effect" in capsys.readouterr().err
    with pytest.raises(UserError, match="command line 'fisher.num_batches=3'"):
        load_config(path, ["schedule.name=gu", "fisher.num_batches=3"])
    path.write_text("schedule: {name: gu, k: 5}\nfisher: {num_batches: 4}\n")
    with pytest.raises(UserError, match="fun.yaml: fisher.num_batches has no effect"):
        load_config(path, ["trainer.steps=3"])


def test_seed_axis_needs_vectorised_seeds(tmp_path):
    """`mesh.seed` splits vectorised seeds over devices: without them it would do nothing."""
    path = tmp_path / "run.yaml"
    path.write_text("trainer: {seeds: [0, 1]}\n")
    with pytest.raises(UserError, match="mesh.seed has no effect here: it only applies with "
                                        "trainer.vectorize_seeds=true"):
        load_config(path, ["mesh.seed=2"])
    with pytest.raises(UserError, match="mesh.seed must be -1 or a positive integer"):
        load_config(path, ["mesh.seed=0", "trainer.vectorize_seeds=true"])
    assert load_config(path, ["mesh.seed=-1", "trainer.vectorize_seeds=true"]).mesh.seed == -1


def test_a_saved_config_is_the_same_run_across_schema_additions(tmp_path):
    """Resuming a run or sweep cell compares configs, not their text: a field the schema gained
    since (absent from the saved file, so at its default) is no change; any other value is."""
    seeds = ["trainer.seeds=[0, 1]", "trainer.vectorize_seeds=true"]
    config, saved = load_config(None, seeds), tmp_path / "config.yaml"
    text = dump_config(config)
    assert "  tensor: 1\n  seed: 1\n" in text
    saved.write_text(text.replace("  tensor: 1\n  seed: 1\n", "  tensor: 1\n"))  # before mesh.seed
    assert same_config(saved, config)
    assert not same_config(saved, load_config(None, [*seeds, "mesh.seed=-1"]))
    assert not same_config(saved, load_config(None, [*seeds, "optimizer.lr=0.5"]))
    saved.write_text(text + "unknown_section: {}\n")              # no longer validates
    assert not same_config(saved, config)
