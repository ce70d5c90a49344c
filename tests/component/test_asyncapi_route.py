"""The gateway serves the AsyncAPI document at `/asyncapi.json`, without Kafka (ASGITransport does not
run the lifespan, so the gateway never connects) and outside its OpenAPI schema."""

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fusion import asyncapi
from fusion.catalog import load_catalog
from fusion.gateway.app import Gateway, create_app
from fusion.settings import Settings


@contextlib.asynccontextmanager
async def gateway_client(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(instance_id="component", **settings), load_catalog())
    gateway: Gateway = app.state.gateway
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test", timeout=10) as client:
        try:
            yield client
        finally:
            await gateway.models.aclose()


async def test_the_committed_document_is_served() -> None:
    async with gateway_client() as client:
        response = await client.get("/asyncapi.json")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == asyncapi.DOCUMENT.read_bytes()
    assert response.json()["asyncapi"] == "3.0.0"


async def test_it_is_not_part_of_the_openapi_schema() -> None:
    async with gateway_client() as client:
        spec = (await client.get("/openapi.json")).json()

    assert "/asyncapi.json" not in spec["paths"]
    assert "/health" in spec["paths"]


async def test_like_the_openapi_schema_it_needs_no_key() -> None:
    async with gateway_client(gateway_api_key="a-key") as client:
        refused = await client.get("/v1/models")
        response = await client.get("/asyncapi.json")

    assert refused.status_code == 401
    assert response.status_code == 200
    assert json.loads(response.content)["info"]["title"] == "Fusion"
