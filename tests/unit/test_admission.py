"""Admission per tenant (service.admission): fair shares before the shared limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehook.service.admission import Admission


def fill(admission: Admission, tenant: str, n: int) -> int:
    """Enter ``n`` requests of ``tenant``; how many were admitted."""
    return sum(admission.enter(tenant) is None for _ in range(n))


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
    ops=st.lists(st.tuples(st.booleans(), st.sampled_from("abcde")), max_size=400),
)
def test_admission_keeps_its_invariants(
    capacity: int, floor: int, ops: list[tuple[bool, str]]
) -> None:
    a = Admission(capacity, max_share=0.5, floor=floor)
    reserve = max(floor, capacity // 8)
    held: dict[str, int] = {}
    for enter, tenant in ops:
        if not enter:
            if held.get(tenant):
                a.leave(tenant)
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
