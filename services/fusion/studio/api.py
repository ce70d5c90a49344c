"""The Studio's JSON and CSV: Markdown rendering and cost estimates for the chat room's script, and
the activity for scripts and spreadsheets. Same sign-in as the pages (the session cookie), or a
bearer key."""

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fusion_contracts import ReplyTo
from pydantic import BaseModel, ConfigDict, Field

from fusion.activity.store import ActivityStore, Totals
from fusion.activity.tables import Fusion
from fusion.catalog import Catalog, CatalogError
from fusion.gateway import translate
from fusion.gateway.errors import GatewayError
from fusion.gateway.fusions_api import Activity
from fusion.gateway.openai_types import ChatCompletionRequest
from fusion.studio.charts import cost_series
from fusion.studio.estimate import estimate_request
from fusion.studio.filters import Query, parse_query
from fusion.studio.render import MAX_MARKDOWN_CHARS, markdown_html
from fusion.studio.responses import ApiRoute
from fusion.studio.session import Sessions, Viewer
from fusion.studio.views import costs_json, csv_text, detail_of, summary_of, totals_json

__all__ = ["api_routes"]

CSV_PAGE = 500
CSV_MAX_REQUESTS = 100_000
"""A CSV export stops here (its `X-Fusion-Truncated` header says so); narrow the dates for more."""
ESTIMATE_REPLY_TO = ReplyTo(topic="studio.estimate")
"""An estimate builds the request the gateway would publish, without publishing it."""


class RenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    markdown: str = Field(max_length=MAX_MARKDOWN_CHARS)


def not_found(request_id: str) -> GatewayError:
    return GatewayError(
        404,
        f"no fusion {request_id!r} is recorded (unknown, or past the activity's retention)",
        "not_found_error",
        "fusion_not_found",
    )


async def all_rows(activity: Activity, query: Query) -> tuple[list[Fusion], bool]:
    """Every request that matches, page by page; True when there were more than the export takes."""
    rows: list[Fusion] = []
    while len(rows) < CSV_MAX_REQUESTS:
        page = await activity.read(
            partial(ActivityStore.fusions, where=query.paged(CSV_PAGE, len(rows)).where)
        )
        rows += page
        if len(page) < CSV_PAGE:
            return rows, False
    return rows[:CSV_MAX_REQUESTS], True


def api_routes(sessions: Sessions, activity: Activity, catalog: Catalog) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, include_in_schema=False)
    Caller = Annotated[Viewer, Depends(sessions.api_viewer)]

    @router.post("/studio/api/render")
    async def render(body: RenderIn, _: Caller) -> JSONResponse:
        return JSONResponse({"html": markdown_html(body.markdown)})

    @router.post("/studio/api/estimate")
    async def estimate(body: ChatCompletionRequest, _: Caller) -> JSONResponse:
        """The body the chat room will send to /v1/chat/completions, read as the gateway reads it."""
        if not translate.is_fusion_model(body.model):
            raise GatewayError.invalid(
                "the Studio estimates fused requests: model fusion[/<preset>]", "model"
            )
        request = translate.to_fusion_request(body, catalog, "estimate", ESTIMATE_REPLY_TO, stream=False)
        try:
            found = estimate_request(request, catalog)
        except CatalogError as error:
            raise GatewayError.invalid(str(error), "fusion") from error
        parts = [
            {
                "role": part.role,
                "model": part.model,
                "input_tokens": part.input_tokens,
                "output_tokens": part.output_tokens,
                "usd": format(part.usd, "f"),
            }
            for part in found.parts
        ]
        usd = format(found.usd, "f")
        return JSONResponse(
            {"usd": usd, "basis": found.basis, "prompt_tokens": found.prompt_tokens, "parts": parts}
        )

    @router.get("/studio/api/activity")
    async def activity_json(request: Request, _: Caller) -> JSONResponse:
        query = parse_query(request.query_params)
        rows: list[Fusion] = await activity.read(lambda store: store.fusions(query.where))
        totals: Totals = await activity.read(lambda store: store.totals(query.where))
        body: dict[str, Any] = {
            "filter": query.values,
            "limit": query.where.limit,
            "offset": query.where.offset,
            "totals": totals_json(totals),
            "requests": [summary_of(row).as_json() for row in rows],
        }
        return JSONResponse(body)

    @router.get("/studio/api/activity/{request_id}")
    async def activity_one(request_id: str, _: Caller) -> JSONResponse:
        row: Fusion | None = await activity.read(lambda store: store.fusion(request_id[:128]))
        if row is None:
            raise not_found(request_id)
        return JSONResponse(detail_of(row).as_json())

    @router.get("/studio/api/costs")
    async def costs(request: Request, _: Caller) -> JSONResponse:
        query = parse_query(request.query_params)
        series = cost_series(await activity.read(lambda store: store.costs_by_model(query.where)))
        return JSONResponse({"filter": query.values, **costs_json(series)})

    @router.get("/studio/activity.csv")
    async def activity_csv(request: Request, _: Caller) -> Response:
        query = parse_query(request.query_params)
        rows, cut = await all_rows(activity, query)
        text = csv_text(rows)
        headers = {"Content-Disposition": 'attachment; filename="fusion-activity.csv"'}
        if cut:
            headers["X-Fusion-Truncated"] = f"first {CSV_MAX_REQUESTS} requests"
        return Response(text, media_type="text/csv; charset=utf-8", headers=headers)

    return router
