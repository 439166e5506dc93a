"""``streamrec bench profiles``: a profile node over gRPC against the same features kept in Redis.

What is compared, side by side in one run on the same generated data:

- **streamrec**: a node started as its own process (``python -m streamrec.profiles.service_cli``,
  WAL + LMDB in a temp dir, fsync on), written to and queried through :class:`ProfileClient`.
- **Redis baseline**, built the way a careful engineer builds windowed counters on Redis today:
  one hash per (slot, entity, time bucket) at the *same granularities streamrec compacts to*
  (minute, hour and day buckets, every event written to all three), fields ``value\\x1fcounter``
  bumped with ``HINCRBY``; increments are pre-aggregated per batch and sent in one pipeline, and
  every bucket gets an ``EXPIREAT`` so it lives exactly as long as a query can need it. A query
  covers each window with the fewest buckets (whole days, then whole hours, then minutes), fetches
  the union of all buckets the request needs with one pipelined ``HGETALL`` each, and merges on the
  client. So a window never reads more buckets there than streamrec merges. Redis runs with
  ``appendfsync always``, because a streamrec write is durable when acknowledged.

Both answer the same 100-feature request for one user (5 slots x 5 windows 5m..30d x {counters,
smoothed ratio, distinct, top-10}); the benchmark checks that the two answers are equal on a sample
of users before timing anything, so the ratio compares equal work. Requests alternate between
the two systems so noise on a shared machine hits both alike.

Data (reproducible from ``seed``): users and items with Zipf-Mandelbrot activity/popularity,
items with a category, an author and a genre, 30 days of show/click/like events (clicks carry a
dwell time), time-ordered as a stream would deliver them.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from streamrec.benchutil import paired_speedup, percentiles, rate, rate_ratio, seconds, time_ratio
from streamrec.errors import InvalidInputError, StreamrecError
from streamrec.profiles.baselines import RedisProfiles
from streamrec.profiles.config import ProfilesConfig, profiles_config
from streamrec.profiles.types import Feature, FeatureQuery, FeatureResult

__all__ = ["BENCH_SLOTS", "RedisProfiles", "Scale", "generate_events", "request_features", "run_benchmark"]

ENGAGEMENT = ["show", "click", "like", "dwell_ms"]
BENCH_SLOTS: dict[str, dict[str, Any]] = {
    "clicked_item": {"entity": "user", "value": "item", "counters": ENGAGEMENT},
    "clicked_category": {"entity": "user", "value": "category", "counters": ENGAGEMENT},
    "clicked_author": {"entity": "user", "value": "author", "counters": ENGAGEMENT},
    "watched_genre": {"entity": "user", "value": "genre", "counters": ENGAGEMENT},
    "actions": {"entity": "user", "value": "action", "counters": ["count", "dwell_ms"]},
    "item_engagement": {"entity": "item", "value": "action", "counters": ["count", "dwell_ms"]},
}
WINDOWS = ["5m", "1h", "1d", "7d", "30d"]
ACTIONS = np.array(["show", "click", "like"])


@dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark run."""

    users: int = 100_000
    items: int = 10_000
    days: int = 30
    events: int = 1_000_000
    requests: int = 2000
    batch: int = 2000
    check_users: int = 30
    clients: int = 8
    concurrent_requests: int = 4000


QUICK = Scale(
    users=2000, items=500, days=30, events=20_000, requests=150, batch=1000, check_users=10, concurrent_requests=2000
)


def bench_config(secret: str = "bench-secret") -> ProfilesConfig:
    """The benchmark's ``[profiles]``: the slots above, all sums, no truncation, default tiers."""
    return profiles_config({"secret": secret, "slots": BENCH_SLOTS})


def _config_toml(secret: str) -> str:
    lines = ["[profiles]", f'secret = "{secret}"', 'merge_interval = "1s"', ""]
    for name, slot in BENCH_SLOTS.items():
        lines.append(f"[profiles.slots.{name}]")
        lines.append(f'entity = "{slot["entity"]}"')
        lines.append(f'value = "{slot["value"]}"')
        lines.append("counters = [" + ", ".join(f'"{c}"' for c in slot["counters"]) + "]")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- data


def _zipf_weights(n: int, s: float, q: float) -> np.ndarray:
    w = 1.0 / (np.arange(1, n + 1) + q) ** s
    return w / w.sum()


@dataclass
class Dataset:
    """Generated events as columns, plus the item attributes."""

    user: np.ndarray
    item: np.ndarray
    action: np.ndarray
    time: np.ndarray
    dwell: np.ndarray
    category: np.ndarray
    author: np.ndarray
    genre: np.ndarray
    user_weights: np.ndarray
    end: float

    def __len__(self) -> int:
        return len(self.time)

    def batches(self, size: int) -> Iterator[list[dict[str, Any]]]:
        """Events as mappings (``ActionEvent`` fields), ``size`` at a time, oldest first."""
        for lo in range(0, len(self), size):
            hi = min(lo + size, len(self))
            out = []
            for u, i, a, t, d in zip(
                self.user[lo:hi].tolist(),
                self.item[lo:hi].tolist(),
                self.action[lo:hi].tolist(),
                self.time[lo:hi].tolist(),
                self.dwell[lo:hi].tolist(),
                strict=True,
            ):
                ev: dict[str, Any] = {
                    "user": f"u{u}",
                    "item": f"i{i}",
                    "action": str(ACTIONS[a]),
                    "time": t,
                    "attributes": {
                        "category": f"c{self.category[i]}",
                        "author": f"a{self.author[i]}",
                        "genre": f"g{self.genre[i]}",
                    },
                }
                if d:
                    ev["counters"] = {"dwell_ms": d}
                out.append(ev)
            yield out


def generate_events(scale: Scale, end: float, seed: int = 7) -> Dataset:
    """``scale.events`` events over ``scale.days`` days ending at ``end`` (reproducible from ``seed``).

    Users act with Zipf-Mandelbrot weights (s=0.9, q=20: a heavy head without one user owning
    the data), items are picked with Zipf popularity (s=1.0, q=5); 75% shows, 18% clicks (with a
    log-normal dwell time in ms), 7% likes; times uniform over the period, sorted.
    """
    rng = np.random.default_rng(seed)
    uw = _zipf_weights(scale.users, 0.9, 20.0)
    iw = _zipf_weights(scale.items, 1.0, 5.0)
    n = scale.events
    user = rng.permutation(scale.users)[rng.choice(scale.users, size=n, p=uw)]
    item = rng.permutation(scale.items)[rng.choice(scale.items, size=n, p=iw)]
    action = rng.choice(3, size=n, p=[0.75, 0.18, 0.07])
    span = scale.days * 86400.0
    times = np.sort(np.floor(end - rng.uniform(0, span, size=n)))
    dwell = np.where(action == 1, np.round(rng.lognormal(8.0, 1.0, size=n)).astype(np.int64) + 1, 0)
    user_weights = np.bincount(user, minlength=scale.users) / n
    return Dataset(
        user=user,
        item=item,
        action=action,
        time=times,
        dwell=dwell,
        category=rng.integers(0, 50, size=scale.items),
        author=rng.integers(0, 2000, size=scale.items),
        genre=rng.integers(0, 20, size=scale.items),
        user_weights=user_weights,
        end=end,
    )


def request_features() -> list[Feature]:
    """The 100 features of one request: 5 user slots x 5 windows x {counters, ratio, distinct, top-10}."""
    out = []
    for slot in ("clicked_item", "clicked_category", "clicked_author", "watched_genre", "actions"):
        num, den = ("click", "show") if slot != "actions" else ("dwell_ms", "count")
        for w in WINDOWS:
            out.append(Feature(slot=slot, window=w))
            out.append(Feature(slot=slot, window=w, agg="ratio", numerator=num, denominator=den, alpha=1.0, beta=10.0))
            out.append(Feature(slot=slot, window=w, agg="distinct"))
            out.append(Feature(slot=slot, window=w, top_k=10, by="click" if slot != "actions" else "count"))
    return out


# --------------------------------------------------------------------------- the run


class _Node:
    """A profile node subprocess with its data directory."""

    def __init__(self, config_text: str) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="streamrec-bench-node-")
        root = Path(self.dir.name)
        (root / "profiles.toml").write_text(config_text)
        ready = root / "ready.json"
        cmd = [
            sys.executable, "-m", "streamrec.profiles.service_cli", "--config", str(root / "profiles.toml"),
            "--path", str(root / "data"), "--port", "0", "--metrics-port", "-1", "--ready-file", str(ready),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not ready.exists():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise StreamrecError(f"profile node exited at start: {err.strip()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise StreamrecError("profile node did not start within 120 s")
            time.sleep(0.05)
        self.address = json.loads(ready.read_text())["address"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.dir.cleanup()


def _canon(res: FeatureResult | tuple) -> tuple:
    values, data = (res.values, res.data) if isinstance(res, FeatureResult) else res
    return (values, [[round(float(x), 9) for x in row] for row in data])


def _ms(xs: list[float]) -> dict[str, float]:
    """p50 and p99 of latencies in seconds, in milliseconds (nan where nothing was timed)."""
    if not xs:
        return {"p50": float("nan"), "p99": float("nan")}
    return {q: v * 1e3 for q, v in percentiles(xs, (50, 99)).items()}


def _progress(as_json: bool, text: str) -> None:
    if not as_json:
        print(f"  .. {text}", file=sys.stderr, flush=True)


class _ConcurrentClients:
    """``callers`` threads sending queries at once through ``objects`` :class:`ProfileClient` objects.

    Each thread sends its share of a round's queries one after another (a serving worker waits
    for its features before ranking), so up to ``callers`` queries are in flight. Threads that
    share a client object are a serving worker's request threads (their queries may leave as one
    request); separate objects are separate workers (separate requests, batched by the node).
    """

    def __init__(
        self, address: str, cfg: ProfilesConfig, callers: int, objects: int, warmup: list[FeatureQuery]
    ) -> None:
        from streamrec.profiles.client import ProfileClient

        self.objects = [ProfileClient([address], cfg, timeout=120) for _ in range(objects)]
        self.conns = [self.objects[i % objects] for i in range(callers)]
        self.round(warmup * callers)  # connect, first calls

    def round(self, queries: list[FeatureQuery]) -> float:
        """Send ``queries`` split over the clients; seconds from the start until the last answer."""
        import threading

        n = len(self.conns)
        start = threading.Barrier(n + 1)
        errors: list[BaseException] = []

        def run(client: Any, share: list[FeatureQuery]) -> None:
            start.wait()
            try:
                for q in share:
                    client.query(q)
            except BaseException as exc:  # reported by the caller
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(c, queries[i::n]), daemon=True) for i, c in enumerate(self.conns)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise StreamrecError(f"concurrent queries failed: {errors[0]!r}")
        return elapsed

    def close(self) -> None:
        for c in self.objects:
            c.close()


def _throughput_rounds(
    local: Any, groups: list[_ConcurrentClients], queries: list[FeatureQuery], rounds: int
) -> tuple[float, list[float], list[float]]:
    """Alternate rounds of the same queries: in process (one thread), then over gRPC by each group.

    Returns the in-process queries/s, each group's queries/s, and for each group the median over
    rounds of (its rate / the in-process rate of the same round). Alternating short rounds makes a
    noisy neighbour on a shared machine hit both sides alike.
    """
    size = max(len(queries) // rounds, 1)
    t_local: list[float] = []
    t_groups: list[list[float]] = [[] for _ in groups]
    for r in range(rounds):
        chunk = queries[r * size : (r + 1) * size]
        t_local.append(seconds(lambda chunk=chunk: [local.query(q) for q in chunk]))
        for g, conc in enumerate(groups):
            t_groups[g].append(conc.round(chunk))
    n = size * rounds
    return (
        rate(n, sum(t_local)),
        [rate(n, sum(t)) for t in t_groups],
        [paired_speedup(t, baseline_seconds=t_local) for t in t_groups],
    )


def measure(scale: Scale, as_json: bool = True, seed: int = 7) -> dict[str, Any]:
    """Run the whole comparison at ``scale``; returns the result object (see :func:`run_benchmark`)."""
    import redis

    from streamrec.profiles.client import ProfileClient
    from streamrec.profiles.store import ProfileStore
    from streamrec.redis_server import RedisServer

    cfg = bench_config()
    end = float(int(time.time() // 60) * 60)
    t0 = time.perf_counter()
    data = generate_events(scale, end, seed)
    _progress(as_json, f"generated {len(data):,} events in {time.perf_counter() - t0:.1f}s")
    features = request_features()
    rng = np.random.default_rng(seed + 1)
    active = np.flatnonzero(data.user_weights > 0)
    p = data.user_weights[active] / data.user_weights[active].sum()
    users = [f"u{u}" for u in active[rng.choice(len(active), size=scale.requests + 50, p=p)]]

    node = _Node(_config_toml(cfg.secret))
    server = RedisServer(appendonly=True).start()
    try:
        r = redis.Redis.from_url(server.url)
        baseline = RedisProfiles(r, cfg)
        client = ProfileClient([node.address], cfg, timeout=120)
        # ---- ingest, batch by batch, alternating systems
        t_sr = t_redis = 0.0
        for batch in data.batches(scale.batch):
            a = time.perf_counter()
            res = client.write(batch)
            b = time.perf_counter()
            baseline.write(batch)
            c = time.perf_counter()
            t_sr += b - a
            t_redis += c - b
            if res.rejected:
                raise StreamrecError(f"benchmark events rejected: {res.rejected[:3]}")
        a = time.perf_counter()
        client.flush()  # merge + LMDB, counted against streamrec
        t_sr += time.perf_counter() - a
        _progress(
            as_json, f"ingest: streamrec {rate(len(data), t_sr):,.0f} ev/s, redis {rate(len(data), t_redis):,.0f} ev/s"
        )

        # ---- same answers on both sides
        q_of = {u: FeatureQuery(features=features, entities=[f"user:{u}"], now=end) for u in users}
        for u in users[: scale.check_users]:
            got = [_canon(x) for x in client.query(q_of[u]).results[0]]
            want = [_canon(x) for x in baseline.query(u, features, end)]
            if got != want:
                bad = next(i for i in range(len(got)) if got[i] != want[i])
                raise StreamrecError(
                    f"streamrec and the Redis baseline disagree for {u} on {features[bad].output_name()}: "
                    f"{got[bad]} vs {want[bad]}"
                )
        _progress(as_json, f"answers equal for {scale.check_users} users")

        # ---- query latency, alternating per request
        lat_sr: list[float] = []
        lat_redis: list[float] = []
        for n, u in enumerate(users):
            q = q_of[u]
            a = time.perf_counter()
            client.query(q)
            b = time.perf_counter()
            baseline.query(u, features, end)
            c = time.perf_counter()
            if n >= 50:  # warm-up
                lat_sr.append(b - a)
                lat_redis.append(c - b)
        _progress(as_json, "queries timed")

        # ---- size: the node's profiles, exported; and an in-process store for in-process latency
        keys = [k for ks in client.keys().values() for k in ks]
        blobs: dict[bytes, bytes] = {}
        for i in range(0, len(keys), 2048):
            blobs.update(client._nodes[node.address].export(keys[i : i + 2048]))
        dctx = zstandard.ZstdDecompressor()
        stored = sum(len(b) for b in blobs.values())
        raw = sum(len(dctx.decompress(b)) for b in blobs.values())
        redis_mem = int(r.info("memory")["used_memory"]) - int(r.info("memory").get("used_memory_startup", 0))
        local = ProfileStore(cfg, background=False)
        local.import_profiles(blobs)
        lat_local: list[float] = []
        for n, u in enumerate(users):
            a = time.perf_counter()
            local.query(q_of[u])
            if n >= 50:
                lat_local.append(time.perf_counter() - a)
        # ---- throughput with several clients at once (the node's capacity, not one client's round trip)
        picks = rng.choice(len(users), size=scale.concurrent_requests)
        conc_queries = [q_of[users[i]] for i in picks.tolist()]
        # Both sides run in this process, which holds the generated data, the Redis baseline and
        # the in-process store: freeze that heap, as a server does after start-up, so that the
        # collector's full passes over it do not decide which side a round's pause lands on.
        gc.collect()
        gc.freeze()
        groups = [
            _ConcurrentClients(node.address, cfg, scale.clients, 1, conc_queries[:10]),
            _ConcurrentClients(node.address, cfg, scale.clients, scale.clients, conc_queries[:10]),
        ]
        qps_local, (qps_concurrent, qps_separate), (ratio_concurrent, ratio_separate) = _throughput_rounds(
            local, groups, conc_queries, 10
        )
        for g in groups:
            g.close()
        gc.unfreeze()
        _progress(
            as_json, f"{scale.clients} clients at once: {qps_concurrent:,.0f} queries/s, in process {qps_local:,.0f}"
        )
        local.close()
        client.close()
    finally:
        node.stop()
        server.stop()

    qps_sr = rate(len(lat_sr), sum(lat_sr))
    qps_redis = rate(len(lat_redis), sum(lat_redis))
    ms_sr, ms_redis, ms_local = _ms(lat_sr), _ms(lat_redis), _ms(lat_local)
    ingest_sr, ingest_redis = rate(len(data), t_sr), rate(len(data), t_redis)
    try:
        import hiredis  # noqa: F401

        parser = "hiredis"
    except ImportError:
        parser = "python"
    return {
        "benchmark": "profiles",
        "scale": {
            "users": scale.users,
            "items": scale.items,
            "days": scale.days,
            "events": len(data),
            "requests": len(lat_sr),
            "features_per_request": len(features),
            "slots": len(BENCH_SLOTS),
        },
        "ratios": {
            "query_qps_vs_redis": rate_ratio(qps_sr, baseline_rate=qps_redis),
            "query_p99_vs_redis": time_ratio(ms_sr["p99"], baseline_seconds=ms_redis["p99"]),
            "ingest_vs_redis": rate_ratio(ingest_sr, baseline_rate=ingest_redis),
            "grpc_qps_vs_in_process": ratio_concurrent,
        },
        "goals": {
            "query_qps_vs_redis": ">= 1.0",
            "query_p99_vs_redis": "<= 1.0",
            "ingest_vs_redis": ">= 0.5",
            "grpc_qps_vs_in_process": ">= 0.5",
        },
        "streamrec_grpc": {
            "query_qps": qps_sr,
            "concurrent_clients": scale.clients,
            "concurrent_query_qps": qps_concurrent,
            "concurrent_separate_clients_query_qps": qps_separate,
            "concurrent_separate_clients_vs_in_process": ratio_separate,
            "query_p50_ms": ms_sr["p50"],
            "query_p99_ms": ms_sr["p99"],
            "ingest_events_per_s": ingest_sr,
        },
        "redis": {
            "query_qps": qps_redis,
            "query_p50_ms": ms_redis["p50"],
            "query_p99_ms": ms_redis["p99"],
            "ingest_events_per_s": ingest_redis,
            "bytes_per_profile": redis_mem / max(len(blobs), 1),
            "reply_parser": parser,
            "appendfsync": "always",
            "write_batches": "MULTI/EXEC pipelines, increments pre-aggregated per batch",
        },
        "in_process": {
            "query_qps": qps_local,
            "query_p50_ms": ms_local["p50"],
            "query_p99_ms": ms_local["p99"],
        },
        "in_process_query_p50_ms": ms_local["p50"],
        "in_process_query_p99_ms": ms_local["p99"],
        "profiles": len(blobs),
        "compression_ratio": raw / max(stored, 1),
        "bytes_per_profile": stored / max(len(blobs), 1),
        "answers_checked_users": scale.check_users,
        "answers_equal": True,
        "cpu_count": os.cpu_count(),
    }


def run_benchmark(
    as_json: bool = False,
    quick: bool = False,
    events: int | None = None,
    requests: int | None = None,
    clients: int | None = None,
) -> dict[str, Any]:
    """Run and print: one JSON object with ``--json``, else a table."""
    scale = QUICK if quick else Scale()
    if clients is not None and (isinstance(clients, bool) or not isinstance(clients, int) or clients < 1):
        raise InvalidInputError("clients", clients, "must be an integer >= 1")
    scale = replace(
        scale,
        events=events or scale.events,
        requests=requests or scale.requests,
        clients=clients or scale.clients,
    )
    out = measure(scale, as_json=as_json)
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        _print_table(out)
    return out


def _print_table(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = out["scale"]
    console = Console()
    console.print(
        f"[bold]streamrec bench profiles[/bold]: {s['users']:,} users, {s['items']:,} items, {s['days']} days, "
        f"{s['events']:,} events, {s['slots']} slots; {s['requests']} requests of {s['features_per_request']} features"
    )
    t = Table("", "streamrec (gRPC)", "Redis baseline", "ratio", "goal")
    sr, rd, ra = out["streamrec_grpc"], out["redis"], out["ratios"]
    qps = (f"{sr['query_qps']:,.0f}", f"{rd['query_qps']:,.0f}", f"{ra['query_qps_vs_redis']:.2f}")
    p99 = (f"{sr['query_p99_ms']:.2f}", f"{rd['query_p99_ms']:.2f}", f"{ra['query_p99_vs_redis']:.2f}")
    t.add_row("query throughput (req/s)", *qps, ">= 1.0")
    t.add_row("query p50 (ms)", f"{sr['query_p50_ms']:.2f}", f"{rd['query_p50_ms']:.2f}", "", "")
    t.add_row("query p99 (ms)", *p99, "<= 1.0")
    t.add_row(
        "ingest (events/s)",
        f"{sr['ingest_events_per_s']:,.0f}",
        f"{rd['ingest_events_per_s']:,.0f}",
        f"{ra['ingest_vs_redis']:.2f}",
        ">= 0.5",
    )
    t.add_row(
        f"query throughput, {sr['concurrent_clients']} clients at once (req/s)",
        f"{sr['concurrent_query_qps']:,.0f}",
        f"in process: {out['in_process']['query_qps']:,.0f}",
        f"{ra['grpc_qps_vs_in_process']:.2f}",
        ">= 0.5",
    )
    t.add_row("bytes per profile", f"{out['bytes_per_profile']:,.0f}", f"{rd['bytes_per_profile']:,.0f}", "", "")
    console.print(t)
    console.print(
        f"in-process query p50 {out['in_process_query_p50_ms']:.2f} ms, p99 {out['in_process_query_p99_ms']:.2f} ms; "
        f"compression ratio {out['compression_ratio']:.2f}x over {out['profiles']:,} profiles; "
        f"answers equal on {out['answers_checked_users']} users"
    )
