"""The HTTP driver: the same traffic loop as :class:`~streamrec.sim.InProcessDriver`, over the serving API.

It speaks what ``streamrec serve`` answers: ``GET /v1/recommendations?user_id=&k=`` returning
``{"request_id", "items": [{"item", "score", "source"}]}``, and ``POST /v1/events`` with
``{"events": [ActionEvent as JSON]}`` once per step. The server's request id is copied into the
events, so the server's joiner can join its impressions with them. ``httpx`` is imported only
when the driver is built, so ``streamrec.sim`` works without it. The simulated request time is
not sent (the API has no such parameter): the server ranks at its own clock, while event times are
simulated.
"""

from __future__ import annotations

from typing import Any

import msgspec

from streamrec.errors import InvalidInputError
from streamrec.records import ActionEvent
from streamrec.sim.driver import Driver
from streamrec.sim.protocol import Slate, as_slate
from streamrec.sim.world import World

__all__ = ["HttpDriver"]


class HttpDriver(Driver):
    """Drive a recommender through its HTTP API (options as for :class:`~streamrec.sim.driver.Driver`).

    Parameters
    ----------
    world
        The simulated users and items.
    base_url
        Where the API listens, e.g. ``"http://127.0.0.1:8000"``.
    token
        Bearer token sent with every request, if the server wants one.
    timeout_s
        Timeout of each HTTP call.

    Use it as a context manager (or call :meth:`close`) to close the connection pool.
    """

    def __init__(
        self, world: World, base_url: str, token: str | None = None, *, timeout_s: float = 10.0, **options: Any
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise InvalidInputError("base_url", base_url, "must be an http:// or https:// URL")
        super().__init__(world, **options)
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self.events_posted = 0

    def serve(self, user: str, k: int, now: float) -> Slate:
        response = self._client.get("/v1/recommendations", params={"user_id": user, "k": k})
        response.raise_for_status()
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise InvalidInputError("response", body, "GET /v1/recommendations must return {request_id, items}")
        slate = as_slate(body["items"])
        return Slate(slate.items, request_id=body.get("request_id"))

    def deliver(self, events: list[ActionEvent]) -> None:
        payload = msgspec.json.encode({"events": events})
        response = self._client.post("/v1/events", content=payload, headers={"Content-Type": "application/json"})
        response.raise_for_status()
        self.events_posted += len(events)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
