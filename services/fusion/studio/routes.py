"""`studio_routes`: everything under `/studio`, for the gateway to include.

| route                                  | what                                              |
|----------------------------------------|---------------------------------------------------|
| GET/POST /studio/login, /studio/logout | sign in with a key (a session cookie), sign out   |
| GET /studio                            | the chat room                                     |
| GET /studio/activity[/{request_id}]    | the activity: filters, totals, chart, list; detail |
| GET /studio/activity.csv               | one line per model call                           |
| POST /studio/api/render, /estimate     | Markdown to sanitized HTML; a request's cost      |
| GET /studio/api/activity[/{id}], costs | the activity as JSON                              |
| GET /studio/static/{name}              | studio.js, studio.css                             |
"""

from typing import TYPE_CHECKING

from fastapi import APIRouter, Response

from fusion.catalog import Catalog
from fusion.gateway.fusions_api import Activity
from fusion.gateway.keys import ApiKeys
from fusion.studio.api import api_routes
from fusion.studio.pages import page_routes
from fusion.studio.responses import PageRoute, redirect
from fusion.studio.session import Sessions
from fusion.studio.templating import STATIC_TYPES, page, static_file

if TYPE_CHECKING:
    from fusion.gateway.app import Gateway

__all__ = ["studio_routes"]

STATIC_CACHE = "public, max-age=86400"
"""Pages name the static files with a digest of their content (`?v=`), so a day's caching is safe."""


def studio_routes(gateway: "Gateway", keys: ApiKeys, activity: Activity, catalog: Catalog) -> APIRouter:
    sessions = Sessions(keys)
    router = APIRouter(route_class=PageRoute, include_in_schema=False)

    @router.get("/studio/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC_TYPES:
            return Response("not found", status_code=404, media_type="text/plain")
        headers = {"Cache-Control": STATIC_CACHE}
        return Response(static_file(name), media_type=STATIC_TYPES[name], headers=headers)

    router.include_router(page_routes(sessions, activity, catalog, gateway))
    router.include_router(api_routes(sessions, activity, catalog))

    @router.get("/studio/{rest:path}")
    async def unknown(rest: str) -> Response:
        """Any other Studio address: a page of its own, with the Studio's headers."""
        if not rest:  # `/studio/`: this route would otherwise take it from FastAPI's slash redirect
            return redirect("/studio")
        return page("not_found.html", status=404, viewer=None, active=None, request_id=None)

    return router
