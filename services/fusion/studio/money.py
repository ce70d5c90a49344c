"""Dollar amounts as pages and files show them. The activity keeps whole nano-dollars; a page shows
every digit that is there, so a call that cost a millionth of a dollar does not read $0.00."""

from decimal import Decimal

from fusion.activity.rows import usd

__all__ = ["display_usd", "exact_usd", "short_usd"]


def exact_usd(nano: int) -> str:
    """The exact amount as a plain decimal (`0.000788277`, `12.5`, `0`): for data attributes, CSV, JSON."""
    return format(usd(nano), "f")


def display_usd(nano: int) -> str:
    """`$0.000788277`, `$12.50`: at least cents, and every digit down to the nano-dollar."""
    whole, _, fraction = exact_usd(nano).partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def short_usd(amount: Decimal) -> str:
    """Three significant digits (`$0.00123`, `$1.25`, `$1,250`), for chart axes."""
    if not amount:
        return "$0"
    if amount >= 1000:
        return f"${amount:,.0f}"
    digits = max(2, 3 - amount.adjusted() - 1)
    text = f"{amount:.{digits}f}"
    if "." in text and digits > 2:  # $0.00000000100 reads as $0.000000001
        text = text.rstrip("0")
    return f"${text}"
