"""Unfreezing schedules follow Algorithm 1 of "FUN with Fisher" exactly."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcult.errors import UserError
from jaxcult.schedules import Schedule, resolve

L = 4
LAYERS = [f"adapter/task/layer_{i}" for i in range(L)]
GROUPS = ["head", *LAYERS]


def run(name, steps=40, fisher=None, **cfg):
    config = resolve(name).Settings(name=name, k=5, **cfg)
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
    """The official trainer checks before 0-based step k-1 (a no-op for GU: the top layer is
    open) and opens layer j of L at step (L - j) k - 1."""
    events, _, _ = run("gu", official_offset=True)
    assert events == [(0, ["head", LAYERS[3]]), (9, [LAYERS[2]]), (14, [LAYERS[1]]), (19, [LAYERS[0]])]


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
    with pytest.raises(UserError, match=r"layers \[0, 3\] never open"):
        run("fixed", order=[2, 1])


def test_fixed_order_without_the_top_layer_opens_it_first():
    """The official presets list the 11 layers below the top one, which opens first; such an
    order no longer leaves the top layer frozen for the whole run."""
    events, mask, _ = run("fixed", order=[1, 0, 2])
    assert events == [(0, ["head", LAYERS[3]]), (5, [LAYERS[1]]), (10, [LAYERS[0]]),
                      (15, [LAYERS[2]])]
    assert mask.all()


def test_random_opens_the_top_layer_first_like_the_official_code():
    for seed in range(5):
        config = resolve("random").Settings(name="random", k=5, seed=seed)
        start = resolve("random")(GROUPS, LAYERS, config).start()
        assert start.events[0]["groups"] == ["head", LAYERS[3]]
    drawn = {resolve("random")(GROUPS, LAYERS, resolve("random").Settings(
                                   name="random", k=5, seed=seed, random_first=True)
                               ).start().events[0]["groups"][1] for seed in range(12)}
    assert len(drawn) > 1  # the option: a random first layer


# -- the official trainer's per-step unfreezing block, written from its rule ------------------

OFFICIAL_LAYERS = [f"adapter/task/layer_{i}" for i in range(12)]
OFFICIAL_GROUPS = ["head", *OFFICIAL_LAYERS]


def official_first_steps(style: str, k: int, traces=None, picks=None, order=None) -> dict:
    """{layer: first 0-based step it trains} under the official code: at the start of each step
    with global step g, the top layer is switched on (first steps of an epoch, all styles but
    lpft); with use_gu, layer 12 - (g+1)/k opens when (g+1) % k == 0; otherwise, when
    (g+1) % k == 0 and g+1 <= 12k, the unfreezing loop runs if a layer is frozen: lpft opens
    all, "one" the frozen layer of largest tr(F), "rand" a random frozen one, "schedule-N" the
    first of its list not yet open; at g+1 = 13k + 1 everything opens."""
    trainable: set[int] = set()
    first: dict[int, int] = {}
    picks = iter(picks or [])
    for g in range(13 * k + 2):
        if g <= 1 and style != "lpft":
            trainable.add(11)
        if style == "gu":
            if (g + 1) % k == 0 and g < k * 12 + 1 and 12 - (g + 1) // k >= 0:
                trainable.add(12 - (g + 1) // k)
        elif (g + 1) % k == 0 and g + 1 < k * 12 + 1:
            frozen = [i for i in range(12) if i not in trainable]
            if frozen and style == "lpft":
                trainable.update(range(12))
            elif frozen and style == "one":
                trainable.add(max(frozen, key=lambda i: traces(g)[i]))
            elif frozen and style == "rand":
                trainable.add(next(picks))
            elif frozen:
                trainable.add(next(i for i in order if i not in trainable))
        elif g + 1 == k * 13 + 1:
            trainable.update(range(12))
        for layer in trainable:
            first.setdefault(layer, g)
    return first


def jaxcult_first_steps(name: str, k: int, fisher_at=None, **cfg) -> tuple[dict, list[int]]:
    config = resolve(name).Settings(name=name, k=k, official_offset=True, **cfg)
    schedule = resolve(name)(OFFICIAL_GROUPS, OFFICIAL_LAYERS, config, seed=7)
    start = schedule.start()
    mask, first, opened = start.mask, {}, []
    for step in range(13 * k + 2):
        if schedule.is_check(step):
            decision = schedule.decide(step, mask, lambda: fisher_at(step))
            if decision is not None:
                mask = decision.mask
                opened += [int(g.rsplit("_", 1)[1]) for e in decision.events for g in e["groups"]]
        for i, layer in enumerate(OFFICIAL_LAYERS):
            if mask[i + 1]:
                first.setdefault(i, step)
    return first, opened


@pytest.mark.parametrize("k", [1, 7, 50])
@pytest.mark.parametrize("style", ["gu", "lpft", "one", "rand", *(f"schedule-{i}" for i in range(10)),
                                   "schedule-rev"])
def test_official_switches_open_the_same_groups_at_the_same_steps(style, k):
    from jaxcult.schedules.builtin import OFFICIAL_ORDERS

    rng = np.random.default_rng(k)
    table = rng.random((13 * k + 2, 12))

    def traces(g):
        return dict(enumerate(table[g]))

    name = {"gu": "gu", "lpft": "lpft", "one": "fun", "rand": "random"}.get(style, "fixed")
    ours, opened = jaxcult_first_steps(
        name, k, fisher_at=lambda s: {g: table[s][i] for i, g in enumerate(OFFICIAL_LAYERS)},
        **({"order": style} if name == "fixed" else {}))
    theirs = official_first_steps(style, k, traces=traces, picks=opened,
                                  order=OFFICIAL_ORDERS.get(style))
    assert ours == theirs
    if style == "gu":
        assert ours[11] == 0 and all(ours[j] == (12 - j) * k - 1 for j in range(11))


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
