"""Admission per tenant (service.admission): fair shares before the shared limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehook.service.admission import Admission


def fill(admission: Admission, tenant: str, n: int) -> int:
    """Enter ``n`` requests of ``tenant``; how many were admitted."""
    return sum(admission.enter(tenant) is None for _ in range(n))


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_tenant_alone_holds_at_most_its_share() -> None:
    a = Admission(256, max_share=0.5)
    assert fill(a, "acme", 300) == 128
    refused = a.enter("acme")
    assert refused is not None
    assert refused.tenant
    assert "tenant acme is over its share" in refused.message("acme")
    assert "its limit now 128" in refused.message("acme")


def test_another_tenant_is_admitted_while_one_floods() -> None:
    a = Admission(256, max_share=0.5)
    fill(a, "acme", 300)
    assert fill(a, "globex", 50) == 50
    # acme's share is now half of the slots between two: it stays refused until it drains
    assert a.limit("acme") == 128
    assert a.enter("acme") is not None


def test_three_floods_leave_room_for_a_fourth_tenant() -> None:
    a = Admission(256, max_share=0.5, floor=4)
    for t in ("a", "b", "c"):
        fill(a, t, 300)
    # a took half (alone), b the other half (its share of two): c came to a full worker
    # and got its floor from the reserve (32 slots: an eighth)
    assert a.in_flight_by_tenant() == {"a": 128, "b": 128, "c": 4}
    # so does a newcomer, while the floods are refused
    assert fill(a, "newcomer", 10) == 4
    assert a.enter("a") is not None
    assert a.limit("a") == 64  # its share of four, once its requests drain


def test_weights_scale_the_share() -> None:
    a = Admission(100, max_share=0.5, weights={"big": 3})
    assert a.limit("big") == 100  # alone: 3 x 50 %, at most every slot
    fill(a, "small", 1)
    assert a.limit("big") == 75  # with one other of weight 1: 3/4
    fill(a, "big", 1)
    assert a.limit("small") == 25


def test_leaving_frees_the_slot_and_the_share() -> None:
    a = Admission(8, max_share=1.0, floor=1)
    assert fill(a, "acme", 8) == 8
    assert fill(a, "globex", 3) == 1  # the slots are taken: its floor, from the reserve
    a.leave("globex")
    for _ in range(8):
        a.leave("acme")
    assert a.total == 0
    assert a.in_flight_by_tenant() == {}
    assert fill(a, "globex", 8) == 8


def test_refusals_are_counted_by_tenant_and_reason() -> None:
    a = Admission(10, max_share=0.5, floor=1, reserve=0)
    fill(a, "acme", 7)  # 5 admitted, 2 over its share
    fill(a, "globex", 6)  # 5 admitted (its share), 1 refused
    assert a.refused_by(per_tenant=True) == {
        ("acme", "tenant_share"): 2,
        ("globex", "tenant_share"): 1,
    }
    assert a.refused_by(per_tenant=False) == {("", "tenant_share"): 3}


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Admission(0)
    with pytest.raises(ValueError, match="max_share"):
        Admission(10, max_share=0)


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 64),
    floor=st.integers(1, 8),
    ops=st.lists(
        st.tuples(st.booleans(), st.sampled_from("abcde"), st.floats(0, 0.05)), max_size=400
    ),
)
def test_admission_keeps_its_invariants(
    capacity: int, floor: int, ops: list[tuple[bool, str, float]]
) -> None:
    clock = Clock()
    a = Admission(capacity, max_share=0.5, floor=floor, clock=clock, sample_every=1)
    reserve = max(floor, capacity // 8)
    held: dict[str, int] = {}
    for enter, tenant, seconds in ops:
        clock.now += seconds / 2  # the loop's time, and as much again elsewhere
        if not enter:
            if held.get(tenant):
                a.leave(tenant, seconds)
                held[tenant] -= 1
            continue
        before = held.get(tenant, 0)
        limit = a.limit(tenant)
        total = a.total
        refused = a.enter(tenant)
        if refused is None:
            held[tenant] = before + 1
            assert before < limit  # never past its own share
            assert total < capacity or (before < floor and total < capacity + reserve)
        else:
            # refused only over its share, or with the slots (and, under its floor, the
            # reserve) taken
            assert before >= limit or total >= capacity
            assert before >= floor or total >= capacity + reserve or before >= limit
        assert a.total == sum(held.values()) <= capacity + reserve
        assert a.in_flight_by_tenant() == {t: n for t, n in held.items() if n}
        # a cut is never below the floor, and binds (under the slots) unless the floor is all
        assert all(cut == floor or floor < cut < capacity for cut in a.capped().values())


def window(a: Admission, clock: Clock, spent: dict[str, float]) -> None:
    """One window (100 ms, and 25 more) in which one request of each tenant ended after
    ``spent`` of the loop's time; the last one to end, after the window, weighs the shares."""
    for n, (tenant, seconds) in enumerate(spent.items(), 1):
        if n == len(spent):
            clock.now += 0.125  # exact in binary: no float drift
        fill(a, tenant, 1)
        a.leave(tenant, seconds)


def test_a_tenant_taking_the_loops_time_holds_fewer_while_another_is_served() -> None:
    clock = Clock()
    a = Admission(256, max_share=0.5, floor=4, clock=clock, sample_every=1)
    fill(a, "cheap", 128)
    # alone, it may take the whole loop: nobody else waits behind its requests
    window(a, clock, {"cheap": 0.09})
    assert a.limit("cheap") == 128
    assert a.capped() == {}
    # another tenant is served: cheap's limit is cut to a quarter each window, to the floor
    limits = []
    for _ in range(7):
        window(a, clock, {"cheap": 0.09, "globex": 0.002})
        limits.append(a.limit("cheap"))
    assert limits == [31, 7, 4, 4, 4, 4, 4]  # a quarter of what it holds
    assert a.limit("globex") == 128
    refused = a.enter("cheap")
    assert refused is not None
    assert "its limit now 4" in refused.message("cheap")
    # the others' requests are admitted as before
    assert fill(a, "globex", 10) == 10


def test_a_tenant_whose_requests_wait_elsewhere_keeps_its_slots() -> None:
    clock = Clock()
    a = Admission(256, max_share=0.5, floor=4, clock=clock, sample_every=1)
    fill(a, "slow", 128)  # waiting on a slow backend: little of the loop's time
    for _ in range(10):
        window(a, clock, {"slow": 0.004, "globex": 0.002})
    assert a.capped() == {}
    assert a.limit("slow") == 128


def test_a_cut_limit_doubles_back_once_the_loop_is_not_busy() -> None:
    clock = Clock()
    a = Admission(256, max_share=0.5, floor=4, clock=clock, sample_every=1)
    fill(a, "cheap", 128)
    for _ in range(6):
        window(a, clock, {"cheap": 0.09, "globex": 0.002})
    assert a.capped() == {"cheap": 4}
    limits = []
    for _ in range(7):
        window(a, clock, {"cheap": 0.01})  # the flood is over: 8 % of the loop
        limits.append(a.limit("cheap"))
    assert limits == [8, 16, 32, 64, 128, 128, 128]
    assert a.capped() == {}


def test_the_share_of_time_follows_the_weights() -> None:
    clock = Clock()
    a = Admission(256, max_share=1.0, floor=4, clock=clock, weights={"big": 3}, sample_every=1)
    fill(a, "big", 100)
    fill(a, "small", 50)
    # big takes 66 % of a busy loop: under its share (3/4); small 34 %: over its 1/4
    for _ in range(3):
        window(a, clock, {"big": 0.066, "small": 0.034})
    assert "big" not in a.capped()
    assert a.capped()["small"] < 50


def test_nothing_is_cut_while_the_requests_take_little_of_the_loop() -> None:
    clock = Clock()
    a = Admission(256, max_share=0.5, floor=4, busy=0.25, clock=clock, sample_every=1)
    fill(a, "cheap", 128)
    for _ in range(5):
        window(a, clock, {"cheap": 0.025, "globex": 0.001})  # 21 % of the loop
    assert a.capped() == {}


def test_a_tenant_that_stopped_is_no_ones_competitor() -> None:
    clock = Clock()
    a = Admission(256, max_share=0.5, floor=4, clock=clock, sample_every=1)
    fill(a, "cheap", 128)
    window(a, clock, {"cheap": 0.09, "globex": 0.002})
    assert a.capped() == {"cheap": 31}
    # globex is done (nothing in flight, nothing served): cheap has the busy loop to itself
    # at once, though globex's recent time has not decayed yet
    for _ in range(3):  # 31, 62, 124, then no cut
        window(a, clock, {"cheap": 0.1})
    assert a.capped() == {}


def test_one_request_in_eight_is_metered_and_counted_for_eight() -> None:
    clock = Clock()
    a = Admission(256, max_share=0.5, floor=4, clock=clock)  # sample_every=8
    assert [a.meter() for _ in range(16)].count(True) == 2
    fill(a, "cheap", 128)
    a.leave("cheap", 0.011)  # one metered request: 88 ms of a 125 ms window, counted
    clock.now += 0.125
    fill(a, "sparse", 1)
    a.leave("sparse")  # not metered, but served: cheap's competitor all the same
    assert a.capped() == {"cheap": 31}


def test_busy_at_one_turns_the_time_share_off() -> None:
    clock = Clock()
    a = Admission(256, max_share=0.5, floor=4, busy=1.0, clock=clock, sample_every=1)
    fill(a, "cheap", 128)
    for _ in range(5):
        window(a, clock, {"cheap": 0.2, "globex": 0.002})  # more than the window: sampled
    assert a.capped() == {}
