"""Session fixtures for the real parts. Unit and component tests use none of them."""

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fusion.client import FusionClient
from fusion.kafka.admin import create_topics
from fusion.observability.tracing import configure_tracing
from fusion.research.documents import DocumentIndex
from fusion.settings import Settings
from playwright.async_api import Browser, async_playwright

from fusion_testing.browser import launch_browser
from fusion_testing.postgres import running_postgres
from fusion_testing.search_standin import running_search_standin
from fusion_testing.stack import (
    BOOTSTRAP,
    CATALOG,
    CORPUS,
    GATEWAY_PORTS,
    KAFKA_PORT,
    LOCAL_MODELS_PORT,
    SEARCH_PORT,
    STANDIN_URL,
    TEST_SITE_PORT,
    Services,
    run_infra,
    running_standin,
)
from fusion_testing.test_site import PAGES, running_test_site
from tests.support.otlp import Receiver


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """A fresh single-node broker for this session (its data is reset first)."""
    run_infra("kafka.sh", "reset", KAFKA_PORT=str(KAFKA_PORT))
    run_infra("kafka.sh", "start", KAFKA_PORT=str(KAFKA_PORT))
    try:
        yield BOOTSTRAP
    finally:
        run_infra("kafka.sh", "stop", KAFKA_PORT=str(KAFKA_PORT))


@pytest.fixture(scope="session")
def settings(kafka: str) -> Settings:
    return Settings(kafka_bootstrap=kafka, catalog=CATALOG, instance_id="tests")


@pytest.fixture(scope="session")
async def topics(settings: Settings) -> None:
    await create_topics(settings)


@pytest.fixture(scope="session")
def standin() -> Iterator[str]:
    """The stand-in model server (see fusion_testing.standin): set latencies and failures, by model id."""
    with running_standin(latency_ms=20):
        yield STANDIN_URL


LEAKY_KEY = "sk-fusion-test-SECRET-4f9c2a7e1b"
"""A provider key the tests configure, so they can show it never leaks (see test_observability.py)."""

OTLP_PORT = 18318


@pytest.fixture(scope="session")
def otlp() -> Iterator[Receiver]:
    """An OTLP/HTTP receiver for the whole session; the services and this process export to it."""
    receiver = Receiver(OTLP_PORT)
    receiver.start()
    os.environ.update(TRACING_ENV)
    provider = configure_tracing("tests")
    yield receiver
    if provider is not None:
        provider.shutdown()
    receiver.stop()


TRACING_ENV = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{OTLP_PORT}",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
}


@pytest.fixture(scope="session")
def test_site() -> Iterator[str]:
    """The local test website (fusion_testing/test_site.py) that panel members search and fetch."""
    with running_test_site(TEST_SITE_PORT) as url:
        yield url


@pytest.fixture(scope="session")
def search_backend(test_site: str) -> Iterator[str]:
    """The stand-in search server, answering with the test site's articles and notes."""
    documents = [
        {"url": f"{test_site}{path}", "title": page.title, "content": " ".join(page.facts)}
        for path, page in PAGES.items()
    ]
    with running_search_standin(documents, SEARCH_PORT, key=BRAVE_KEY) as url:
        yield url


BRAVE_KEY = "brave-test-key-7d41"
MCP_SECRET = "mcp-test-secret-93be"
"""Set for the services: the catalog's `standin-brave` backend and `testmcp` server read them."""


@pytest.fixture(scope="session")
def document_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' corpus (tests/data/corpus), indexed for search_documents."""
    path = tmp_path_factory.mktemp("documents") / "index.sqlite"
    report = DocumentIndex(path).add([CORPUS])
    assert not report.failed, report.failed
    return path


@pytest.fixture(scope="session")
def backends(standin: str, search_backend: str, document_index: Path) -> dict[str, str]:
    """What the services call besides Kafka, up, and the settings that point them there: the stand-in
    models, the stand-in search server and test site (allowed to web_fetch on purpose), the corpus
    index, and the secrets the test catalog's backends read."""
    return {
        "FUSION_FETCH_ALLOW_HOSTS": json.dumps([f"127.0.0.1:{TEST_SITE_PORT}"]),
        "FUSION_FETCH_TIMEOUT_S": "5",
        "FUSION_DOCUMENT_INDEX": str(document_index),
        "FUSION_TEST_BRAVE_KEY": BRAVE_KEY,
        "FUSION_TEST_MCP_SECRET": MCP_SECRET,
    }


@pytest.fixture(scope="session")
def services(
    settings: Settings,
    topics: None,
    backends: dict[str, str],
    otlp: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Services]:
    """dispatcher, panel-worker and judge, each its own process, on the session's broker."""
    log_dir = tmp_path_factory.mktemp("service-logs")
    env = {
        **os.environ,
        "FUSION_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FUSION_CATALOG": str(settings.catalog),
        "FUSION_LOG_FORMAT": "json",
        "FUSION_TEST_LEAKY_KEY": LEAKY_KEY,
        **backends,
        **TRACING_ENV,
    }
    stack = Services(env=env, log_dir=log_dir)
    try:
        for name in ("dispatcher", "panel-worker", "judge"):
            stack.start(name)
        yield stack
    finally:
        stack.stop_all()
        print(f"service logs: {log_dir}")


@pytest.fixture(scope="session")
async def client(settings: Settings, services: Services) -> AsyncIterator[FusionClient]:
    async with FusionClient(settings, watch_answers=True) as fusion:
        yield fusion


@pytest.fixture(scope="session")
def local_models() -> Iterator[str]:
    """The real llama.cpp server with SmolLM2 and Gemma 3, from their PyPI packages."""
    run_infra("local-models.sh", "start", MODELS_PORT=str(LOCAL_MODELS_PORT))
    try:
        yield f"http://127.0.0.1:{LOCAL_MODELS_PORT}/v1"
    finally:
        run_infra("local-models.sh", "stop", MODELS_PORT=str(LOCAL_MODELS_PORT))


@pytest.fixture(scope="session")
def gateways(services: Services) -> list[str]:
    """Two gateway instances on the session's broker, each with its own reply topic."""
    return [services.start_gateway(f"gateway-{i}", port) for i, port in enumerate(GATEWAY_PORTS[:2])]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (Debian's, see fusion_testing.postgres): its SQLAlchemy URL."""
    with running_postgres() as url:
        yield url


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium, headless, driven by Playwright (see fusion_testing.browser)."""
    async with async_playwright() as playwright:
        launched = await launch_browser(playwright)
        try:
            yield launched
        finally:
            await launched.close()
