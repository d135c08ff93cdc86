"""The per-peer low-work budget: a burst for free, then a point per item."""

from __future__ import annotations

from p2pml.net.lowwork import LowWorkBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_is_free_then_each_item_costs_a_point() -> None:
    clock = Clock()
    b = LowWorkBudget(burst=10, refill_per_second=0.1, clock=clock)
    assert [b.charge("p", 1) for _ in range(10)] == [0] * 10
    clock.now += 0.001  # a sliver of refill still leaves the next item over
    assert b.charge("p", 1) == 1
    assert b.charge("p", 5) == 5
    assert b.charge("q", 4) == 0  # per peer


def test_batch_past_the_budget_counts_only_the_excess() -> None:
    b = LowWorkBudget(burst=200, clock=Clock())
    assert b.charge("p", 2_000) == 1_800


def test_budget_refills_with_time_up_to_the_burst() -> None:
    clock = Clock()
    b = LowWorkBudget(burst=10, refill_per_second=1.0, clock=clock)
    assert b.charge("p", 10) == 0
    clock.now += 3
    assert b.charge("p", 3) == 0 and b.charge("p", 1) == 1
    clock.now += 1_000
    assert b.charge("p", 10) == 0 and b.charge("p", 1) == 1


def test_forget_resets_a_peer() -> None:
    b = LowWorkBudget(burst=1, clock=Clock())
    b.charge("p", 5)
    b.forget("p")
    assert b.charge("p", 1) == 0
