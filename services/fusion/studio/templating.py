"""The Studio's Jinja2 templates and static files, read from the package on first use.

Autoescaping is always on; the only HTML a template inserts unescaped is `markdown` (the sanitizer's
output) and the chart (`charts.cost_svg`, which escapes what it writes)."""

import hashlib
from collections.abc import Iterable
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from fastapi.responses import HTMLResponse
from fusion_contracts import ModelSpec
from fusion_contracts.result import AnswerRef
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from fusion.studio.money import display_usd, exact_usd
from fusion.studio.render import markdown_html

__all__ = ["STATIC_TYPES", "environment", "page", "static_file"]

STATIC_TYPES = {
    "studio.js": "text/javascript; charset=utf-8",
    "studio.css": "text/css; charset=utf-8",
}
"""The files under `/studio/static/`, and only these (a name is never a path)."""


@cache
def static_file(name: str) -> bytes:
    return resources.files("fusion.studio").joinpath("static", name).read_bytes()


@cache
def static_version() -> str:
    """A digest of the static files, in their URLs, so a browser never runs a stale script."""
    digest = hashlib.sha256()
    for name in sorted(STATIC_TYPES):
        digest.update(static_file(name))
    return digest.hexdigest()[:12]


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def duration(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:,.0f} ms" if ms < 10_000 else f"{ms / 1000:,.1f} s"


def who(refs: Iterable[AnswerRef]) -> str:
    """The answers a point of the analysis names: `member 0 (alpha), member 2 (beta)`."""
    return ", ".join(f"member {ref.member} ({ref.model})" for ref in refs) or "—"


def settings_of(spec: ModelSpec) -> str:
    """A panel member's or judge's parameters: `temperature 0.9 · seed 3` (a system prompt only named)."""
    values = spec.model_dump(exclude_none=True, exclude={"model", "system_prompt"})
    words = [f"{name} {value}" for name, value in values.items()]
    if spec.system_prompt:
        words.append("with a system prompt")
    return " · ".join(words)


def markdown(text: str | None) -> Markup:
    return Markup(markdown_html(text or ""))  # nh3 has sanitized it


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("fusion.studio", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        usd=display_usd,
        exact_usd=exact_usd,
        when=when,
        duration=duration,
        who=who,
        settings=settings_of,
        markdown=markdown,
        thousands=lambda n: f"{n:,}",
    )
    env.globals["static_version"] = static_version()
    return env


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """`template` rendered; `viewer` (who is signed in) and `active` (the header's tab) may be left out."""
    html = environment().get_template(template).render({"viewer": None, "active": None, **context})
    return HTMLResponse(html, status_code=status)
