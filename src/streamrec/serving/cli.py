"""Commands of the serving part: ``streamrec serve``.

``serve`` builds the embedded stack by default (SQLite log, in-process profile store on local
disk) or joins a cluster (``--log redis://...`` and ``--profiles host:port,...``), loads the
ranking model from a trainer snapshot and/or follows ``model-updates`` (a snapshot whose model
does not fit the feature plan is refused at start, naming what differs), and runs the API under
uvicorn. It binds 127.0.0.1 unless ``--host`` says otherwise: exposing a recommender that accepts
events is a decision, not a default. Heavy imports stay inside the command.
"""

from __future__ import annotations

import gc
import os

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    @bench_app.command("serving")
    def bench_serving(
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
        quick: bool = typer.Option(False, "--quick", help="A small world and few requests, for a smoke test."),
        seed: int = typer.Option(0, "--seed", help="Seed of the generated history and the request draw."),
        threads: int | None = typer.Option(None, "--threads", help="Concurrent callers (default 4, quick 2)."),
    ) -> None:
        """Recommend latency p50/p99 and QPS at 500 candidates, by stage, in process and over HTTP."""
        from streamrec.serving.bench import run_benchmark

        run_benchmark(as_json=as_json, quick=quick, seed=seed, threads=threads)

    @app.command("serve")
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
        config: str | None = typer.Option(
            None, "--config", help="TOML file with \\[profiles] and \\[serving] sections."
        ),
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
        retrieval_snapshot: str | None = typer.Option(
            None, help="A two-tower retriever's snapshot: its nearest items become the 'ann' source."
        ),
        retrieval_topic: str = typer.Option("retrieval-updates", help="With --follow: the retriever's updates."),
    ) -> None:
        """Run the HTTP API: events in, recommendations out (OpenAPI at /docs)."""
        import msgspec
        import torch
        import uvicorn

        from streamrec.config import load_toml
        from streamrec.log import open_log
        from streamrec.profiles import ProfileClient
        from streamrec.serving.api import create_app
        from streamrec.serving.recommender import Recommender, RecommenderConfig, check_model
        from streamrec.serving.slots import serving_profiles_config
        from streamrec.warmup import warm_embedding, warm_profiles

        torch.set_num_threads(threads)
        data = load_toml(config) if config else {}
        cfg = serving_profiles_config(data.get("profiles"))
        rcfg = RecommenderConfig.from_dict(data.get("serving", {}))
        if sample_rate is not None:
            rcfg = msgspec.structs.replace(rcfg, sample_rate=sample_rate)
        embedded = ":" not in profiles.split(",")[0]
        if embedded:
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
        extra, retriever = None, None
        if retrieval_snapshot:
            from streamrec.serving.ann import AnnSource
            from streamrec.training.serving_model import ServingModel

            retriever = ServingModel.from_snapshot(retrieval_snapshot)
            if follow:
                retriever.follow(event_log, topic=retrieval_topic)
            extra = {"ann": AnnSource(client, retriever, rcfg.features)}
        recommender = Recommender(client, event_log, model, rcfg, write_profiles=embedded, extra_sources=extra)
        # Compile (or load) the kernels now, not inside the first requests (streamrec.warmup).
        warmed = (warm_embedding() if model is not None else 0.0) + (warm_profiles(cfg) if embedded else 0.0)
        api = create_app(recommender, token=token)
        # Everything alive now (torch, numba, the model, the profile cache so far) is long-lived: moved out
        # of the collector's view, a full collection walks only what requests leave behind. Full
        # collections over the whole heap were the recommender's p99 (docs/serving.md, latency).
        gc.collect()
        gc.freeze()
        base = f"http://{host}:{port}"
        typer.echo(f"streamrec serve: {base} (dashboard at {base}/, API docs at {base}/docs; kernels {warmed:.1f} s)")
        if token:
            typer.echo("  token required: the dashboard asks for it once, or open it as /#token=<token>")
        try:
            uvicorn.run(api, host=host, port=port, log_level="warning")
        finally:
            if model is not None and follow:
                model.stop()
            if retriever is not None and follow:
                retriever.stop()
            event_log.close()
            client.close()
