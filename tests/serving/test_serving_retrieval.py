"""Retrieval: each source against a brute force over the raw events, and the merge by quota."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from conftest import NOW
from streamrec.serving import merge_candidates
from streamrec.serving.retrieval import RetrievalConfig, Retriever


def _reference_merge(ranked, quotas):
    """Brute force: an item goes to the first source (in quota order) within whose quota it falls,
    counting only the items earlier sources did not take."""
    owner: dict[str, str] = {}
    for name, quota in quotas.items():
        fresh = [i for i in dict.fromkeys(ranked.get(name, [])) if i not in owner]
        for item in fresh[:quota]:
            owner[item] = name
    return owner


def test_merge_respects_quotas_and_dedups_like_a_brute_force():
    rng = random.Random(7)
    for _ in range(300):
        names = rng.sample(["a", "b", "c", "d"], rng.randint(1, 4))
        ranked = {n: [f"i{rng.randrange(30)}" for _ in range(rng.randrange(25))] for n in names}
        quotas = {n: rng.randrange(8) for n in rng.sample(names, len(names))}
        merged = merge_candidates(ranked, quotas)
        assert len(set(merged.items)) == len(merged.items)  # deduplicated
        assert dict(zip(merged.items, merged.sources, strict=True)) == _reference_merge(ranked, quotas)
        counts = Counter(merged.sources)
        assert all(counts[n] <= q for n, q in quotas.items())
        # Within a source, its own ranking order is kept.
        for n in quotas:
            mine = [i for i, s in zip(merged.items, merged.sources, strict=True) if s == n]
            positions = [ranked[n].index(i) for i in mine]
            assert positions == sorted(positions)


def _ranked(counts: dict[str, float]) -> list[str]:
    return [k for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if v > 0]


def test_popular_and_fresh_sources_match_a_brute_force_over_the_events(world):
    cfg = RetrievalConfig(quotas={"popular": 15, "fresh": 10, "co_engaged": 0})
    ranked = Retriever(world.client, cfg).ranked("u1", NOW)
    clicks = Counter(e.item for e in world.events if e.action == "click" and e.time > NOW - 86400)
    assert ranked["popular"] == _ranked(clicks)[:30]
    first_seen: dict[str, float] = {}
    for e in world.events:
        first_seen[e.item] = min(first_seen.get(e.item, e.time), e.time)
    assert ranked["fresh"] == [k for k, _ in sorted(first_seen.items(), key=lambda kv: (-kv[1], kv[0]))][:20]


def test_co_engaged_source_matches_a_brute_force_two_hop_walk(world):
    cfg = RetrievalConfig(quotas={"co_engaged": 20, "popular": 0, "fresh": 0}, recent_items=5, co_users=8, co_items=6)
    retriever = Retriever(world.client, cfg)
    clicks: dict[str, Counter] = defaultdict(Counter)  # user -> item -> clicks
    for e in world.events:
        if e.action == "click":
            clicks[e.user][e.item] += 1
    by_item: dict[str, Counter] = defaultdict(Counter)  # item -> user -> clicks
    for u, items in clicks.items():
        for i, c in items.items():
            by_item[i][u] += c
    for user in ("u0", "u4", "u9"):
        seeds = _ranked(clicks[user])[:5]
        weight: Counter[str] = Counter()
        for seed in seeds:
            top = _ranked(by_item[seed])[:8]
            for u in top:
                if u != user:
                    weight[u] += by_item[seed][u]
        score: Counter[str] = Counter()
        for u, w in weight.items():
            for i in _ranked(clicks[u])[:6]:
                score[i] += w
        for seed in seeds:
            score.pop(seed, None)
        expected = _ranked(score)[:40]
        got = retriever.ranked(user, NOW)["co_engaged"]
        assert got == expected and got


def test_recommendations_carry_the_source_that_found_each_item(world):
    rec = world.recommender()
    merged = rec.retriever.retrieve("u6", NOW)
    owner = dict(zip(merged.items, merged.sources, strict=True))
    out = rec.recommend("u6", 20)
    assert all(owner[item] == source for item, _, source in out.items)
    assert {"co_engaged", "popular", "fresh"} == set(merged.sources)
    assert Counter(merged.sources)["co_engaged"] <= 30 and Counter(merged.sources)["fresh"] <= 20


def test_an_unknown_user_still_gets_popular_and_fresh_items(world):
    out = world.recommender().recommend("stranger", 5)
    assert len(out.items) == 5
    assert {s for _, _, s in out.items} <= {"popular", "fresh"}


def _clicked_since(world, user: str, start: float) -> set[str]:
    return {e.item for e in world.events if e.user == user and e.action == "click" and start <= e.time <= NOW}


def test_exclusion_removes_the_users_clicked_items_from_every_source_and_keeps_the_quotas_full(world):
    """Brute force: the items the user clicked in the window (ages under 2 h sit in minute slices, so
    a 1 h window starts at ``NOW - 1h`` rounded down to the minute), removed from each source's
    list without exclusion, which is asked for deep enough that the filtered list is not cut short."""
    quotas = {"co_engaged": 20, "popular": 15, "fresh": 10}
    plain = Retriever(world.client, RetrievalConfig(quotas=quotas))
    deep = Retriever(world.client, RetrievalConfig(quotas={k: v + 100 for k, v in quotas.items()}))
    excluding = Retriever(world.client, RetrievalConfig(quotas=quotas, exclude_clicked_window="1h"))
    start = (NOW - 3600) // 60 * 60
    checked = 0
    for user in [f"u{i}" for i in range(12)]:
        excluded = _clicked_since(world, user, start)
        got = excluding.ranked(user, NOW)
        everything = deep.ranked(user, NOW)
        for name, quota in quotas.items():
            expected = [i for i in everything[name] if i not in excluded][: 2 * quota]
            assert got[name] == expected, (user, name)
        assert not excluded & {i for items in got.values() for i in items}
        if excluded and (excluded & {i for items in plain.ranked(user, NOW).values() for i in items}):
            checked += 1  # without exclusion these users would have been shown items they clicked
    assert checked >= 3


def test_items_clicked_before_the_window_stay_candidates(world):
    excluding = Retriever(world.client, RetrievalConfig(quotas={"popular": 40}, exclude_clicked_window="1h"))
    start = (NOW - 3600) // 60 * 60
    for user in ("u0", "u1", "u2", "u3"):
        earlier = _clicked_since(world, user, 0.0) - _clicked_since(world, user, start)
        popular = set(Retriever(world.client, RetrievalConfig(quotas={"popular": 40})).ranked(user, NOW)["popular"])
        assert earlier & popular <= set(excluding.ranked(user, NOW)["popular"])


def test_recommendations_never_include_an_excluded_item(world):
    retrieval = RetrievalConfig(quotas={"co_engaged": 30, "popular": 30, "fresh": 20}, exclude_clicked_window="1d")
    rec = world.recommender(retrieval=retrieval)
    for user in ("u0", "u3", "u5", "u8"):
        clicked = _clicked_since(world, user, 0.0)
        out = rec.recommend(user, 20)
        assert clicked and len(out.items) == 20
        assert not clicked & {item for item, _, _ in out.items}
