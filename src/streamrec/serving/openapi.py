"""Request and response bodies of ``POST /v1/events``, ``POST /v1/features/query`` and the answer of
``GET /v1/recommendations`` in the OpenAPI schema.

The handlers read their bodies as raw JSON and validate them with msgspec (``api.py`` says why), so
FastAPI sees ``Any`` and documents nothing. The schemas here are generated from the msgspec types:
the request bodies from the records the handlers decode (:class:`~streamrec.records.ActionEvent`,
:class:`~streamrec.profiles.types.FeatureQuery`), the answers from the structs below, which the
tests decode real answers with (``forbid_unknown_fields``: a field added to or gone from an answer
fails them). :func:`document_bodies` adds the components to the app's schema; ``BODIES`` is the
``openapi_extra`` of each route.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import FastAPI

from streamrec.profiles.types import FeatureQuery
from streamrec.records import ActionEvent

__all__ = [
    "BODIES",
    "EventsAnswer",
    "EventsBody",
    "FeaturesAnswer",
    "RecommendationsAnswer",
    "RecommendedItem",
    "RejectedEvent",
    "document_bodies",
]


class EventsBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/events``: a batch of user actions."""

    events: list[ActionEvent]


class RejectedEvent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One refused event (or the whole body): where, which field, why, and the value (if any)."""

    loc: list[str | int]
    field: str
    msg: str
    type: str
    index: int | None = None
    value: Any = None


class EventsAnswer(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What was stored: ``accepted`` events; ``rejected`` (and, on a 422, the same list as ``detail``)."""

    accepted: int
    rejected: list[RejectedEvent]
    detail: list[RejectedEvent] | None = None


_Cell = float | dict[str, float | None] | None  # a value's number, or its columns (top-k tables)


class FeaturesAnswer(msgspec.Struct, forbid_unknown_fields=True):
    """Per entity (in ``entities`` order), ``{feature name: number}`` for a one-number feature, else a
    table ``{value or column: number or {column: number}}``; ``null`` for a number without a value."""

    names: list[str]
    columns: list[list[str]]
    entities: list[str]
    results: list[dict[str, float | dict[str, _Cell] | None]]
    now: float


class RecommendedItem(msgspec.Struct, forbid_unknown_fields=True):
    """One recommended item: its raw id, the corrected probability (``null`` if the model returned
    NaN or infinity) and the retrieval source that proposed it."""

    item: str
    score: float | None
    source: str


class RecommendationsAnswer(msgspec.Struct, forbid_unknown_fields=True):
    """``GET /v1/recommendations``: the top ``k``, best first; ``candidates`` ranked; per-stage
    milliseconds (``retrieve``, ``features``, ``rank``, ``log``)."""

    request_id: str
    items: list[RecommendedItem]
    candidates: int
    timings_ms: dict[str, float]


_TYPES = (EventsBody, FeatureQuery, EventsAnswer, FeaturesAnswer, RecommendationsAnswer)
_REF = "#/components/schemas/{name}"
_schemas, COMPONENTS = msgspec.json.schema_components(_TYPES, ref_template=_REF)
_EVENTS, _QUERY, _EVENTS_ANSWER, _FEATURES_ANSWER, _RECOMMENDATIONS = _schemas


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


BODIES: dict[str, dict[str, Any]] = {
    "/v1/events": {
        "requestBody": _json(_EVENTS),
        "responses": {
            "200": {"description": "Every event stored", **_json(_EVENTS_ANSWER)},
            "422": {
                "description": "The bad events, by index and field; the others are stored",
                **_json(_EVENTS_ANSWER),
            },
        },
    },
    "/v1/features/query": {
        "requestBody": _json(_QUERY),
        "responses": {"200": {"description": "The features of each entity", **_json(_FEATURES_ANSWER)}},
    },
    "/v1/recommendations": {
        "responses": {"200": {"description": "The top k items, best first", **_json(_RECOMMENDATIONS)}},
    },
}


def document_bodies(app: FastAPI) -> None:
    """Put the bodies' component schemas into ``app``'s OpenAPI document (built once, on first request)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(COMPONENTS)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
