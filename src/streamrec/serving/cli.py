"""Commands of the serving part: ``streamrec serve``.

``serve`` builds the embedded stack by default (SQLite log, in-process profile store on local
disk) or joins a cluster (``--log redis://...`` and ``--profiles host:port,...``), loads the
ranking model from a trainer snapshot and/or follows ``model-updates`` (a snapshot whose model
does not fit the feature plan is refused at start, naming what differs), and runs the API under
uvicorn. It binds 127.0.0.1 unless ``--host`` says otherwise: exposing a recommender that accepts
events is a decision, not a default. Heavy imports stay inside the command. Both commands are
module-level functions; ``register`` only attaches them.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import typer


def bench_serving(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    quick: bool = typer.Option(False, "--quick", help="A small world and few requests, for a smoke test."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated history and the request draw."),
    threads: int | None = typer.Option(None, "--threads", help="Concurrent callers (default 4, quick 2)."),
    workers: int = typer.Option(0, "--workers", help="Processes of `serve --workers` measured (0: one per core)."),
) -> None:
    """Recommend latency p50/p99 and QPS at 500 candidates, by stage, in process and over HTTP."""
    from streamrec.serving.bench import run_benchmark

    run_benchmark(as_json=as_json, quick=quick, seed=seed, threads=threads, workers=workers)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0 exposes it)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    log: str = typer.Option("sqlite://streamrec-data/log.db", "--log", help="Event log URL."),
    profiles: str = typer.Option(
        "streamrec-data/profiles",
        "--profiles",
        help="Profile store folder (embedded), or comma-separated host:port profile nodes (cluster).",
    ),
    snapshot: str | None = typer.Option(None, "--snapshot", help="Trainer snapshot to start the model from."),
    follow: bool = typer.Option(
        True, "--follow/--no-follow", help="Apply model-updates as the online trainer publishes them."
    ),
    config: str | None = typer.Option(None, "--config", help="TOML file with \\[profiles] and \\[serving] sections."),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="STREAMREC_TOKEN",
        help="Bearer token required on every route but /healthz and the dashboard's page and script.",
    ),
    sample_rate: float | None = typer.Option(
        None, "--sample-rate", help="Negative sampling rate the model was trained with (score correction)."
    ),
    threads: int = typer.Option(1, "--threads", help="torch intra-op threads."),
    compute_threads: int = typer.Option(
        1,
        "--compute-threads",
        help="Threads per process that run recommendations and feature queries (more cores: use --workers).",
    ),
    workers: int = typer.Option(
        0,
        "--workers",
        help="Worker processes behind the port (SO_REUSEPORT) under a supervisor, each with its own model "
        "replica following model-updates and, embedded, its own profile replica fed by the actions topic "
        "(0: this one process serves).",
    ),
    on_worker_death: str = typer.Option(
        "restart", "--on-worker-death", help="restart: start a new worker in its place; exit: stop and exit 1."
    ),
    worker_index: int | None = typer.Option(None, "--worker-index", hidden=True),
    ready_fd: int | None = typer.Option(None, "--ready-fd", hidden=True),
    retrieval_snapshot: str | None = typer.Option(
        None, help="A two-tower retriever's snapshot: its nearest items become the 'ann' source."
    ),
    retrieval_topic: str = typer.Option("retrieval-updates", help="With --follow: the retriever's updates."),
) -> None:
    """Run the HTTP API: events in, recommendations out (OpenAPI at /docs)."""
    if workers < 0:
        raise typer.BadParameter(f"must be >= 0, got {workers}", param_hint="--workers")
    if not 1 <= compute_threads <= 64:
        raise typer.BadParameter(f"must be from 1 to 64, got {compute_threads}", param_hint="--compute-threads")
    if on_worker_death not in ("restart", "exit"):
        raise typer.BadParameter(
            f"must be 'restart' or 'exit', got {on_worker_death!r}", param_hint="--on-worker-death"
        )
    if workers >= 1 and worker_index is None:
        import sys

        from streamrec.serving.workers import Supervisor

        def command(index: int, fd: int) -> list[str]:
            argv = [sys.executable, "-m", "streamrec", "serve", "--host", host, "--port", str(port)]
            argv += ["--log", log, "--profiles", profiles, "--threads", str(threads), "--workers", str(workers)]
            argv += ["--compute-threads", str(compute_threads)]
            argv += ["--follow" if follow else "--no-follow", "--worker-index", str(index), "--ready-fd", str(fd)]
            argv += ["--snapshot", snapshot] if snapshot else []
            argv += ["--config", config] if config else []
            argv += ["--sample-rate", str(sample_rate)] if sample_rate is not None else []
            argv += ["--retrieval-snapshot", retrieval_snapshot] if retrieval_snapshot else []
            argv += ["--retrieval-topic", retrieval_topic]
            return argv

        env = dict(os.environ, **({"STREAMREC_TOKEN": token} if token else {}))  # not on the command line
        code = Supervisor(command, workers, host, port, on_death=on_worker_death, env=env).run()
        raise typer.Exit(code)
    import msgspec
    import torch
    import uvicorn

    from streamrec.config import load_toml
    from streamrec.embedding.warmup import warm_embedding
    from streamrec.log import open_log
    from streamrec.profiles import ProfileClient
    from streamrec.profiles.warmup import warm_profiles
    from streamrec.serving.api import create_app
    from streamrec.serving.recommender import Recommender, RecommenderConfig, check_model
    from streamrec.serving.slots import serving_profiles_config

    torch.set_num_threads(threads)
    data = load_toml(config) if config else {}
    cfg = serving_profiles_config(data.get("profiles"))
    rcfg = RecommenderConfig.from_dict(data.get("serving", {}))
    if sample_rate is not None:
        rcfg = msgspec.structs.replace(rcfg, sample_rate=sample_rate)
    embedded = ":" not in profiles.split(",")[0]
    replica = embedded and worker_index is not None  # one of N workers: a profile replica of its own
    lock = None
    if replica:
        from streamrec.profiles.ingest import lock_store

        folder = os.path.join(profiles, f"worker-{worker_index}")
        os.makedirs(folder, exist_ok=True)
        lock = lock_store(Path(folder))  # a worker that is still alive keeps its replica
        client = ProfileClient.embedded(cfg, folder)
    elif embedded:
        os.makedirs(profiles, exist_ok=True)
        client = ProfileClient.embedded(cfg, profiles)
    else:
        client = ProfileClient(profiles.split(","), cfg)
    if log.startswith("sqlite://"):  # the embedded log's folder, like the profile store's
        os.makedirs(os.path.dirname(log.removeprefix("sqlite://").split("?", 1)[0]) or ".", exist_ok=True)
    event_log = open_log(log)
    model = None
    if snapshot:
        from streamrec.training.serving_model import ServingModel

        model = ServingModel.from_snapshot(snapshot)
        # Refuse now, naming what differs, rather than answer every request with a 500 later.
        check_model(model, rcfg.features, source=snapshot)
        if follow:
            model.follow(event_log)
    stop_ingest = None
    if replica:
        stop_ingest = _follow_actions(client, log, rcfg.actions_topic, f"serve-worker-{worker_index}")
    extra, retriever = None, None
    if retrieval_snapshot:
        from streamrec.serving.ann import AnnSource
        from streamrec.training.serving_model import ServingModel

        retriever = ServingModel.from_snapshot(retrieval_snapshot)
        if follow:
            retriever.follow(event_log, topic=retrieval_topic)
        extra = {"ann": AnnSource(client, retriever, rcfg.features)}
    recommender = Recommender(
        client, event_log, model, rcfg, write_profiles=embedded and not replica, extra_sources=extra
    )
    # Compile (or load) the kernels now, not inside the first requests (each part warms its own).
    warmed = (warm_embedding() if model is not None else 0.0) + (warm_profiles(cfg) if embedded else 0.0)
    api = create_app(recommender, token=token, worker=worker_index, compute_threads=compute_threads)
    # Everything alive now (torch, numba, the model, the profile cache so far) is long-lived: moved out
    # of the collector's view, a full collection walks only what requests leave behind. Full
    # collections over the whole heap were the recommender's p99 (docs/serving.md, latency).
    gc.collect()
    gc.freeze()
    base = f"http://{host}:{port}"
    if worker_index is None:  # a worker's supervisor says when they all serve
        typer.echo(f"streamrec serve: {base} (dashboard at {base}/, API docs at {base}/docs; kernels {warmed:.1f} s)")
    if token:
        typer.echo("  token required: the dashboard asks for it once, or open it as /#token=<token>")
    try:
        if worker_index is None:
            uvicorn.run(api, host=host, port=port, log_level="warning")
        else:
            from streamrec.serving.workers import bind_reuseport, signal_ready

            sock = bind_reuseport(host, port)
            server = uvicorn.Server(uvicorn.Config(api, log_level="warning"))
            signal_ready(ready_fd)
            server.run(sockets=[sock])
    finally:
        if stop_ingest is not None:
            stop_ingest()
        if model is not None and follow:
            model.stop()
        if retriever is not None and follow:
            retriever.stop()
        try:
            recommender.flush()  # impressions of a request cut off between compute and log
        except Exception as exc:  # reported; the shutdown goes on
            typer.echo(f"streamrec serve: impressions not logged at exit: {exc}", err=True)
        event_log.close()
        client.close()
        if lock is not None:
            lock.close()


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``streamrec bench serving`` and ``streamrec serve`` (a command of the root: the part has no group)."""
    bench_app.command("serving")(bench_serving)
    app.command("serve")(serve)


def _follow_actions(client, log_url: str, topic: str, group: str):  # type: ignore[no-untyped-def]
    """Bring a worker's profile replica up to the end of ``topic``, then keep it there in a thread.

    Returns a function that stops the thread. The catch-up returns once nothing arrived for half a
    second, so a worker starts serving with the profiles the log held when it started.
    """
    import threading

    from streamrec.profiles.ingest import ingest

    store = client  # the replica's ProfileClient: a sink with a durable write
    ingest(store, log_url, topic=topic, group=group, idle_exit_s=0.5)
    client.flush()
    stop = threading.Event()
    thread = threading.Thread(
        target=ingest, args=(store, log_url), kwargs={"topic": topic, "group": group, "stop": stop.is_set},
        name="serve-profile-replica", daemon=True,
    )  # fmt: skip
    thread.start()

    def stop_ingest() -> None:
        stop.set()
        thread.join(timeout=10.0)

    return stop_ingest
