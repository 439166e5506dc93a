"""``--ranks W``: start W local ranks of a training command, the way ``torchrun`` would.

A rank is an ordinary process with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` in its environment; :func:`streamrec.training.distributed.init_from_env` joins the
group from them. So ``streamrec train online --ranks 2`` on one machine and
``torchrun --nnodes 2 --nproc-per-node 1 -m streamrec train online ...`` across two machines run the
same code: this module only plays torchrun's part locally (no elastic restarts).

The launcher watches its ranks: the first one that exits non-zero (or is killed) ends the job — the
others are sent SIGTERM, then SIGKILL after a grace period — and the launcher exits with that code,
so a supervisor (or the user) restarts the whole job, which resumes from the last snapshot and the
committed offsets. SIGINT/SIGTERM to the launcher are forwarded to every rank (they stop after their
step, write a final snapshot and commit).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

__all__ = ["launch_local", "rank_from_env"]


def rank_from_env() -> tuple[int, int] | None:
    """``(rank, world)`` when this process was started as a rank (by us or torchrun), else None."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return None


def launch_local(args: list[str], world: int, *, grace_s: float = 30.0, threads: int = 1) -> int:
    """Run ``python -m streamrec *args`` as ``world`` ranks on this machine; return the job's exit code.

    Each rank gets ``threads`` torch/OpenMP threads (cores for cores when comparing world sizes).
    """
    from streamrec.redis_server import free_port

    base = {
        **os.environ,
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "streamrec", *args],
            env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)},
        )
        for rank in range(world)
    ]
    stopping: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        while any(proc.poll() is None for proc in procs):
            failed = [proc for proc in procs if proc.poll() not in (None, 0)]
            if failed and not code:
                code = failed[0].returncode
                rank = procs.index(failed[0])
                print(f"streamrec: rank {rank} exited with code {code}; stopping the other ranks", file=sys.stderr)
                _stop(procs, grace_s)
            time.sleep(0.1)
        if not code:
            code = next((proc.returncode for proc in procs if proc.returncode), 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop(procs, grace_s)
    return 128 - code if code < 0 else code  # killed by signal N -> 128 + N, as a shell reports it


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
