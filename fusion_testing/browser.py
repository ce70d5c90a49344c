"""A headless browser for the Studio's tests: Debian's chromium (infra/test-tools.sh installs it), driven by
Playwright. Playwright's own browser downloads are not reachable from CI, so `playwright install` is
never run: Playwright launches /usr/bin/chromium instead.

    async with async_playwright() as playwright:
        browser = await launch_browser(playwright)
"""

from pathlib import Path

from playwright.async_api import Browser, Playwright

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "launch_browser", "require_chromium"]

CHROMIUM = "/usr/bin/chromium"

CHROMIUM_ARGS = [
    # Root in CI, and no user namespaces in containers: chromium's sandbox cannot start.
    "--no-sandbox",
    "--disable-gpu",
    # The machine's network is closed: chromium's own calls home (updates, sync, QUIC probes, field
    # trials) are refused, and without these flags they fail noisily or slow the start.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Added to Playwright's own switches, which already hold most of these; Playwright passes `--headless`
itself (the new headless mode in chromium since 132), so no `--headless=new`."""

INSTALL_HINT = "run infra/test-tools.sh (as root) to install Debian's chromium"


def require_chromium() -> str:
    """CHROMIUM, or a RuntimeError that says how to install it."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"chromium is not installed ({CHROMIUM} is missing): {INSTALL_HINT}")
    return CHROMIUM


async def launch_browser(playwright: Playwright, *, timeout_ms: float = 30_000) -> Browser:
    """Debian's chromium, headless, with CHROMIUM_ARGS. Playwright gives it a fresh temporary profile
    (user-data dir) and removes it when the browser closes."""
    return await playwright.chromium.launch(
        executable_path=require_chromium(), headless=True, args=CHROMIUM_ARGS, timeout=timeout_ms
    )
