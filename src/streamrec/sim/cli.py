"""Commands of the simulator: ``streamrec sim history`` and ``streamrec sim run``.

``history`` writes past traffic for the batch stage (Parquet, or appended to an event log);
``run`` drives a baseline policy (in-process) or a running ``streamrec serve`` (``--url``) and
prints CTR per bucket. Heavy work is imported inside the commands so ``streamrec --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from streamrec.sim.driver import Bucket

_POLICIES = ("random", "popularity", "oracle")


def _policy(name: str, world: object) -> object:
    from streamrec.errors import InvalidInputError
    from streamrec.sim import OraclePolicy, PopularityPolicy, RandomPolicy

    makers = {"random": RandomPolicy, "popularity": PopularityPolicy, "oracle": OraclePolicy}
    if name not in makers:
        raise InvalidInputError("--policy", name, f"must be one of {', '.join(_POLICIES)}")
    return makers[name](world)  # type: ignore[arg-type]


sim_app = typer.Typer(help="The simulated world: history for the batch stage, traffic for a recommender.",
                      no_args_is_help=True)  # fmt: skip


@sim_app.command("history")
def history_command(
    days: float = typer.Option(1.0, min=0.0, help="Simulated days of past traffic."),
    out: Path | None = typer.Option(None, help="Write the events to this Parquet file."),
    log: str | None = typer.Option(None, help="Append the events to this event log (topic actions)."),
    policy: str = typer.Option("random", help="Logging policy: random, popularity or oracle."),
    users: int = typer.Option(1000, min=1, help="Number of simulated users."),
    activity_scale: float = typer.Option(1.0, min=0.0, help="Multiply every user's request rate."),
    seed: int = typer.Option(0, min=0, help="Seed of the world."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a sentence."),
) -> None:
    """Simulate past traffic (impressions, clicks, likes) and save it for the batch stage."""
    import json

    from streamrec.errors import InvalidInputError
    from streamrec.sim import World

    if out is None and log is None:
        raise InvalidInputError("--out", None, "give --out FILE.parquet and/or --log URL")
    world = World(seed=seed, n_users=users)
    past = world.generate_history(days=days, policy=_policy(policy, world), activity_scale=activity_scale)
    if out is not None:
        past.to_parquet(out)
    if log is not None:
        from streamrec.log import open_log

        with open_log(log) as event_log:
            past.append_to(event_log)
    total = past.report.total()
    summary = {"events": len(past.events), "requests": total.requests, "impressions": total.impressions,
               "clicks": total.clicks, "ctr": total.ctr, "start": past.start, "end": past.end,
               "out": str(out) if out else None, "log": log}  # fmt: skip
    if as_json:
        print(json.dumps(summary))
    else:
        typer.echo(f"{len(past.events)} events ({total.requests} requests, CTR {total.ctr:.2%}) "
                   f"-> {out or ''} {log or ''}".rstrip())  # fmt: skip


@sim_app.command("run")
def run_command(
    minutes: float = typer.Option(30.0, min=0.0, help="Simulated minutes of traffic."),
    policy: str = typer.Option("popularity", help="In-process baseline: random, popularity or oracle."),
    url: str | None = typer.Option(None, help="Drive a running API instead, e.g. http://127.0.0.1:8000."),
    token: str | None = typer.Option(None, envvar="STREAMREC_TOKEN", help="Bearer token for --url."),
    users: int = typer.Option(1000, min=1, help="Number of simulated users."),
    k: int = typer.Option(10, min=1, help="Items per request."),
    bucket_s: float = typer.Option(60.0, min=1.0, help="Seconds of simulated time per reported bucket."),
    seed: int = typer.Option(0, min=0, help="Seed of the world."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (buckets and total)."),
) -> None:
    """Send simulated traffic to a policy or to the HTTP API; print requests, clicks and CTR per bucket."""
    import json

    from streamrec.sim import HttpDriver, InProcessDriver, World

    world = World(seed=seed, n_users=users)
    if url is not None:
        driver = HttpDriver(world, url, token=token, k=k, bucket_s=bucket_s)
    else:
        driver = InProcessDriver(world, _policy(policy, world), k=k, bucket_s=bucket_s)
    start = world.now

    def show(b: Bucket) -> None:
        if not as_json:
            typer.echo(f"{(b.start - start) / 60:7.1f} min  requests {b.requests:6d}  clicks {b.clicks:6d}  "
                       f"CTR {b.ctr:6.2%}  expected {b.expected_ctr:6.2%}  oracle {b.oracle_ctr:6.2%}")  # fmt: skip

    try:
        report = driver.run(minutes, on_bucket=show)
    finally:
        driver.close()
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        t = report.total()
        typer.echo(f"total: {t.requests} requests, CTR {t.ctr:.2%} (oracle {t.oracle_ctr:.2%})")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``streamrec sim ...``."""
    app.add_typer(sim_app, name="sim")
