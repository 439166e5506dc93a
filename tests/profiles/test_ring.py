"""The consistent-hash ring: balance, minimal movement on resize, determinism."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from streamrec.errors import InvalidInputError
from streamrec.profiles.ring import HashRing


def _keys(n: int) -> list[bytes]:
    # Like ProfileStore.entity_key: 16-byte keyed digests.
    return [hashlib.blake2b(f"user\x00{i}".encode(), key=b"k", digest_size=16).digest() for i in range(n)]


KEYS = _keys(40_000)


def test_load_is_balanced_across_nodes():
    ring = HashRing(["n0", "n1", "n2", "n3"])
    counts = Counter(ring.owners(KEYS))
    assert set(counts) == {"n0", "n1", "n2", "n3"}
    for c in counts.values():
        assert abs(c / len(KEYS) - 0.25) < 0.05  # 256 vnodes: ~1/sqrt(256) spread
    shares = ring.shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    for name, share in shares.items():
        assert counts[name] / len(KEYS) == pytest.approx(share, abs=0.02)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_adding_a_node_moves_about_one_over_n_plus_one_and_only_to_it(n):
    ring = HashRing([f"n{i}" for i in range(n)])
    grown = ring.with_node("new")
    before, after = ring.owners(KEYS), grown.owners(KEYS)
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert abs(len(moved) / len(KEYS) - 1 / (n + 1)) < 0.05
    assert all(b == "new" for _, b in moved)  # no key moves between old nodes


def test_removing_a_node_moves_only_its_keys():
    ring = HashRing(["a", "b", "c", "d"])
    shrunk = ring.without_node("c")
    for a, b in zip(ring.owners(KEYS), shrunk.owners(KEYS), strict=True):
        assert a == b or a == "c"


def test_placement_is_deterministic_and_order_independent():
    a = HashRing(["x", "y", "z"]).owners(KEYS[:2000])
    b = HashRing(["z", "x", "y"]).owners(KEYS[:2000])
    c = HashRing(["x", "y", "z"]).owners(KEYS[:2000])
    assert a == b == c
    # And it matches a brute-force walk of the circle.
    ring = HashRing(["x", "y", "z"], vnodes=8)
    points = sorted(
        (int.from_bytes(hashlib.blake2b(f"{n}#{i}".encode(), digest_size=8).digest(), "big"), n)
        for n in ["x", "y", "z"]
        for i in range(8)
    )
    for key in KEYS[:500]:
        pos = int.from_bytes(key[:8], "big")
        want = next((n for p, n in points if p >= pos), points[0][1])
        assert ring.owner(key) == want


def test_bad_rings_are_rejected_naming_the_field():
    with pytest.raises(InvalidInputError, match="nodes"):
        HashRing([])
    with pytest.raises(InvalidInputError, match="unique"):
        HashRing(["a", "a"])
    with pytest.raises(InvalidInputError, match="vnodes"):
        HashRing(["a"], vnodes=0)
    with pytest.raises(InvalidInputError, match="node"):
        HashRing(["a"]).without_node("b")
