"""The cluster launcher: every part of the loop as its own process, over Redis Streams and gRPC.

``DESIGN.md``'s cluster mode on one machine, for trying it and for the end-to-end test:

```
 redis-server ── topics actions, impressions, examples, model-updates, retrieval-updates
 node-0 … node-N-1   streamrec profiles serve   (gRPC; entities placed on a hash ring)
 ingest              streamrec profiles ingest --profiles nodes   actions → profile nodes
 joiner              streamrec joiner                             impressions + actions → examples
 trainer             streamrec train online                       examples → model-updates, snapshot
 retriever           streamrec train online --retrieval           examples → retrieval-updates (ann source)
 api                 streamrec serve --profiles nodes --follow    HTTP; events → actions; impressions
```

Why it is built this way:

* **No cluster manager of its own** (``DESIGN.md``): the launcher only starts the same commands a
  user would type, checks each is ready, and stops them; every part keeps its own crash semantics.
* **One folder holds the cluster** (``--dir``): ``cluster.toml`` (the config every process
  shares), ``cluster.json`` (the layout: node and Redis ports, fixed at the first start because
  the hash ring places entities by node *address*; a restart must reuse them or profiles land on
  the wrong node), the nodes' stores, the joiner's state, the trainer's snapshot, a local Redis's
  append-only file, and one log per process. ``cluster up`` on the same folder resumes.
* **Ready means answering**: nodes write ready files, the ingest too; the joiner and the trainer
  are ready when their consumer groups exist on Redis; the trainer must also have published its
  start-up ``"full"`` update, and the API is ready when ``/healthz`` reports a model version that
  includes it, so a ready cluster has the whole path from events to scores live.
* **Fail together**: if any process exits, the launcher reports which (with the tail of its log)
  and stops the rest; a half cluster that silently loses training or profiles is worse than none.
* **Seen from outside**: once ready, the launcher writes ``run/up.json`` (its pid and every
  process's), removed when it has stopped them; ``cluster status`` and ``cluster down`` read it
  (``control.py``), and a second ``cluster up`` on a folder that runs is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamrec.cluster.control import launcher_cmdline, read_running, running_file
from streamrec.cluster.process import Child, redis_answers, stop_all
from streamrec.errors import InvalidInputError, StreamrecError

__all__ = ["Cluster", "ClusterConfig", "PartCommand"]


@dataclass(frozen=True)
class PartCommand:
    """One process of a cluster: its ``name``, command line, the processes it needs started first
    (``after``) and the address it serves, if any. :meth:`Cluster.start` runs these;
    ``cluster up --print`` writes them as systemd units (``units.py``)."""

    name: str
    args: list[str]
    after: tuple[str, ...] = ()
    address: str = ""
    oneshot: bool = False  # runs to completion before the ones after it start (the topics)


@dataclass
class ClusterConfig:
    """What ``streamrec cluster up`` takes.

    Attributes
    ----------
    dir: the cluster's folder (created; reused by a later start).
    redis_url: an existing Redis (``redis://host:port/db``); ``None`` starts a local
        ``redis-server`` with its append-only file in ``dir/redis`` (unless ``log_url`` names
        another log, which then needs no Redis).
    log_url: the event log every process uses (``redis://...`` or ``kafka://host:port``);
        ``None``: Redis Streams on ``redis_url``.
    partitions: partitions of ``actions``, ``impressions`` and ``examples`` (created at start;
        a log whose topics already have another count is refused). ``model-updates`` has one.
    joiners, ingest: processes of the joiner and of the profile ingest (each a consumer group
        sharing the partitions; at most ``partitions`` of each do work, the rest stand by).
    trainers: ranks of the online trainer (``train online --ranks``: sharded tables on
        torch.distributed, each rank reading its share of the partitions of ``examples``).
    nodes: number of profile nodes (fixed at the first start of ``dir``).
    replicas: copies of each profile on the nodes' ring (``[profiles] replicas`` in
        ``cluster.toml``, so the ingest and the API use it; fixed at the first start of ``dir``;
        writes are acknowledged by ``replicas // 2 + 1`` of them; see docs/profiles.md).
    host: interface every process binds.
    api_port: the HTTP API's port (0: any free port).
    sparse_sync_interval, dense_sync_interval, snapshot_interval: the online trainer's schedules.
    negative_rate: the joiner's negative sampling rate (the API corrects scores by it).
    window: the joiner's window.
    snapshot: a trainer snapshot to start the model from when ``dir`` has none (default: an
        untrained DeepFM of the serving plan's shape).
    config: a TOML file with ``[profiles]``, ``[serving]`` and ``[joiner]`` sections.
    merge_interval_s: the profile nodes' merge interval (how soon a write is visible) unless
        ``config`` sets one.
    startup_timeout_s: how long every process together may take to become ready.
    grace_s: how long a process may take to stop after SIGTERM before SIGKILL.
    """

    dir: Path = Path("streamrec-cluster")
    redis_url: str | None = None
    log_url: str | None = None
    partitions: int = 1
    joiners: int = 1
    ingest: int = 1
    trainers: int = 1
    nodes: int = 2
    replicas: int = 2
    host: str = "127.0.0.1"
    api_port: int = 8000
    sparse_sync_interval: str = "10s"
    dense_sync_interval: str = "5m"
    snapshot_interval: str = "10m"
    negative_rate: float = 0.1
    window: str = "10m"
    snapshot: Path | None = None
    config: Path | None = None
    merge_interval_s: float = 0.25
    startup_timeout_s: float = 180.0
    grace_s: float = 10.0

    def __post_init__(self) -> None:
        from streamrec.config import parse_duration

        self.dir = Path(self.dir)
        if not 1 <= self.nodes <= 64:
            raise InvalidInputError("nodes", self.nodes, "must be in 1..64")
        if not 1 <= self.replicas <= 64:
            raise InvalidInputError("replicas", self.replicas, "must be in 1..64")
        if not 0 <= self.api_port <= 65535:
            raise InvalidInputError("api_port", self.api_port, "must be a TCP port (0: any free one)")
        if not 0 < self.negative_rate <= 1:
            raise InvalidInputError("negative_rate", self.negative_rate, "must be in (0, 1]")
        for name in ("sparse_sync_interval", "dense_sync_interval", "snapshot_interval"):
            parse_duration(getattr(self, name), name, positive=True)
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://")):
            raise InvalidInputError("redis_url", self.redis_url, "expected redis://host:port/db")
        if self.log_url is not None and not self.log_url.startswith(("redis://", "rediss://", "kafka://")):
            raise InvalidInputError("log_url", self.log_url, "expected redis://host:port/db or kafka://host:port")
        if not 1 <= self.partitions <= 256:
            raise InvalidInputError("partitions", self.partitions, "must be in 1..256")
        if not 1 <= self.trainers <= 64:
            raise InvalidInputError("trainers", self.trainers, "must be in 1..64")
        for name in ("joiners", "ingest"):
            count = getattr(self, name)
            if not 1 <= count <= self.partitions:
                raise InvalidInputError(
                    name, count, f"must be in 1..{self.partitions} (a process beyond the partition count has no work)"
                )

        if self.redis_url is None and self.log_url is not None and self.log_url.startswith(("redis://", "rediss://")):
            self.redis_url = self.log_url  # the log's Redis is the cluster's Redis

    @property
    def needs_redis(self) -> bool:
        """Whether the cluster uses Redis at all (as its log)."""
        return self.log_url is None or self.log_url.startswith(("redis://", "rediss://"))


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamrec", *args]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Cluster:
    """Start, watch and stop a cluster; a context manager.

    Examples
    --------
    >>> with Cluster(ClusterConfig(dir=Path("runs/cluster"), api_port=0)) as cluster:  # doctest: +SKIP
    ...     cluster.api_url, cluster.node_addresses
    ...     cluster.supervise()  # blocks until Ctrl-C, SIGTERM (via ``stop``) or a process dies
    """

    def __init__(self, config: ClusterConfig, say: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.say = say or (lambda _msg: None)
        self.dir = config.dir.resolve()
        self.children: list[Child] = []
        self.redis_url = ""
        self.log_url = ""
        self.api_url = ""
        self.node_addresses: list[str] = []
        self.snapshot = self.dir / "model.snapshot.npz"
        self.retrieval_snapshot = self.dir / "retrieval.snapshot.npz"  # the ann source's two-tower retriever
        self.config_file = self.dir / "cluster.toml"
        self.layout: dict[str, Any] = {}  # cluster.json: the ports fixed at the first start
        self.serving_config: dict[str, Any] = {}  # cluster.toml's content
        self.started = False
        self._redis_args: list[str] | None = None  # the Redis this launcher starts, if any
        self._api_port = config.api_port

    # -- life cycle ---------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Cluster:
        """Prepare the folder, start every process and wait until all are ready (or raise and stop)."""
        try:
            self._prepare()
            self._start_redis()
            self._start_parts()
            self.started = True
            self._write_running()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop in dependency order: API, then ingest/joiner/trainers, then nodes, then Redis."""
        nodes = [c.name for c in self.children if c.name.startswith("node")]
        stages = [["api"], ["ingest", "joiner", "trainer", "retriever"], nodes, ["redis"]]
        for names in stages:
            group = [c for c in self.children if c.name in names or c.name.rpartition("-")[0] in names]
            if group:
                stop_all(group, self.config.grace_s)
        if self.started:
            running_file(self.dir).unlink(missing_ok=True)

    def check(self) -> None:
        """Raise :class:`ProcessDiedError` for the first child that has exited."""
        for child in self.children:
            if not child.alive():
                raise child.died()

    def supervise(self, should_stop: Callable[[], bool] = lambda: False, poll_s: float = 0.2) -> None:
        """Block until ``should_stop()`` (return) or a child exits (raise :class:`ProcessDiedError`)."""
        while not should_stop():
            self.check()
            time.sleep(poll_s)

    # -- what a user or a test reads ----------------------------------------------------------
    def endpoints(self) -> dict[str, Any]:
        """The endpoints and processes as one JSON-ready object (what ``--json`` prints)."""
        return {
            "api": self.api_url,
            "redis": self.redis_url,
            "log": self.log_url,
            "partitions": self.config.partitions,
            "profile_nodes": list(self.node_addresses),
            "replicas": self.config.replicas,
            "dir": str(self.dir),
            "config": str(self.config_file),
            "snapshot": str(self.snapshot),
            "processes": [
                {
                    "name": c.name,
                    "pid": c.pid,
                    "address": c.address,
                    "log": str(c.log),
                    "ready_after_s": None if c.ready_after_s is None else round(c.ready_after_s, 2),
                }
                for c in self.children
            ],
        }

    def _write_running(self) -> None:
        """``run/up.json``: this launcher and its processes, for ``cluster status`` and ``cluster down``."""
        info = {
            **self.endpoints(),
            "launcher_pid": os.getpid(),
            "launcher_cmdline": launcher_cmdline(),
            "up_since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        path = running_file(self.dir)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=1) + "\n")
        os.replace(tmp, path)

    # -- steps --------------------------------------------------------------------------------
    def _prepare(self) -> None:
        from streamrec.cluster.bootstrap import (
            check_snapshot,
            cluster_config,
            initial_retrieval_snapshot,
            initial_snapshot,
            to_toml,
        )
        from streamrec.config import load_toml
        from streamrec.redis_server import free_port

        cfg = self.config
        running = read_running(self.dir)
        if running is not None:
            raise InvalidInputError(
                "dir", str(self.dir),
                f"a cluster already runs from this folder (launcher pid {running['launcher_pid']}, "
                f"API {running['api']}); stop it with `streamrec cluster down --dir {self.dir}`",
            )  # fmt: skip
        for sub in ("logs", "run", "nodes"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for stale in (self.dir / "run").iterdir():
            stale.unlink()
        layout_path = self.dir / "cluster.json"
        layout = _read_json(layout_path) or {}
        if "node_ports" in layout and len(layout["node_ports"]) != cfg.nodes:
            raise InvalidInputError(
                "nodes", cfg.nodes,
                f"{self.dir} was created with {len(layout['node_ports'])} profile nodes; entities are placed on "
                "those, so resize with ProfileClient.add_node/remove_node (docs/cluster.md), not by restarting",
            )  # fmt: skip
        # A folder from before replication was made with one copy of each profile.
        layout.setdefault("replicas", 1 if "node_ports" in layout else cfg.replicas)
        if layout["replicas"] != cfg.replicas:
            raise InvalidInputError(
                "replicas", cfg.replicas,
                f"{self.dir} was created with {layout['replicas']} replica(s) of each profile; "
                f"start it with --replicas {layout['replicas']}",
            )  # fmt: skip
        layout.setdefault("node_ports", [free_port() for _ in range(cfg.nodes)])
        if cfg.redis_url is None and cfg.needs_redis:
            layout.setdefault("redis_port", free_port())
        layout_path.write_text(json.dumps(layout, indent=1) + "\n")
        self.layout = layout
        self.node_addresses = [f"{cfg.host}:{p}" for p in layout["node_ports"]]
        user = load_toml(cfg.config) if cfg.config is not None else None
        data = cluster_config(
            user, negative_rate=cfg.negative_rate, window=cfg.window, merge_interval=cfg.merge_interval_s
        )
        data["profiles"]["replicas"] = cfg.replicas  # the ingest's and the API's ProfileClient read it
        self.config_file.write_text(
            "# Written by `streamrec cluster up`: the one config every process of this cluster reads.\n" + to_toml(data)
        )
        self.serving_config = data
        if not self.snapshot.exists():
            if cfg.snapshot is not None:
                check_snapshot(Path(cfg.snapshot), data)
                shutil.copyfile(cfg.snapshot, self.snapshot)
                self.say(f"model: {cfg.snapshot} copied to {self.snapshot} (the trainer continues it there)")
            else:
                initial_snapshot(self.snapshot, data)
                self.say(f"model: an untrained DeepFM of the serving plan's shape at {self.snapshot}")
        else:
            check_snapshot(self.snapshot, data)
            if cfg.snapshot is not None:
                self.say(f"model: {self.snapshot} exists and continues; --snapshot {cfg.snapshot} is not used")
        if not self.retrieval_snapshot.exists():
            initial_retrieval_snapshot(self.retrieval_snapshot, data)
            self.say(f"retriever: an untrained two-tower model at {self.retrieval_snapshot} (feeds the ann source)")

    def _resolve_log(self) -> list[str] | None:
        """Set ``redis_url`` and ``log_url``; the command line of the Redis to start here, if any."""
        cfg = self.config
        if not cfg.needs_redis:
            self.log_url = str(cfg.log_url)
            return None
        if cfg.redis_url is not None:
            self.redis_url = cfg.redis_url
            self.log_url = cfg.log_url or self.redis_url
            return None
        binary = shutil.which("redis-server")
        if binary is None:
            raise StreamrecError("redis-server not found on PATH (apt-get install redis-server), or pass --redis URL")
        port = self.layout["redis_port"]
        self.redis_url = f"redis://{cfg.host}:{port}/0"
        self.log_url = cfg.log_url or self.redis_url
        folder = self.dir / "redis"
        folder.mkdir(exist_ok=True)
        return [
            binary, "--port", str(port), "--bind", cfg.host, "--dir", str(folder), "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes", "--loglevel", "warning",
        ]  # fmt: skip

    def _start_redis(self) -> None:
        cfg = self.config
        self._redis_args = args = self._resolve_log()
        if args is None:
            if cfg.needs_redis and not redis_answers(self.redis_url):
                raise StreamrecError(f"--redis {self.redis_url}: no Redis answers PING there")
            return
        url = self.redis_url
        child = Child("redis", args, self.dir / "logs" / "redis.log", lambda: redis_answers(url), url.split("/")[2])
        self._launch([child])

    def commands(self) -> list[PartCommand]:
        """Every process of the cluster as the launcher starts it, in start order (after :meth:`plan`)."""
        cfg = self.config
        conf = str(self.config_file)
        run = self.dir / "run"
        nodes = ",".join(self.node_addresses)
        out = []
        if self._redis_args is not None:
            out.append(PartCommand("redis", self._redis_args, (), self.redis_url.split("/")[2]))
        base = ("redis",) if self._redis_args is not None else ()
        topics = [f"{t}:{cfg.partitions}" for t in ("actions", "impressions", "examples")] + [
            "model-updates:1",
            "retrieval-updates:1",
        ]
        out.append(PartCommand("topics", _python("log", "create-topics", self.log_url, *topics), base, oneshot=True))
        base += ("topics",)
        node_names = tuple(f"node-{i}" for i in range(len(self.node_addresses)))
        for name, address in zip(node_names, self.node_addresses, strict=True):
            args = _python(
                "profiles", "serve", "--config", conf, "--path", str(self.dir / "nodes" / name),
                "--host", cfg.host, "--port", address.rpartition(":")[2], "--metrics-port", "0",
                "--ready-file", str(run / f"{name}.json"),
            )  # fmt: skip
            out.append(PartCommand(name, args, base, address))
        for i in range(cfg.ingest):
            name = "ingest" if cfg.ingest == 1 else f"ingest-{i}"
            args = _python(
                "profiles", "ingest", "--log", self.log_url, "--profiles", nodes, "--config", conf,
                "--ready-file", str(run / f"{name}.json"),
            )  # fmt: skip
            out.append(PartCommand(name, args, base + node_names))
        for i in range(cfg.joiners):
            name = "joiner" if cfg.joiners == 1 else f"joiner-{i}"
            args = _python(
                "joiner", "--log", self.log_url, "--config", conf, "--state-dir", str(self.dir / "joiner"),
                "--ready-file", str(run / f"{name}.json"),
            )  # fmt: skip
            out.append(PartCommand(name, args, base))
        args = _python(
            "train", "online", "--log", self.log_url, "--snapshot", str(self.snapshot),
            "--sparse-sync-interval", cfg.sparse_sync_interval, "--dense-sync-interval", cfg.dense_sync_interval,
            "--snapshot-interval", cfg.snapshot_interval, "--threads", "1", "--ranks", str(cfg.trainers),
        )  # fmt: skip
        out.append(PartCommand("trainer", args, base))
        args = _python(
            "train", "online", "--log", self.log_url, "--snapshot", str(self.retrieval_snapshot), "--retrieval",
            "--group", "retriever", "--updates-topic", "retrieval-updates", "--sparse-sync-interval",
            cfg.sparse_sync_interval, "--dense-sync-interval", cfg.dense_sync_interval, "--snapshot-interval",
            cfg.snapshot_interval, "--threads", "1",
        )  # fmt: skip
        out.append(PartCommand("retriever", args, base))
        args = _python(
            "serve", "--host", cfg.host, "--port", str(self._api_port), "--log", self.log_url, "--profiles", nodes,
            "--snapshot", str(self.snapshot), "--follow", "--config", conf,
            "--retrieval-snapshot", str(self.retrieval_snapshot),
            "--sample-rate", repr(float(self.serving_config["serving"]["sample_rate"])), "--threads", "1",
        )  # fmt: skip
        out.append(PartCommand("api", args, base + node_names, self.api_url))
        return out

    def plan(self) -> list[PartCommand]:
        """Prepare the folder (config, model, fixed ports) as :meth:`start` does, start nothing, and
        return the processes :meth:`start` would run (what ``cluster up --print`` writes out)."""
        self._prepare()
        self._redis_args = self._resolve_log()
        self._choose_api_port()
        return self.commands()

    def _choose_api_port(self) -> None:
        self._api_port = self.config.api_port
        if self._api_port == 0:
            from streamrec.redis_server import free_port

            self._api_port = free_port()
        self.api_url = f"http://{self.config.host}:{self._api_port}"

    def _start_parts(self) -> None:
        from streamrec.log import open_log
        from streamrec.training.snapshot import read_meta

        cfg = self.config
        logs = self.dir / "logs"
        log = open_log(self.log_url)
        try:
            for topic in ("actions", "impressions", "examples"):
                log.create_topic(topic, partitions=cfg.partitions)  # refuses a log made with another count
            log.create_topic("model-updates", partitions=1)  # one order of updates for every replica
            log.create_topic("retrieval-updates", partitions=1)
            updates_before = log.end_offset("model-updates")
            retrieval_before = log.end_offset("retrieval-updates")
            version_before = int(read_meta(self.snapshot)["extra"].get("online", {}).get("version", 0))
            self._choose_api_port()
            run = self.dir / "run"
            api = self.api_url
            ready = {
                "trainer": lambda: log.end_offset("model-updates") > updates_before,
                "retriever": lambda: log.end_offset("retrieval-updates") > retrieval_before,
                "api": lambda: _api_version(api) > version_before,
            }
            children = []
            for part in self.commands():
                if part.name in ("redis", "topics"):
                    continue  # Redis runs already; the topics were created above, in this process
                check = ready.get(part.name) or (run / f"{part.name}.json").exists
                children.append(Child(part.name, part.args, logs / f"{part.name}.log", check, part.address))
            self._launch(children)
        finally:
            log.close()

    def _launch(self, children: list[Child]) -> None:
        env = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        for child in children:
            child.env = env
            child.start()
            self.children.append(child)
            self.say(f"started {child.name} (pid {child.pid})")
        deadline = time.monotonic() + self.config.startup_timeout_s
        waiting = list(children)
        while waiting:
            for child in self.children:  # a process started earlier may die meanwhile too
                if not child.alive():
                    raise child.died()
            waiting = [c for c in waiting if not c.probe()]
            if not waiting:
                break
            if time.monotonic() > deadline:
                names = ", ".join(c.name for c in waiting)
                raise StreamrecError(
                    f"cluster: not ready after {self.config.startup_timeout_s:g} s: {names}; "
                    f"last lines of {waiting[0].name} ({waiting[0].log}):\n{waiting[0].tail()}"
                )
            time.sleep(0.1)
        for child in children:
            self.say(f"{child.name} ready after {child.ready_after_s:.1f} s")


def _api_version(url: str) -> int:
    """The model version ``/healthz`` reports (-1 while not answering or without a model)."""
    with urllib.request.urlopen(f"{url}/healthz", timeout=2.0) as reply:
        version = json.loads(reply.read()).get("model_version")
    return -1 if version is None else int(version)
