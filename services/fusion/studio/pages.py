"""The Studio's pages: sign-in, the chat room, the activity list and one request's detail. Thin: read
the activity store (in a thread, through `Activity`), shape with `views` and `charts`, render."""

from typing import TYPE_CHECKING, Annotated, Any, get_args
from urllib.parse import parse_qs

import structlog
from fastapi import APIRouter, Depends, Request, Response
from fusion_contracts import Strategy
from fusion_contracts.limits import DEFAULT_DEADLINE_S, MAX_DEADLINE_S, MAX_PANEL_MEMBERS
from markupsafe import Markup

from fusion.activity.store import Facets
from fusion.catalog import Catalog
from fusion.gateway.fusions_api import Activity
from fusion.studio.charts import cost_series, cost_svg
from fusion.studio.filters import parse_query
from fusion.studio.responses import PageRoute, redirect
from fusion.studio.session import Sessions, Viewer
from fusion.studio.templating import page
from fusion.studio.views import detail_of, summary_of

if TYPE_CHECKING:
    from fusion.gateway.app import Gateway

__all__ = ["page_routes"]

log = structlog.get_logger(__name__)

MAX_FORM_BYTES = 8_192
WRONG_KEY = "That is not one of this gateway's API keys."


def _menus(facets: Facets, values: dict[str, str]) -> dict[str, list[str]]:
    """The filter menus' choices; a value typed into the URL is kept even when no row has it."""
    menus = {"preset": facets.presets, "model": facets.models, "status": facets.statuses, "key": facets.keys}
    return {
        name: sorted({*choices, *([values[name]] if name in values else [])})
        for name, choices in menus.items()
    }


def page_routes(sessions: Sessions, activity: Activity, catalog: Catalog, gateway: "Gateway") -> APIRouter:
    router = APIRouter(route_class=PageRoute, include_in_schema=False)
    SignedIn = Annotated[Viewer, Depends(sessions.page_viewer)]

    @router.get("/studio/login")
    async def login_form(request: Request) -> Response:
        if sessions.from_cookie(request) is not None:
            return redirect("/studio")
        return page("login.html", viewer=None, error=None)

    @router.post("/studio/login")
    async def login(request: Request) -> Response:
        if not sessions.required:
            return redirect("/studio")
        body = await request.body()
        form = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace"), max_num_fields=8)
        key = (form.get("key") or [""])[0].strip()
        name = sessions.keys.name_of(key) if key else None
        if name is None:
            log.warning("studio sign-in refused: wrong key")  # never the key itself
            return page("login.html", status=401, viewer=None, error=WRONG_KEY)
        response = redirect("/studio")
        sessions.sign_in(response, request, name)
        log.info("studio sign-in", key_name=name)
        return response

    @router.api_route("/studio/logout", methods=["GET", "POST"])
    async def logout(request: Request) -> Response:
        response = redirect("/studio/login" if sessions.required else "/studio")
        sessions.sign_out(response, request)
        return response

    @router.get("/studio")
    async def chat(viewer: SignedIn) -> Response:
        presets = sorted(catalog.presets, key=lambda name: (name != catalog.default_preset, name))
        return page(
            "chat.html",
            viewer=viewer,
            active="chat",
            presets=[(name, catalog.presets[name]) for name in presets],
            default_preset=catalog.default_preset,
            models=sorted(catalog.models.items()),
            strategies=get_args(Strategy),
            max_members=MAX_PANEL_MEMBERS,
            default_deadline=DEFAULT_DEADLINE_S,
            max_deadline=MAX_DEADLINE_S,
            draining=gateway.draining,
        )

    @router.get("/studio/activity")
    async def activity_list(request: Request, viewer: SignedIn) -> Response:
        query = parse_query(request.query_params)
        facets: Facets = await activity.read(lambda store: store.facets())
        totals = await activity.read(lambda store: store.totals(query.where))
        rows = await activity.read(lambda store: store.fusions(query.where))
        series = cost_series(await activity.read(lambda store: store.costs_by_model(query.where)))
        where = query.where
        context: dict[str, Any] = {
            "viewer": viewer,
            "active": "activity",
            "query": query,
            "menus": _menus(facets, query.values),
            "totals": totals,
            "chart": Markup(cost_svg(series)),  # cost_svg escapes what it writes
            "series": series,
            "rows": [summary_of(row) for row in rows],
            "newer": query.link(offset=max(0, where.offset - where.limit) or None) if where.offset else None,
            "older": query.link(offset=where.offset + where.limit) if len(rows) == where.limit else None,
        }
        return page("activity.html", **context)

    @router.get("/studio/activity/{request_id}")
    async def activity_detail(request_id: str, viewer: SignedIn) -> Response:
        row = await activity.read(lambda store: store.fusion(request_id[:128]))
        if row is None:
            return page("not_found.html", status=404, viewer=viewer, active="activity", request_id=request_id)
        return page("detail.html", viewer=viewer, active="activity", detail=detail_of(row))

    return router
