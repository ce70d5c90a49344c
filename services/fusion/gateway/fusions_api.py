"""`GET /v1/fusions/{request_id}`: a recorded result, for a client whose connection or gateway died
before its answer came. The activity recorder (`fusion serve activity`) writes the database; the
gateway only reads it. With named keys, a caller sees only the requests made with its own key."""

import asyncio
from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from fusion.activity.store import ActivityStore
from fusion.gateway.errors import GatewayError
from fusion.gateway.keys import key_name
from fusion.settings import Settings

T = TypeVar("T")


class Activity:
    """The activity database, opened on first use (a gateway without one still serves the API)."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.activity_database_url()
        self._store: ActivityStore | None = None

    @property
    def store(self) -> ActivityStore:
        if self._store is None:
            self._store = ActivityStore(self._url)
        return self._store

    async def read(self, query: Callable[[ActivityStore], T]) -> T:
        """`query(store)` in a thread; a 503 when the database cannot answer."""
        try:
            return await asyncio.to_thread(lambda: query(self.store))
        except SQLAlchemyError as error:
            raise GatewayError(
                503,
                "the activity database cannot be read (is `fusion serve activity` running, and "
                f"FUSION_DATABASE_URL the same for both?): {type(error).__name__}",
                "api_error",
                "activity_unavailable",
            ) from None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def fusions_routes(activity: Activity) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/fusions/{request_id}", response_model=None)
    async def fusion(request_id: str) -> JSONResponse:
        row = await activity.read(lambda store: store.fusion(request_id[:128]))
        if row is None or (key_name.get() is not None and row.key_name != key_name.get()):
            raise GatewayError(
                404,
                f"no fusion {request_id!r} is recorded (unknown, made with another key, or past the"
                " activity's retention)",
                "not_found_error",
                "fusion_not_found",
            )
        if row.result is None:
            body = {"object": "fusion", "request_id": row.request_id, "status": "pending"}
            return JSONResponse(body, status_code=202)
        return JSONResponse(row.result)

    return router
