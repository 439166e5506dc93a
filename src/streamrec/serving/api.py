"""The HTTP API of ``streamrec serve``: a FastAPI app over one :class:`Recommender`.

Routes (OpenAPI at ``/docs``): ``POST /v1/events``, ``GET /v1/recommendations``,
``POST /v1/features/query``, ``GET /healthz``, ``GET /metrics``, and for the dashboard at ``/``
(``dashboard.py``): ``GET /v1/stats``, ``GET /v1/dashboard/config``. See ``docs/serving.md`` and
``docs/dashboard.md``.

Why it is built this way:

* work never runs on the event loop: ``/v1/recommendations`` and ``/v1/features/query`` each run
  in a *compute lane* of ``compute_threads`` threads (default 1; one lane per route and per event
  loop), the other handlers are plain ``def`` in FastAPI's thread pool. Why one thread: a request
  is Python from the socket to the top k, so threads of one process share one core through the
  GIL; with FastAPI's 40 threads, eight concurrent requests ran as eight threads trading the GIL
  and the item cache's lock, and one process answered 87 requests/s where one thread in process
  answers 130 (``bench serving``). In the lane they queue on the event loop and run one after
  another at the in-process speed; more cores means more processes (``serve --workers N``), not
  more threads;
* ``POST /v1/events`` takes the batch as raw JSON and validates each event itself
  (``parse_many``), so one bad event gives a 422 that lists it by index and field while the valid
  events beside it are stored (a pydantic body model would reject the whole batch);
* the bearer token is checked in a middleware (plain ASGI: Starlette's ``BaseHTTPMiddleware``
  adds a task and a stream per request), so no route (``/docs`` and ``/metrics`` included)
  can forget it; only ``/healthz`` is open, for load balancers, and the dashboard's static page
  and script (``/``, ``/dashboard.js``), which hold no data: the page sends the token with its
  own requests. Tokens compare in constant time;
* every response is counted and timed per route template (``/v1/recommendations``, not one series
  per user id) in the app's own Prometheus registry;
* what a request may cost is bounded by ``[serving.limits]`` (``limits.py``): the body size is
  checked against ``Content-Length`` before a byte is read and counted while it streams in (413,
  in :class:`_BodyLimit`, an ASGI wrapper: it sees the body before FastAPI buffers it), the
  counts before any work (422), the feature answer's size once encoded (422);
* untrusted values that Python's JSON reader lets through (``NaN``, ``1e300`` as a time, lone
  surrogates such as ``"\ud800"``) are refused where they enter, naming the field; error bodies
  echo values through :func:`~streamrec.serving.limits.json_safe`, so no 422 becomes a 500 while
  it is being written;
* a backend that fails answers 503 with what was stored: nothing (resend), or, for a batch in the
  log whose profile write failed, ``"resend": false`` (``docs/serving.md``).
"""

from __future__ import annotations

import hmac
import math
import os
import time
from functools import partial
from typing import Any

import anyio.to_thread
import msgspec
from anyio.lowlevel import RunVar
from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamrec import __version__
from streamrec.config import parse_duration
from streamrec.errors import ConfigError, InvalidInputError, LogError, StreamrecError
from streamrec.profiles.types import FeatureQuery
from streamrec.records import parse_record
from streamrec.serving.dashboard import dashboard_config, static_text
from streamrec.serving.limits import ServingLimits, check_epoch, check_seconds, find_unencodable, json_safe
from streamrec.serving.metrics import CONTENT_TYPE_LATEST
from streamrec.serving.openapi import BODIES, document_bodies
from streamrec.serving.recommender import ProfilesBehindError, ProfilesUnavailableError, Recommender

__all__ = ["create_app"]

_OPEN = frozenset({"/healthz", "/", "/dashboard.js"})  # the page and script hold no data


def _value(value: Any) -> Any:
    """An offending value as an error body shows it: itself when JSON can carry it, else its text."""
    return json_safe(value if isinstance(value, str | int | float | bool) else repr(value)[:200])


def _error(field: str, reason: str, value: Any = None, index: int | None = None) -> dict[str, Any]:
    field, reason = json_safe(field), json_safe(reason)
    loc: list[Any] = ["body"] if index is None else ["body", "events", index]
    loc.extend(p for p in field.replace("]", "").replace("[", ".").split(".") if p)
    out: dict[str, Any] = {"loc": loc, "field": field, "msg": reason, "type": "value_error"}
    if index is not None:
        out["index"] = index
    if value is not None:
        out["value"] = _value(value)
    return out


def _invalid(exc: InvalidInputError, where: list[Any]) -> JSONResponse:
    field = json_safe(exc.field)
    detail: dict[str, Any] = {
        "loc": [*where, field],
        "field": field,
        "msg": json_safe(exc.reason),
        "type": "value_error",
    }
    if exc.value is not None:
        detail["value"] = _value(exc.value)
    return JSONResponse({"detail": [detail]}, status_code=422)


class _BodyTooLarge(HTTPException):
    """Raised from the body stream once it passes the limit; FastAPI renders it as the 413."""


class _BodyLimit:
    """ASGI wrapper that refuses bodies over ``limit`` bytes with 413 without reading them whole.

    A ``Content-Length`` over the limit is answered before a byte of the body is read; a body
    without one (chunked) is counted as it streams in and cut at the first chunk past the limit.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _message(self, size: str) -> str:
        return f"request body {size} is over the limit serving.limits.max_body_bytes = {self.limit}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            response = JSONResponse({"detail": self._message(f"of {int(length)} bytes")}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge(413, self._message(f"of more than {self.limit} bytes (still arriving)"))
            return message

        await self.app(scope, counted, send)


class _Guard:
    """ASGI wrapper: the bearer token (401 before any route runs), then each response counted and
    timed per route template (the router records the matched route in the request's scope)."""

    def __init__(self, app: ASGIApp, metrics: Any, expected: bytes | None) -> None:
        self.app, self.metrics, self.expected = app, metrics, expected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method = scope["method"]
        if self.expected is not None and scope["path"] not in _OPEN:
            given = next((v for k, v in scope.get("headers") or () if k == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse(
                    {"detail": "missing or wrong bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                self.metrics.requests.labels("unauthorized", method, "401").inc()
                await response(scope, receive, send)
                return
        status = [500]

        async def sent(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            name = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(name, method, str(status[0])).inc()
            self.metrics.request_seconds.labels(name).observe(time.perf_counter() - start)


def _check_query(query: FeatureQuery, limits: ServingLimits) -> None:
    """Counts within ``limits``, times and windows that are times and windows, or a 422 naming them."""
    n_entities, n_features = len(query.entities), len(query.features)
    if n_entities > limits.max_entities:
        raise limits.refuse("entities", "max_entities", n_entities)
    if n_features > limits.max_features:
        raise limits.refuse("features", "max_features", n_features)
    if n_entities * n_features > limits.max_query_cells:
        raise limits.refuse("entities x features", "max_query_cells", n_entities * n_features)
    if query.now is not None:
        check_epoch("now", query.now)
    for i, feature in enumerate(query.features):
        if feature.since is not None:
            check_epoch(f"features[{i}].since", feature.since)
        else:
            field = f"features[{i}].window"
            try:
                seconds = parse_duration(feature.window, field)
            except ConfigError:
                raise InvalidInputError(
                    field, feature.window, "expected a duration such as '5m', '1h', '7d' or seconds"
                ) from None
            check_seconds(field, seconds, feature.window)
        for name in ("alpha", "beta"):
            x = getattr(feature, name)
            if not math.isfinite(x):
                raise InvalidInputError(f"features[{i}].{name}", x, "must be a finite number")


def create_app(
    recommender: Recommender, *, token: str | None = None, worker: int | None = None, compute_threads: int = 1
) -> FastAPI:
    """The API app over ``recommender``; with ``token``, every route but ``/healthz`` needs it.

    Parameters
    ----------
    recommender
        Answers ``/v1/recommendations``, records ``/v1/events``; its ``profiles`` client answers
        ``/v1/features/query`` and its ``metrics`` are served at ``/metrics``.
    token
        Bearer token (``Authorization: Bearer <token>``); ``None`` leaves the API open.
    worker
        This process's index among ``streamrec serve --workers N`` (shown by ``/healthz`` with the pid).
    compute_threads
        Threads of each compute lane, the recommendations' and the feature queries' (module docstring).
    """
    if isinstance(compute_threads, bool) or not isinstance(compute_threads, int) or not 1 <= compute_threads <= 64:
        raise ConfigError("compute_threads", f"{compute_threads!r}: expected an integer from 1 to 64")
    # One lane per event loop (a limiter belongs to the loop it was made in; a TestClient or a
    # second server in this process runs another loop), and feature queries in a lane of their
    # own, so a large one does not hold up recommendations.
    lanes = {name: RunVar[anyio.CapacityLimiter](f"streamrec-{name}-lane") for name in ("recommend", "query")}

    async def in_lane(name: str, fn: Any, *args: Any) -> Any:
        try:
            limiter = lanes[name].get()
        except LookupError:
            limiter = anyio.CapacityLimiter(compute_threads)
            lanes[name].set(limiter)
        return await anyio.to_thread.run_sync(partial(fn, *args), limiter=limiter)

    app = FastAPI(
        title="streamrec",
        version=__version__,
        description="Real-time recommendations: events in, ranked items out. See docs/serving.md.",
    )
    document_bodies(app)  # the msgspec schemas of the raw-JSON bodies below (serving/openapi.py)
    metrics = recommender.metrics
    limits = recommender.config.limits
    expected = f"Bearer {token}".encode() if token else None
    app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)  # inside the guard: counted in metrics
    app.add_middleware(_Guard, metrics=metrics, expected=expected)

    @app.exception_handler(InvalidInputError)
    async def _on_invalid(request: Request, exc: InvalidInputError) -> JSONResponse:
        return _invalid(exc, ["query"] if request.method == "GET" else ["body"])

    @app.exception_handler(RequestValidationError)
    async def _on_request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each input raw; a NaN or a lone surrogate made it a 500.
        return JSONResponse({"detail": json_safe(list(exc.errors()))}, status_code=422)

    @app.exception_handler(LogError)
    async def _on_log_error(request: Request, exc: LogError) -> JSONResponse:
        detail = f"the event log failed, nothing of the request was stored; resend it later ({exc})"
        return JSONResponse({"detail": json_safe(detail), "resend": True}, status_code=503)

    @app.exception_handler(ProfilesBehindError)
    async def _on_profiles_behind(request: Request, exc: ProfilesBehindError) -> JSONResponse:
        content: dict[str, Any] = {"detail": json_safe(str(exc)), "logged": exc.logged, "resend": False}
        if exc.result is not None:
            content["accepted"] = exc.result.accepted
            content["rejected"] = [_error(e.field, e.reason, e.value, index=i) for i, e in exc.result.rejected]
        return JSONResponse(content, status_code=503)

    @app.exception_handler(ProfilesUnavailableError)
    async def _on_profiles_unavailable(request: Request, exc: ProfilesUnavailableError) -> JSONResponse:
        content = {"detail": json_safe(str(exc)), "logged": 0, "resend": True}
        return JSONResponse(content, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(StreamrecError)
    async def _on_error(request: Request, exc: StreamrecError) -> JSONResponse:
        return JSONResponse({"detail": json_safe(str(exc))}, status_code=400)

    @app.post("/v1/events", summary="Record a batch of user actions", openapi_extra=BODIES["/v1/events"])
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
        events = body["events"]
        if len(events) > limits.max_events:
            exc = limits.refuse("events", "max_events", len(events))
            err = _error(exc.field, exc.reason, exc.value)
            return JSONResponse({"detail": [err], "accepted": 0, "rejected": [err]}, status_code=422)
        result = recommender.record(events)
        rejected = [_error(e.field, e.reason, e.value, index=i) for i, e in result.rejected]
        content: dict[str, Any] = {"accepted": result.accepted, "rejected": rejected}
        if rejected:
            content["detail"] = rejected
            return JSONResponse(content, status_code=422)
        return JSONResponse(content)

    @app.get("/v1/recommendations", summary="Recommend items to a user", openapi_extra=BODIES["/v1/recommendations"])
    async def get_recommendations(
        user_id: str = Query(..., min_length=1, description="Raw id of the user."),
        k: int = Query(10, ge=1, le=recommender.config.max_k, description="How many items."),
        now: float | None = Query(None, description="Request clock (epoch seconds); default: now."),
    ) -> Response:
        """The top ``k`` items with score and the retrieval source of each; impressions are logged.

        ``{"request_id", "items": [{"item", "score", "source"}], "candidates", "timings_ms"}``.
        """
        pending = await in_lane("recommend", recommender.begin, user_id, k, now)
        # The wait for the log's append runs outside the lane: the lane computes the next request.
        # Shielded: a cancelled request still appends what it queued, and records its metrics.
        with anyio.CancelScope(shield=True):
            rec = await anyio.to_thread.run_sync(pending.finish)
        body = {
            "request_id": rec.request_id,
            "items": [{"item": i, "score": s, "source": src} for i, s, src in rec.items],
            "candidates": rec.n_candidates,
            "timings_ms": {stage: round(1000 * sec, 3) for stage, sec in rec.timings.items()},
        }
        return Response(msgspec.json.encode(body), media_type="application/json")

    @app.post("/v1/features/query", summary="Query profile features", openapi_extra=BODIES["/v1/features/query"])
    async def post_features_query(
        body: Any = Body(
            ...,
            examples=[
                {
                    "entities": ["user:u42"],
                    "features": [{"slot": "clicked_category", "window": "7d", "counters": ["click"], "top_k": 5}],
                }
            ],
        ),
    ) -> Response:
        """A :class:`FeatureQuery` as JSON; answers per entity ``{feature name: number or table}``.

        Within ``[serving.limits]``: ``max_entities``, ``max_features``, ``max_query_cells``
        (entities x features) and ``max_response_bytes`` (the encoded answer); 422 naming the limit.
        A number without a value (an empty window of a ``max``/``min`` counter) is ``null``.
        """
        return await in_lane("query", _features_query, body)

    def _features_query(body: Any) -> Response:
        if not isinstance(body, dict):
            raise InvalidInputError("body", body, "expected a JSON object with `features` and `entities`")
        bad = find_unencodable(body)
        if bad is not None:
            raise InvalidInputError(bad[0] or "body", bad[1], "is not valid UTF-8 text (it holds a lone surrogate)")
        query = parse_record(body, FeatureQuery)
        if query.keys:
            raise InvalidInputError("keys", "...", "the HTTP API takes `entities` labels, not hashed keys")
        _check_query(query, limits)
        result = recommender.profiles.query(query)
        answer = {
            "names": result.names,
            "columns": result.columns,
            "entities": query.entities,
            "results": result.to_dicts(),
            "now": result.now,
        }
        encoded = msgspec.json.encode(answer)  # NaN and infinities as null, where JSONResponse raised
        if len(encoded) > limits.max_response_bytes:
            raise limits.refuse("answer bytes", "max_response_bytes", len(encoded))
        return Response(encoded, media_type="application/json")

    @app.get("/healthz", summary="Liveness and model version (no token needed)")
    def healthz() -> dict[str, Any]:
        model = recommender.model
        error = getattr(model, "error", None)
        pending = recommender.profiles_pending  # logged events the profile store has not taken yet
        return {
            "status": "ok" if error is None and not pending else "degraded",
            "model_version": getattr(model, "version", None),
            "model_error": None if error is None else str(error),
            "profiles_pending": pending,
            "worker": worker,
            "pid": os.getpid(),
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
