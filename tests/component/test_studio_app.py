"""The Studio in the gateway's app, over httpx.ASGITransport, without Kafka: an SQLite activity database
filled as the recorder fills it, the test catalog, and (for the chat's stream) a fake link to Fusion.

ASGITransport does not run the lifespan, so nothing connects to Kafka."""

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fusion.activity.store import ActivityStore
from fusion.catalog import Catalog, load_catalog
from fusion.gateway.app import Gateway, create_app
from fusion.gateway.keys import COOKIE, STUDIO_HEADER
from fusion.gateway.link import FusionLink
from fusion.kafka.tap import Reply
from fusion.settings import Settings
from fusion.studio.responses import CSP
from fusion_contracts import FusedResult, FusionProgress, FusionRequest, Usage
from pydantic import SecretStr

from fusion_testing.stack import CATALOG
from tests.support.activity import JUDGE_COST, MEMBER_COSTS, a_request, a_result, days_ago

KEY = "sk-studio-SECRET-key-7d41c9"
OTHER_KEY = "sk-studio-SECRET-other-2b88e0"
PROVIDER_KEY = "sk-provider-SECRET-5e0a17"
DB_MARK = "db-SECRET-path-91f3"
"""In the database's path, so a page that wrote the database URL would show it."""
SECRETS = (KEY, OTHER_KEY, PROVIDER_KEY, DB_MARK)
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(1)>"
BASE = "http://gateway.test"


# --- harness ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(CATALOG)


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ActivityStore]:
    # The test catalog's `leaky` provider reads this key: no page may show it.
    monkeypatch.setenv("FUSION_TEST_LEAKY_KEY", PROVIDER_KEY)
    store = ActivityStore("sqlite:///" + str(tmp_path / DB_MARK / "activity.sqlite"))
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def url_of(store: ActivityStore) -> str:
    return store.engine.url.render_as_string(hide_password=False)


@dataclass
class Studio:
    app: FastAPI
    gateway: Gateway
    client: httpx.AsyncClient

    async def sign_in(self, key: str = KEY) -> httpx.Response:
        return await self.client.post("/studio/login", data={"key": key})


@contextlib.asynccontextmanager
async def studio(
    catalog: Catalog, store: ActivityStore, keys: dict[str, str] | None = None, base_url: str = BASE
) -> AsyncIterator[Studio]:
    keys = {"team-a": KEY, "team-b": OTHER_KEY} if keys is None else keys
    settings = Settings(
        instance_id="component",
        database_url=SecretStr(url_of(store)),
        gateway_api_keys={name: SecretStr(key) for name, key in keys.items()},
        kafka_bootstrap="127.0.0.1:1",
    )
    app = create_app(settings, catalog)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=10) as client:
        yield Studio(app, app.state.gateway, client)


def record(
    store: ActivityStore,
    question: str = "Why is the sky blue?",
    *,
    key: str | None = "team-a",
    answer: str = "Rayleigh scattering.",
    member_text: str | None = None,
    days: float = 0,
    **fields: Any,
) -> FusionRequest:
    request = a_request(question, key=key).model_copy(update={"submitted_at": days_ago(days), **fields})
    result = a_result(request, answer=answer)
    if member_text is not None:
        members = [member.model_copy(update={"text": member_text}) for member in result.members]
        result = result.model_copy(update={"members": members})
    store.record_request(request)
    store.record_result(result, "fusion.results")
    return request


class Page(HTMLParser):
    """The elements of an HTML page, with their attributes and (for some) their text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.scripts.append(data)

    def by_testid(self, testid: str) -> list[dict[str, str]]:
        return [attrs for _, attrs in self.elements if attrs.get("data-testid") == testid]

    def tags(self) -> set[str]:
        return {tag for tag, _ in self.elements}


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# --- sign-in ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/studio", "/studio/activity", "/studio/activity/abc"])
async def test_pages_send_who_is_not_signed_in_to_the_sign_in_form(
    catalog: Catalog, database: ActivityStore, path: str
) -> None:
    async with studio(catalog, database) as s:
        response = await s.client.get(path)

    assert response.status_code == 303
    assert response.headers["location"] == "/studio/login"


async def test_signing_in_with_a_key_sets_a_session_cookie_that_names_it(
    catalog: Catalog, database: ActivityStore
) -> None:
    async with studio(catalog, database) as s:
        form = await s.client.get("/studio/login")
        wrong = await s.sign_in("sk-not-a-key")
        right = await s.sign_in()
        chat = await s.client.get("/studio")

    assert form.status_code == 200
    assert (
        "input",
        {
            "type": "password",
            "id": "key",
            "name": "key",
            "autocomplete": "off",
            "required": "",
            "autofocus": "",
        },
    ) in Page(form.text).elements
    assert wrong.status_code == 401
    assert Page(wrong.text).by_testid("login-error")
    assert "sk-not-a-key" not in wrong.text
    assert right.status_code == 303
    assert right.headers["location"] == "/studio"
    cookie = right.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie
    assert KEY not in cookie
    assert chat.status_code == 200
    name = [attrs for attrs in Page(chat.text).by_testid("key-name") if attrs.get("id") == "key-name"]
    assert name
    assert ">team-a</strong>" in chat.text


async def test_the_cookie_is_secure_over_https(catalog: Catalog, database: ActivityStore) -> None:
    async with studio(catalog, database, base_url="https://gateway.test") as s:
        response = await s.sign_in()

    assert "Secure" in response.headers["set-cookie"]


async def test_signing_out_clears_the_session(catalog: Catalog, database: ActivityStore) -> None:
    async with studio(catalog, database) as s:
        await s.sign_in()
        out = await s.client.post("/studio/logout")
        after = await s.client.get("/studio")

    assert out.status_code == 303
    assert out.headers["location"] == "/studio/login"
    assert f'{COOKIE}=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    assert after.status_code == 303


async def test_the_studio_with_a_trailing_slash_is_the_chat(
    catalog: Catalog, database: ActivityStore
) -> None:
    async with studio(catalog, database) as s:
        response = await s.client.get("/studio/")

    assert response.status_code == 303
    assert response.headers["location"] == "/studio"


async def test_a_forged_cookie_is_no_session(catalog: Catalog, database: ActivityStore) -> None:
    async with studio(catalog, database) as s:
        s.client.cookies.set(COOKIE, "dGVhbS1h.0000")
        page = await s.client.get("/studio")
        data = await s.client.get("/studio/api/activity")

    assert page.status_code == 303
    assert data.status_code == 401


async def test_without_keys_the_studio_is_open(catalog: Catalog, database: ActivityStore) -> None:
    record(database, key=None)
    async with studio(catalog, database, keys={}) as s:
        chat = await s.client.get("/studio")
        login = await s.client.get("/studio/login")
        data = await s.client.get("/studio/api/activity")

    assert chat.status_code == 200
    assert "Open gateway" in chat.text
    assert login.status_code == 303
    assert data.status_code == 200
    assert len(data.json()["requests"]) == 1


# --- headers and what pages may hold ---------------------------------------------------------------


async def test_every_studio_response_carries_the_security_headers(
    catalog: Catalog, database: ActivityStore
) -> None:
    request = record(database)
    paths = [
        "/studio",
        "/studio/login",
        "/studio/activity",
        f"/studio/activity/{request.request_id}",
        "/studio/activity/unknown",
        "/studio/activity.csv",
        "/studio/api/activity",
        f"/studio/api/activity/{request.request_id}",
        "/studio/api/activity/unknown",
        "/studio/api/costs",
        "/studio/static/studio.js",
        "/studio/static/studio.css",
        "/studio/static/nothing.js",
        "/studio/no/such/page",
        "/studio/activity?since=yesterday",
    ]
    async with studio(catalog, database) as s:
        anonymous = [await s.client.get(path) for path in ("/studio", "/studio/api/activity")]
        await s.sign_in()
        signed_in = [await s.client.get(path) for path in paths]
        posted = [
            await s.client.post("/studio/api/render", json={"markdown": "*hi*"}),
            await s.client.post("/studio/api/render", json={"nope": 1}),
            await s.client.post("/studio/logout"),
        ]

    for response in [*anonymous, *signed_in, *posted]:
        assert response.headers["content-security-policy"] == CSP, response.url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert [r.status_code for r in signed_in[-5:]] == [200, 200, 404, 404, 400]


async def test_pages_have_no_inline_script_style_or_handler_and_no_secret(
    catalog: Catalog, database: ActivityStore
) -> None:
    request = record(database, question=HOSTILE, answer=HOSTILE, member_text=HOSTILE)
    async with studio(catalog, database) as s:
        pages = [await s.client.get("/studio/login"), await s.sign_in()]
        for path in ("/studio", "/studio/activity", f"/studio/activity/{request.request_id}", "/studio/x"):
            pages.append(await s.client.get(path))
        data = [
            await s.client.get(path)
            for path in (
                "/studio/api/activity",
                f"/studio/api/activity/{request.request_id}",
                "/studio/api/costs",
                "/studio/activity.csv",
            )
        ]

    for response in pages:
        page = Page(response.text)
        assert page.scripts == []
        assert "style" not in page.tags()
        for tag, attrs in page.elements:
            assert not any(name.startswith("on") for name in attrs), (tag, attrs)
            assert "style" not in attrs, (tag, attrs)
            if tag == "script":
                assert attrs["src"].startswith("/studio/static/")
        assert_no_secret(response.text)
    for response in data:
        assert_no_secret(response.text)


async def test_a_hostile_answer_is_escaped_or_sanitized_in_the_detail(
    catalog: Catalog, database: ActivityStore
) -> None:
    request = record(database, question=HOSTILE, answer=f"**Fused** {HOSTILE}", member_text=HOSTILE)
    async with studio(catalog, database) as s:
        await s.sign_in()
        detail = await s.client.get(f"/studio/activity/{request.request_id}")
        listing = await s.client.get("/studio/activity")

    for response in (detail, listing):
        page = Page(response.text)
        assert "img" not in page.tags()
        assert all(
            attrs.get("src", "").startswith("/studio/static/")
            for tag, attrs in page.elements
            if tag == "script"
        )
        assert "<script>alert(1)" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail.text
    assert "<strong>Fused</strong>" in detail.text
    assert len(Page(detail.text).by_testid("member-answer")) == 2


# --- activity pages --------------------------------------------------------------------------------


async def test_the_activity_lists_requests_with_totals_and_a_chart(
    catalog: Catalog, database: ActivityStore
) -> None:
    first = record(database, "First?", days=0.5)
    second = record(database, "Second?", key="team-b", days=0.1)
    async with studio(catalog, database) as s:
        await s.sign_in()
        response = await s.client.get("/studio/activity")

    page = Page(response.text)
    rows = page.by_testid("activity-row")
    assert [row["data-request-id"] for row in rows] == [second.request_id, first.request_id]
    assert f'href="/studio/activity/{first.request_id}"' in response.text
    total = Decimal(page.by_testid("total-cost-all")[0]["data-cost-usd"])
    assert total == 2 * (sum(MEMBER_COSTS) + JUDGE_COST)
    assert ">2</span> requests" in response.text
    assert page.by_testid("cost-chart")
    assert response.text.count('class="bucket"') >= 1
    for name in ("stand-in/a", "stand-in/b", "stand-in/judge"):
        assert f'data-model="{name}"' in response.text
    menus = {attrs["value"] for tag, attrs in page.elements if tag == "option"}
    assert {"team-a", "team-b", "budget", "complete", "stand-in/judge"} <= menus


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("key=team-b", ["b"]),
        ("status=complete", ["b", "a"]),
        ("status=failed", []),
        ("preset=budget", ["b", "a"]),
        ("model=stand-in/a", ["b", "a"]),
        ("model=nobody", []),
        ("since={recent}", ["b"]),
        ("until={old}", ["a"]),
    ],
)
async def test_the_activity_filters(
    catalog: Catalog, database: ActivityStore, query: str, expected: list[str]
) -> None:
    ids = {
        "a": record(database, "A?", days=3).request_id,
        "b": record(database, "B?", key="team-b").request_id,
    }
    query = query.format(recent=days_ago(1).date().isoformat(), old=days_ago(2).date().isoformat())
    async with studio(catalog, database) as s:
        await s.sign_in()
        response = await s.client.get(f"/studio/activity?{query}")
        data = await s.client.get(f"/studio/api/activity?{query}")

    listed = [row["data-request-id"] for row in Page(response.text).by_testid("activity-row")]
    assert listed == [ids[name] for name in expected]
    assert [request["request_id"] for request in data.json()["requests"]] == listed
    assert data.json()["totals"]["requests"] == len(expected)


async def test_a_bad_filter_is_a_readable_400(catalog: Catalog, database: ActivityStore) -> None:
    async with studio(catalog, database) as s:
        await s.sign_in()
        page = await s.client.get("/studio/activity?since=yesterday")
        data = await s.client.get("/studio/api/activity?limit=100000")

    assert page.status_code == 400
    assert "since" in page.text
    assert data.status_code == 400
    assert data.json()["error"]["code"] == "invalid_request"
    assert "limit" in data.json()["error"]["message"]


async def test_the_detail_lists_each_call_and_they_sum_to_the_total(
    catalog: Catalog, database: ActivityStore
) -> None:
    request = record(database, "What is blue?", answer="It is **blue**.")
    async with studio(catalog, database) as s:
        await s.sign_in()
        response = await s.client.get(f"/studio/activity/{request.request_id}")

    assert response.status_code == 200
    page = Page(response.text)
    calls = page.by_testid("call-row")
    assert [(c["data-role"], c["data-model"]) for c in calls] == [
        ("member", "stand-in/a"),
        ("member", "stand-in/b"),
        ("judge", "stand-in/judge"),
    ]
    costs = [Decimal(c["data-cost-usd"]) for c in calls]
    assert costs == [*MEMBER_COSTS, JUDGE_COST]
    total = page.by_testid("total-cost")
    assert len(total) == 1
    assert sum(costs) == Decimal(total[0]["data-cost-usd"])
    assert page.by_testid("unattributed-row") == []
    assert "$0.000123456" in response.text  # small costs keep their digits
    assert "<strong>blue</strong>" in response.text
    assert "What is blue?" in response.text
    assert page.by_testid("timings")
    assert page.by_testid("configuration")


async def test_a_pending_request_has_a_detail_without_calls(
    catalog: Catalog, database: ActivityStore
) -> None:
    request = a_request("Still waiting?")
    database.record_request(request)
    async with studio(catalog, database) as s:
        await s.sign_in()
        response = await s.client.get(f"/studio/activity/{request.request_id}")

    assert response.status_code == 200
    page = Page(response.text)
    assert page.by_testid("call-row") == []
    assert page.by_testid("total-cost")[0]["data-cost-usd"] == "0"
    assert "pending" in response.text


async def test_an_unknown_request_is_404(catalog: Catalog, database: ActivityStore) -> None:
    async with studio(catalog, database) as s:
        await s.sign_in()
        page = await s.client.get("/studio/activity/nothing-here")
        data = await s.client.get("/studio/api/activity/nothing-here")

    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert Page(page.text).by_testid("not-found")
    assert data.status_code == 404
    assert data.json()["error"]["code"] == "fusion_not_found"


async def test_a_database_that_cannot_be_read_is_a_503_not_a_crash(catalog: Catalog, tmp_path: Path) -> None:
    empty = ActivityStore("sqlite:///" + str(tmp_path / "unmigrated.sqlite"))
    try:
        async with studio(catalog, empty) as s:
            await s.sign_in()
            page = await s.client.get("/studio/activity")
            data = await s.client.get("/studio/api/activity")
    finally:
        empty.close()

    assert page.status_code == 503
    assert "activity database" in page.text
    assert data.status_code == 503
    assert data.json()["error"]["code"] == "activity_unavailable"


# --- JSON and CSV ----------------------------------------------------------------------------------


async def test_the_json_and_csv_need_a_session_or_a_bearer_key(
    catalog: Catalog, database: ActivityStore
) -> None:
    record(database)
    paths = ["/studio/api/activity", "/studio/api/costs", "/studio/activity.csv"]
    async with studio(catalog, database) as s:
        anonymous = [await s.client.get(path) for path in paths]
        wrong = [await s.client.get(path, headers={"Authorization": "Bearer sk-wrong"}) for path in paths]
        bearer = [await s.client.get(path, headers={"Authorization": f"Bearer {KEY}"}) for path in paths]
        posted = await s.client.post("/studio/api/render", json={"markdown": "x"})

    assert {r.status_code for r in anonymous + wrong} == {401}
    assert anonymous[0].json()["error"]["type"] == "authentication_error"
    assert [r.status_code for r in bearer] == [200, 200, 200]
    assert posted.status_code == 401


async def test_the_csv_has_a_line_per_model_call_that_sums_to_the_totals(
    catalog: Catalog, database: ActivityStore
) -> None:
    ids = [
        record(database, f"Q{i}?", key=key).request_id for i, key in enumerate(["team-a", "team-b", "team-a"])
    ]
    async with studio(catalog, database) as s:
        await s.sign_in()
        everything = await s.client.get("/studio/activity.csv")
        team_a = await s.client.get("/studio/activity.csv?key=team-a")
        totals = (await s.client.get("/studio/api/activity?key=team-a")).json()["totals"]

    assert everything.headers["content-type"].startswith("text/csv")
    assert "attachment" in everything.headers["content-disposition"]
    lines = everything.text.strip().splitlines()
    assert lines[0] == (
        "request_id,submitted_at,key_name,preset,request_status,role,position,model,call_status,"
        "input_tokens,output_tokens,cost_usd,latency_ms"
    )
    assert len(lines) == 1 + 3 * 3
    assert {line.split(",")[0] for line in lines[1:]} == set(ids)
    rows = [line.split(",") for line in team_a.text.strip().splitlines()[1:]]
    assert len(rows) == 6
    assert {row[2] for row in rows} == {"team-a"}
    assert sum(Decimal(row[11]) for row in rows) == Decimal(totals["cost_usd"])
    assert sum(int(row[9]) for row in rows) == totals["input_tokens"]
    assert sum(int(row[10]) for row in rows) == totals["output_tokens"]


async def test_the_activity_json_has_requests_with_their_calls_and_totals(
    catalog: Catalog, database: ActivityStore
) -> None:
    request = record(database, answer="Fused.")
    async with studio(catalog, database) as s:
        await s.sign_in()
        listing = (await s.client.get("/studio/api/activity")).json()
        detail = (await s.client.get(f"/studio/api/activity/{request.request_id}")).json()
        costs = (await s.client.get("/studio/api/costs")).json()

    (summary,) = listing["requests"]
    assert summary["request_id"] == request.request_id
    assert summary["key_name"] == "team-a"
    assert [call["model"] for call in summary["calls"]] == ["stand-in/a", "stand-in/b", "stand-in/judge"]
    assert sum(Decimal(call["cost_usd"]) for call in summary["calls"]) == Decimal(summary["cost_usd"])
    assert listing["totals"]["cost_usd"] == summary["cost_usd"]
    assert listing["totals"]["requests"] == 1
    assert detail["answer"] == "Fused."
    assert detail["request"]["messages"][0]["content"] == "Why is the sky blue?"
    assert [call["text"] for call in detail["calls"]] == ["answer 0", "answer 1", None]
    assert costs["step"] == "hour"
    assert Decimal(costs["total_usd"]) == Decimal(summary["cost_usd"])
    assert set(costs["models"]) == {"stand-in/a", "stand-in/b", "stand-in/judge"}
    bucket_sum = sum(Decimal(bucket["total_usd"]) for bucket in costs["buckets"])
    assert bucket_sum == Decimal(costs["total_usd"])


# --- the chat room's endpoints ---------------------------------------------------------------------


async def test_the_chat_page_offers_the_catalogs_presets_and_models(
    catalog: Catalog, database: ActivityStore
) -> None:
    async with studio(catalog, database) as s:
        await s.sign_in()
        response = await s.client.get("/studio")

    page = Page(response.text)
    presets = [attrs for tag, attrs in page.elements if tag == "option" and "data-panel" in attrs]
    assert next(p["value"] for p in presets) == catalog.default_preset
    assert {p["value"] for p in presets} == set(catalog.presets)
    assert presets[0]["data-panel"] == "fast, fast, fast"
    ids = {attrs.get("id") for _, attrs in page.elements}
    for hook in (
        "prompt",
        "send",
        "estimate",
        "conversation",
        "preset",
        "judge",
        "strategy",
        "quorum",
        "deadline",
        "members",
        "add-member",
        "mode-custom",
        "new-chat",
    ):
        assert hook in ids
    assert page.by_testid("estimate")


async def test_render_sanitizes_markdown(catalog: Catalog, database: ActivityStore) -> None:
    async with studio(catalog, database) as s:
        await s.sign_in()
        response = await s.client.post(
            "/studio/api/render", json={"markdown": f"# Title\n\n{HOSTILE} [x](javascript:alert(1))"}
        )
        too_big = await s.client.post("/studio/api/render", json={"markdown": "x" * 300_000})

    html = response.json()["html"]
    assert "<h1>Title</h1>" in html
    assert "img" not in Page(html).tags()
    assert "script" not in Page(html).tags()
    assert "href" not in html
    assert too_big.status_code == 400


def chat_body(model: str = "fusion/standin", **fusion: Any) -> dict[str, Any]:
    return {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "fusion": {"progress": True, **fusion},
    }


async def test_estimate_prices_a_preset_or_a_composed_panel(
    catalog: Catalog, database: ActivityStore
) -> None:
    async with studio(catalog, database) as s:
        await s.sign_in()
        preset = await s.client.post("/studio/api/estimate", json=chat_body())
        composed = await s.client.post(
            "/studio/api/estimate", json=chat_body("fusion", panel=["priced", "billed"], judge="priced")
        )
        unknown = await s.client.post("/studio/api/estimate", json=chat_body("fusion", panel=["nope"]))

    assert preset.status_code == 200
    assert preset.json()["usd"] == "0"  # the stand-in models have no price
    body = composed.json()
    assert Decimal(body["usd"]) > 0
    assert [(p["role"], p["model"]) for p in body["parts"]] == [
        ("member", "priced"),
        ("member", "billed"),
        ("judge", "priced"),
    ]
    assert sum(Decimal(p["usd"]) for p in body["parts"]) == Decimal(body["usd"])
    assert "output limit" in body["basis"]
    assert unknown.status_code == 400
    assert "nope" in unknown.json()["error"]["message"]


class StreamingLink(FusionLink):
    """Fusion in memory: every request gets `replies(request)` on its listener, then its result."""

    def __init__(self, settings: Settings, replies: Callable[[FusionRequest], list[Reply]]) -> None:
        super().__init__(settings)  # builds a broker it never starts
        self.ready.set()
        self.told = replies
        self.submitted: list[FusionRequest] = []

    async def submit(self, request: FusionRequest, listener: Callable[[Reply], None] | None = None) -> Any:
        import asyncio

        self.submitted.append(request)
        future: asyncio.Future[FusedResult] = asyncio.get_running_loop().create_future()
        result = a_result(request, answer="Blue light scatters most.")
        if listener is not None:
            for reply in [*self.told(request), result]:
                listener(reply)
        future.set_result(result)
        return future

    def forget(self, request_id: str) -> None:
        pass


def progress(request: FusionRequest) -> list[Reply]:
    rid = request.request_id
    return [
        FusionProgress(request_id=rid, event="panel.added", member_index=0, model="stand-in/a"),
        FusionProgress(
            request_id=rid,
            event="panel.completed",
            member_index=0,
            model="stand-in/a",
            status="ok",
            text="Rayleigh.",
            latency_ms=100.0,
            usage=Usage(input_tokens=10, output_tokens=20),
            cost_usd=MEMBER_COSTS[0],
        ),
        FusionProgress(request_id=rid, event="analysis.in_progress"),
    ]


async def test_the_chat_streams_through_the_gateway_with_the_session_and_the_studio_header(
    catalog: Catalog, database: ActivityStore
) -> None:
    async with studio(catalog, database) as s:
        link = s.gateway.link = StreamingLink(s.gateway.settings, progress)
        await s.sign_in()
        without_header = await s.client.post("/v1/chat/completions", json=chat_body())
        streamed = await s.client.post("/v1/chat/completions", json=chat_body(), headers={STUDIO_HEADER: "1"})

    assert without_header.status_code == 401
    assert streamed.status_code == 200
    assert link.submitted[0].metadata["fusion.key_name"] == "team-a"
    payloads = [
        json.loads(block.removeprefix("data: "))
        for block in streamed.text.split("\n\n")
        if block.startswith("data: ") and block != "data: [DONE]"
    ]
    events = [p["fusion_progress"] for p in payloads if "fusion_progress" in p]
    assert [e["type"] for e in events] == [
        "response.fusion_call.panel.added",
        "response.fusion_call.panel.completed",
        "response.fusion_call.analysis.in_progress",
    ]
    assert events[1]["usage"] == {"input_tokens": 10, "output_tokens": 20}
    assert events[1]["cost_usd"] == str(MEMBER_COSTS[0])
    final = payloads[-1]
    assert final["fusion"]["cost"]["total_usd"] == str(sum(MEMBER_COSTS) + JUDGE_COST)
    assert final["fusion"]["request_id"] == link.submitted[0].request_id


async def test_the_script_puts_only_server_rendered_html_into_the_page(
    catalog: Catalog, database: ActivityStore
) -> None:
    async with studio(catalog, database, keys={}) as s:
        script = await s.client.get("/studio/static/studio.js")

    assert script.headers["content-type"].startswith("text/javascript")
    assert script.text.count("innerHTML") == 1
    assert "target.innerHTML = data.html" in script.text
    assert "eval(" not in script.text
    assert "X-Fusion-Studio" in script.text
