"""An acknowledged write survives kill -9 of the process that acknowledged it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from streamrec.profiles import Feature, FeatureQuery, ProfileStore

NOW = 1_700_000_000.0

CHILD = textwrap.dedent(
    """
    import sys
    from streamrec.profiles import ProfileStore
    from streamrec.records import ActionEvent
    NOW = 1_700_000_000.0
    # Flush rarely: what survives must come from the WAL (and whatever LMDB got before).
    cfg = {"merge_interval": "0.02s", "flush_interval": sys.argv[2]}
    store = ProfileStore(cfg, path=sys.argv[1], clock=lambda: NOW)
    i = 0
    while True:
        batch = [ActionEvent(user=str(u), item="m", action="click", time=NOW - 1, attributes={"category": "c"})
                 for u in range(i % 7, i % 7 + 5)]
        res = store.write(batch)
        print("ack", i, res.accepted, flush=True)
        i += 1
    """
)


def _run_and_kill(path, flush_interval: str, acks_wanted: int) -> tuple[int, int]:
    """Kill the writer right after its ``acks_wanted``-th acknowledgement.

    Returns (events acknowledged when the kill was sent, events acknowledged in all: the writer
    may have run a few batches ahead of the reader of its output).
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), flush_interval],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    acked = []
    assert proc.stdout is not None
    for line in proc.stdout:
        _, _, n = line.split()
        acked.append(int(n))
        if len(acked) >= acks_wanted:
            os.kill(proc.pid, signal.SIGKILL)  # right after an acknowledgement
            break
    proc.wait()
    assert len(acked) >= acks_wanted, f"writer died early: {proc.stderr.read() if proc.stderr else ''}"
    later = [int(line.split()[2]) for line in proc.stdout.read().splitlines() if line.startswith("ack ")]
    return sum(acked), sum(acked) + sum(later)


def _total_clicks(path) -> float:
    store = ProfileStore(None, path=path, clock=lambda: NOW, background=False)
    q = FeatureQuery(
        entities=[f"user:{u}" for u in range(12)],
        features=[Feature(slot="clicked_category", window="1h", counters=("click",))],
        now=NOW,
    )
    total = sum(r[0].scalar() for r in store.query(q).results)
    store.close()
    return total


def test_acknowledged_writes_survive_sigkill_from_the_wal(tmp_path):
    acked, acked_all = _run_and_kill(tmp_path, "1h", 60)
    total = _total_clicks(tmp_path)
    # Every acknowledged event is there; at most the one batch in flight when killed is extra.
    assert acked <= total <= acked_all + 5


def test_acknowledged_writes_survive_sigkill_across_flushes(tmp_path):
    acked, acked_all = _run_and_kill(tmp_path, "0.05s", 150)
    total = _total_clicks(tmp_path)
    assert acked <= total <= acked_all + 5
    # Recovered state is itself durable: a second open sees the same.
    assert _total_clicks(tmp_path) == total
