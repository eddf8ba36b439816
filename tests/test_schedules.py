"""Unfreezing schedules follow Algorithm 1 of "FUN with Fisher" exactly."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcult.config import ScheduleConfig
from jaxcult.errors import UserError
from jaxcult.schedules import Schedule, resolve

L = 4
LAYERS = [f"adapter/task/layer_{i}" for i in range(L)]
GROUPS = ["head", *LAYERS]


def run(name, steps=40, fisher=None, **cfg):
    config = ScheduleConfig(name=name, k=5, **cfg)
    schedule = resolve(name)(GROUPS, LAYERS, config, seed=3)
    start = schedule.start()
    mask, events = start.mask, list(start.events)
    for step in range(steps):
        decision = schedule.decide(step, mask, fisher or (lambda: {}))
        if decision is not None:
            mask = decision.mask
            events += decision.events
    return [(e["step"], e["groups"]) for e in events], mask, events


def test_standard_everything_from_start():
    events, mask, _ = run("standard")
    assert events == [(0, GROUPS)] and mask.all()


def test_gradual_unfreezing_top_down():
    events, mask, _ = run("gu")
    assert events == [(0, ["head", LAYERS[3]]), (5, [LAYERS[2]]), (10, [LAYERS[1]]), (15, [LAYERS[0]])]
    assert mask.all()


def test_gradual_unfreezing_official_offset():
    events, _, _ = run("gu", official_offset=True)
    assert events == [(0, ["head", LAYERS[3]]), (10, [LAYERS[2]]), (15, [LAYERS[1]]), (20, [LAYERS[0]])]


def test_lpft_head_then_all():
    events, _, _ = run("lpft")
    assert events == [(0, ["head"]), (5, LAYERS)]


def test_fun_picks_argmax_of_logged_traces():
    rng = np.random.default_rng(0)
    calls = []

    def fisher():
        traces = {g: float(v) for g, v in zip(GROUPS, rng.random(len(GROUPS)))}
        calls.append(traces)
        return traces

    events, mask, raw = run("fun", fisher=fisher)
    assert raw[0]["groups"] == ["head", LAYERS[3]]
    assert [s for s, _ in events] == [0, 5, 10, 15]
    for event in raw[1:]:
        frozen_before = [g for g in LAYERS if g not in
                         {x for e in raw[:raw.index(event)] for x in e["groups"]}]
        assert event["groups"] == [max(frozen_before, key=event["fisher"].get)]
    assert mask.all() and len(calls) == 3


def test_random_is_seeded_and_complete():
    first, mask, _ = run("random")
    second, _, _ = run("random")
    assert first == second and mask.all()
    assert sorted(g for _, gs in first for g in gs if g != "head") == sorted(LAYERS)


@pytest.mark.parametrize("order, expected", [
    ([2, 0, 3, 1], [2, 0, 3, 1]), ("bottom_up", [0, 1, 2, 3]), ("top_down", [3, 2, 1, 0])])
def test_fixed_orders(order, expected):
    events, _, _ = run("fixed", order=order)
    opened = [g for _, gs in events for g in gs if g != "head"]
    assert opened == [LAYERS[i] for i in expected]


def test_fixed_rejects_bad_order():
    with pytest.raises(UserError, match="schedule.order"):
        run("fixed", order=[0, 0, 9])


class EveryOther(Schedule):
    """A user schedule: unfreeze the two lowest frozen groups at every check."""

    def select(self, step, frozen, fisher):
        return frozen[:2], "two at a time", {}


def test_custom_schedule_by_import_path():
    cls = resolve(f"{__name__}:EveryOther")
    assert cls is EveryOther
    with pytest.raises(UserError, match="unknown schedule"):
        resolve("nope")
    with pytest.raises(UserError, match="cannot import"):
        resolve("no_such_module_xyz:Thing")
