"""The HTTP API of ``streamrec serve``: a FastAPI app over one :class:`Recommender`.

Routes (OpenAPI at ``/docs``): ``POST /v1/events``, ``GET /v1/recommendations``,
``POST /v1/features/query``, ``GET /healthz``, ``GET /metrics``, and for the dashboard at ``/``
(``dashboard.py``): ``GET /v1/stats``, ``GET /v1/dashboard/config``. See ``docs/serving.md`` and
``docs/dashboard.md``.

Why it is built this way:

* handlers are plain ``def``: recommend and record block on the profile store, the model and the
  log, so FastAPI runs them in its thread pool and the event loop stays free;
* ``POST /v1/events`` takes the batch as raw JSON and validates each event itself
  (``parse_many``), so one bad event gives a 422 that lists it by index and field while the valid
  events beside it are stored (a pydantic body model would reject the whole batch);
* the bearer token is checked in a middleware, so no route (``/docs`` and ``/metrics`` included)
  can forget it; only ``/healthz`` is open, for load balancers, and the dashboard's static page
  and script (``/``, ``/dashboard.js``), which hold no data: the page sends the token with its
  own requests. Tokens compare in constant time;
* every response is counted and timed per route template (``/v1/recommendations``, not one series
  per user id) in the app's own Prometheus registry.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from streamrec import __version__
from streamrec.errors import InvalidInputError, StreamrecError
from streamrec.profiles.types import FeatureQuery
from streamrec.records import parse_record
from streamrec.serving.dashboard import dashboard_config, static_text
from streamrec.serving.metrics import CONTENT_TYPE_LATEST
from streamrec.serving.recommender import Recommender

__all__ = ["create_app"]

_OPEN = frozenset({"/healthz", "/", "/dashboard.js"})  # the page and script hold no data


def _error(field: str, reason: str, value: Any = None, index: int | None = None) -> dict[str, Any]:
    loc: list[Any] = ["body"] if index is None else ["body", "events", index]
    loc.extend(p for p in field.replace("]", "").replace("[", ".").split(".") if p)
    out: dict[str, Any] = {"loc": loc, "field": field, "msg": reason, "type": "value_error"}
    if index is not None:
        out["index"] = index
    if value is not None:
        out["value"] = value if isinstance(value, str | int | float | bool) else repr(value)[:200]
    return out


def _invalid(exc: InvalidInputError, where: list[Any]) -> JSONResponse:
    detail: dict[str, Any] = {"loc": [*where, exc.field], "field": exc.field, "msg": exc.reason, "type": "value_error"}
    if exc.value is not None:
        detail["value"] = exc.value if isinstance(exc.value, str | int | float | bool) else repr(exc.value)[:200]
    return JSONResponse({"detail": [detail]}, status_code=422)


def create_app(recommender: Recommender, *, token: str | None = None) -> FastAPI:
    """The API app over ``recommender``; with ``token``, every route but ``/healthz`` needs it.

    Parameters
    ----------
    recommender
        Answers ``/v1/recommendations``, records ``/v1/events``; its ``profiles`` client answers
        ``/v1/features/query`` and its ``metrics`` are served at ``/metrics``.
    token
        Bearer token (``Authorization: Bearer <token>``); ``None`` leaves the API open.
    """
    app = FastAPI(
        title="streamrec",
        version=__version__,
        description="Real-time recommendations: events in, ranked items out. See docs/serving.md.",
    )
    metrics = recommender.metrics
    expected = f"Bearer {token}".encode() if token else None

    @app.middleware("http")
    async def _guard_and_measure(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        path = request.url.path
        if expected is not None and path not in _OPEN:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                response: Response = JSONResponse(
                    {"detail": "missing or wrong bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                metrics.requests.labels("unauthorized", request.method, "401").inc()
                return response
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", None) or "unmatched"
        metrics.requests.labels(name, request.method, str(response.status_code)).inc()
        metrics.request_seconds.labels(name).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(InvalidInputError)
    async def _on_invalid(request: Request, exc: InvalidInputError) -> JSONResponse:
        return _invalid(exc, ["query"] if request.method == "GET" else ["body"])

    @app.exception_handler(StreamrecError)
    async def _on_error(request: Request, exc: StreamrecError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.post("/v1/events", summary="Record a batch of user actions")
    def post_events(
        body: Any = Body(
            ...,
            examples=[
                {
                    "events": [
                        {
                            "user": "u42",
                            "item": "i7",
                            "action": "click",
                            "time": 1_700_000_000.0,
                            "attributes": {"category": "sci-fi"},
                            "request_id": "3f2a...",
                        }
                    ]
                }
            ],
        ),
    ) -> JSONResponse:
        """Store the valid events of the batch; 422 lists each bad one (index, field, reason).

        The valid events of a batch are stored even when others are rejected: ``accepted`` counts them.
        """
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            err = _error("events", "expected a JSON object {'events': [...]} with a list of events", None)
            return JSONResponse({"detail": [err], "accepted": 0, "rejected": [err]}, status_code=422)
        result = recommender.record(body["events"])
        rejected = [_error(e.field, e.reason, e.value, index=i) for i, e in result.rejected]
        content: dict[str, Any] = {"accepted": result.accepted, "rejected": rejected}
        if rejected:
            content["detail"] = rejected
            return JSONResponse(content, status_code=422)
        return JSONResponse(content)

    @app.get("/v1/recommendations", summary="Recommend items to a user")
    def get_recommendations(
        user_id: str = Query(..., min_length=1, description="Raw id of the user."),
        k: int = Query(10, ge=1, le=recommender.config.max_k, description="How many items."),
        now: float | None = Query(None, description="Request clock (epoch seconds); default: now."),
    ) -> dict[str, Any]:
        """The top ``k`` items with score and the retrieval source of each; impressions are logged."""
        rec = recommender.recommend(user_id, k, now)
        return {
            "request_id": rec.request_id,
            "items": [{"item": i, "score": s, "source": src} for i, s, src in rec.items],
            "candidates": rec.n_candidates,
            "timings_ms": {stage: round(1000 * sec, 3) for stage, sec in rec.timings.items()},
        }

    @app.post("/v1/features/query", summary="Query profile features")
    def post_features_query(
        body: Any = Body(
            ...,
            examples=[
                {
                    "entities": ["user:u42"],
                    "features": [{"slot": "clicked_category", "window": "7d", "counters": ["click"], "top_k": 5}],
                }
            ],
        ),
    ) -> dict[str, Any]:
        """A :class:`FeatureQuery` as JSON; answers per entity ``{feature name: number or table}``."""
        query = parse_record(body, FeatureQuery) if isinstance(body, dict) else None
        if query is None:
            raise InvalidInputError("body", body, "expected a JSON object with `features` and `entities`")
        if query.keys:
            raise InvalidInputError("keys", "...", "the HTTP API takes `entities` labels, not hashed keys")
        result = recommender.profiles.query(query)
        return {
            "names": result.names,
            "columns": result.columns,
            "entities": query.entities,
            "results": result.to_dicts(),
            "now": result.now,
        }

    @app.get("/healthz", summary="Liveness and model version (no token needed)")
    def healthz() -> dict[str, Any]:
        model = recommender.model
        error = getattr(model, "error", None)
        return {
            "status": "ok" if error is None else "degraded",
            "model_version": getattr(model, "version", None),
            "model_error": None if error is None else str(error),
        }

    @app.get("/metrics", summary="Prometheus metrics")
    def get_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    live = recommender.live

    @app.get("/v1/stats", summary="Live stats: per-second series of the dashboard's charts")
    def get_stats(
        seconds: float = Query(300.0, gt=0, le=live.n_buckets * live.bucket_s, description="How far back."),
    ) -> dict[str, Any]:
        """The closed buckets of the last ``seconds``, oldest first, as columns of ``series``.

        ``series``: ``t`` (bucket start, epoch s), ``requests``, ``qps``, ``events``, ``impressions``,
        ``clicks`` (impressions served in the bucket that got a positive action with their request
        id within ``click_window_s``), ``ctr``, ``ctr_smooth`` (trailing 10 buckets), ``auc``
        (rolling online AUC of the last ``auc_last_n`` finalized impressions), ``auc_n``,
        ``p50_ms``, ``p99_ms`` (recommend latency in process), ``sync_lag_s`` (largest lag of the
        model updates applied in the bucket), ``updates``, ``table_rows``, ``admitted``,
        ``evicted``; ``null`` where a bucket has no value. Also ``totals``, ``auc`` and ``model``
        (version, rows per slot, cumulative admitted/evicted). See ``docs/dashboard.md``.
        """
        return live.snapshot(seconds)

    @app.get("/v1/dashboard/config", summary="What the dashboard page needs: windows, slots by entity, limits")
    def get_dashboard_config() -> dict[str, Any]:
        """The feature plan's windows, the profile slots by entity type (for the profile explorer),
        ``max_k``, the stats bucket and click window, and whether a token is required."""
        return dashboard_config(recommender, token_required=expected is not None)

    @app.get("/", include_in_schema=False)
    def get_dashboard() -> HTMLResponse:
        return HTMLResponse(static_text("dashboard.html"), headers={"Cache-Control": "no-cache"})

    @app.get("/dashboard.js", include_in_schema=False)
    def get_dashboard_js() -> Response:
        return Response(
            static_text("dashboard.js"), media_type="text/javascript", headers={"Cache-Control": "no-cache"}
        )

    return app
