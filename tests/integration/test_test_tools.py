"""The Studio's test tools work for real: the session's PostgreSQL cluster takes writes through SQLAlchemy,
and Debian's chromium, driven by Playwright, runs a page's scripts and renders it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
from aiohttp import web
from playwright.async_api import Browser, ConsoleMessage

PAGE = """<!doctype html>
<html>
<head><meta charset="utf-8"><title>Fusion test page</title></head>
<body>
  <h1 id="title">Loading</h1>
  <ul id="answers"></ul>
  <script>
    document.getElementById("title").textContent = "Fusion Studio";
    console.log("page script ran");
  </script>
</body>
</html>
"""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_postgres_round_trip(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    metadata = sa.MetaData()
    notes = sa.Table(
        "tool_check_notes",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
    )
    try:
        metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(sa.insert(notes), [{"text": "first"}, {"text": "zweite ✓"}])
        with engine.connect() as connection:
            rows = connection.execute(sa.select(notes.c.text).order_by(notes.c.id)).scalars().all()
            server = connection.execute(sa.text("select current_user, current_database()")).one()
        assert rows == ["first", "zweite ✓"]
        assert tuple(server) == ("fusion", "fusion")
    finally:
        metadata.drop_all(engine)
        engine.dispose()


@asynccontextmanager
async def serving(html: str) -> AsyncIterator[str]:
    """`html` at / on a free loopback port, served from this event loop; yields the page's URL."""

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/"
    finally:
        await runner.cleanup()


async def test_browser_runs_scripts_and_renders(browser: Browser, tmp_path: Path) -> None:
    context = await browser.new_context(viewport={"width": 800, "height": 600})
    messages: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        messages.append(f"{message.type}: {message.text}")

    try:
        page = await context.new_page()
        page.on("console", on_console)
        async with serving(PAGE) as url:
            response = await page.goto(url)
            assert response is not None
            assert response.ok
            assert await page.title() == "Fusion test page"
            assert await page.text_content("#title") == "Fusion Studio"

            count = await page.evaluate(
                """(answers) => {
                    const list = document.getElementById("answers");
                    for (const text of answers) {
                        const item = document.createElement("li");
                        item.textContent = text;
                        list.appendChild(item);
                    }
                    console.info(`added ${answers.length} answers`);
                    return list.children.length;
                }""",
                ["the sky scatters blue light", "Rayleigh scattering"],
            )
            assert count == 2
            assert await page.locator("#answers li").all_text_contents() == [
                "the sky scatters blue light",
                "Rayleigh scattering",
            ]

            screenshot = tmp_path / "page.png"
            await page.screenshot(path=str(screenshot), full_page=True)
        assert "log: page script ran" in messages
        assert "info: added 2 answers" in messages
        data = screenshot.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 1000
    finally:
        await context.close()
