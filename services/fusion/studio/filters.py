"""The activity filters of a query string (`?since=2026-01-02&model=alpha`): pure parsing.

The activity page, its CSV and the JSON endpoints read the same parameters, so a page's links to
its CSV and JSON carry its query string as it is."""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from fusion.activity.store import ActivityFilter

__all__ = ["FILTER_FIELDS", "MAX_LIMIT", "FilterError", "Query", "parse_query"]

FILTER_FIELDS = ("since", "until", "preset", "model", "status", "key")
"""The query parameters that pick requests (`limit` and `offset` page through them)."""
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class FilterError(ValueError):
    """A query parameter that cannot be read; the message names it."""


@dataclass(frozen=True, slots=True)
class Query:
    where: ActivityFilter
    values: dict[str, str]
    """The filter parameters as given (non-empty ones), for the form and for links."""

    def link(self, **changes: str | int | None) -> str:
        """The query string with `changes` (a None drops a parameter), for links and the pager."""
        values: dict[str, str | int] = dict(self.values)
        if self.where.limit != DEFAULT_LIMIT:
            values["limit"] = self.where.limit
        if self.where.offset:
            values["offset"] = self.where.offset
        for name, value in changes.items():
            if value is None or value == "":
                values.pop(name, None)
            else:
                values[name] = value
        return urlencode(values)

    def paged(self, limit: int, offset: int) -> "Query":
        return Query(replace(self.where, limit=limit, offset=offset), self.values)


def _moment(name: str, text: str, end: bool) -> datetime:
    """A date (`2026-01-02`, the whole day: `until` ends after it) or an ISO time (UTC if no zone)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(f"{name}: {text!r} is not a date (YYYY-MM-DD) or an ISO time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _count(name: str, text: str | None, default: int, low: int, high: int) -> int:
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise FilterError(f"{name}: {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise FilterError(f"{name}: {value} is not between {low} and {high}")
    return value


def parse_query(params: Mapping[str, str]) -> Query:
    """The filter of `params`; empty parameters are no filter. Raises FilterError."""
    values = {name: params[name].strip() for name in FILTER_FIELDS if params.get(name, "").strip()}
    since = _moment("since", values["since"], end=False) if "since" in values else None
    until = _moment("until", values["until"], end=True) if "until" in values else None
    where = ActivityFilter(
        since=since,
        until=until,
        preset=values.get("preset"),
        model=values.get("model"),
        status=values.get("status"),
        key_name=values.get("key"),
        limit=_count("limit", params.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=_count("offset", params.get("offset"), 0, 0, 10_000_000),
    )
    return Query(where, values)
