"""Fixtures of the end-to-end tests that more than one module needs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gatehook.devservers import Server, start_nats_cluster


@pytest.fixture
def cluster() -> Iterator[list[Server]]:
    """A 3-node JetStream cluster on loopback (nodes n0, n1, n2), of this test's own."""
    nodes = start_nats_cluster(3)
    yield nodes
    for node in nodes:
        node.stop()
