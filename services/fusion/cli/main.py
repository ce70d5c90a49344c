"""`fusion serve | ask | eval | topics create | models | schemas`."""

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import get_args

from faststream.asgi import AsgiFastStream
from fusion_contracts import Strategy

from fusion.catalog import Catalog, CatalogError, load_catalog
from fusion.settings import Settings

EXIT_USAGE = 2
GATEWAY_BACKSTOP_S = 10.0


def _secrets(settings: Settings, catalog: Catalog) -> list[str]:
    """Every secret the process holds, for the logs to redact."""
    keys = [provider.api_key() or "" for provider in catalog.providers.values()]
    keys += list(settings.api_keys().values())
    if settings.kafka_sasl_password is not None or settings.kafka_sasl_password_file is not None:
        from fusion.kafka.security import KafkaSecurityError, sasl_password

        with contextlib.suppress(KafkaSecurityError):
            keys.append(sasl_password(settings))
    if settings.database_url is not None or settings.database_url_file is not None:
        from sqlalchemy.engine import make_url

        password = make_url(settings.activity_database_url()).password
        if password:
            keys.append(str(password))
    return keys


def _serve(args: argparse.Namespace, settings: Settings, catalog: Catalog) -> int:
    from fusion.activity.recorder import create_app as activity
    from fusion.dispatcher.app import create_app as dispatcher
    from fusion.judge.app import create_app as judge
    from fusion.logs import configure_logging
    from fusion.observability.tracing import configure_tracing
    from fusion.panel_worker.app import create_app as panel_worker
    from fusion.runtime import serve

    configure_logging(settings, args.service, _secrets(settings, catalog))
    configure_tracing(args.service)

    if args.service == "gateway":
        from fusion.gateway.app import create_app as gateway

        gateway_app = gateway(settings, catalog)
        serve(
            gateway_app,
            settings,
            "gateway",
            settings.gateway_host,
            settings.gateway_port,
            # Past its drain, the gateway answers what is still open itself; the server's own limit
            # is only a backstop.
            graceful_s=settings.gateway_drain_s + GATEWAY_BACKSTOP_S,
            on_shutdown=gateway_app.state.begin_drain,
        )
        return 0
    factories: dict[str, Callable[[Settings, Catalog], AsgiFastStream]] = {
        "dispatcher": dispatcher,
        "panel-worker": panel_worker,
        "judge": judge,
        "activity": activity,
    }
    app = factories[args.service](settings, catalog)
    serve(app, settings, args.service, settings.health_host, settings.health_port_for(args.service))
    return 0


def _topics(args: argparse.Namespace, settings: Settings, _catalog: Catalog) -> int:
    from fusion.kafka.admin import create_topics

    outcome = asyncio.run(create_topics(settings))
    for name, state in outcome.items():
        print(f"{name}: {state}")
    return 0


def _models(args: argparse.Namespace, settings: Settings, catalog: Catalog) -> int:
    from fusion.cli.listing import print_catalog

    print_catalog(catalog)
    return 0


def _schemas(args: argparse.Namespace, settings: Settings, _catalog: Catalog) -> int:
    from fusion import asyncapi
    from fusion.schemas import SCHEMA_DIR, stale_schemas, write_schemas

    if args.check:
        stale = [SCHEMA_DIR / name for name in stale_schemas()]
        if asyncapi.is_stale():
            stale.append(asyncapi.DOCUMENT)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in [*write_schemas(), asyncapi.write_document()]:
        print(path)
    return 0


def _ask(args: argparse.Namespace, settings: Settings, catalog: Catalog) -> int:
    from fusion.cli.ask import run_ask
    from fusion.observability.tracing import configure_tracing

    provider = configure_tracing("cli")
    try:
        return run_ask(args, settings)
    finally:
        if provider is not None:
            provider.shutdown()  # sends the spans of this request before the process ends


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="fusion", description="A panel of models, a judge, one fused answer.")
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one service in this process")
    serve.add_argument("service", choices=["dispatcher", "panel-worker", "judge", "gateway", "activity"])
    serve.set_defaults(run=_serve)

    ask = commands.add_parser("ask", help="fuse one question and print the result")
    ask.add_argument("question")
    group = ask.add_mutually_exclusive_group()
    group.add_argument("--preset", help="a catalog preset (default: the catalog's default)")
    group.add_argument("--panel", help="comma-separated catalog model names, e.g. a,b,c")
    ask.add_argument("--judge", help="the judge model (default: the preset's)")
    ask.add_argument("--system", help="a system message for every member")
    ask.add_argument(
        "--strategy",
        choices=get_args(Strategy),
        help="how the judge fuses: synthesize, synthesize-once, select or vote (default: the preset's)",
    )
    ask.add_argument(
        "--tools",
        help="research tools for every member, comma-separated: web_search, web_fetch, search_documents, "
        "mcp:<server> ('none' for none; default: the preset's)",
    )
    ask.add_argument(
        "--max-tool-calls", type=int, help="tool calls per member answer (default: the preset's)"
    )
    ask.add_argument("--quorum", type=int, help="answers needed before the straggler grace starts")
    ask.add_argument("--grace", type=float, help="seconds to wait for stragglers once quorum is in")
    ask.add_argument("--deadline", type=float, help="seconds until the fused result is due")
    ask.add_argument("--max-cost", type=str, help="US dollars: reject the request if its estimate is higher")
    ask.add_argument("--json", action="store_true", help="print only the FusedResult as JSON on stdout")
    ask.add_argument(
        "--timeline", action="store_true", help="after the answer, a waterfall of where time went"
    )
    ask.set_defaults(run=_ask)

    topics = commands.add_parser("topics", help="Kafka topics")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True)
    create = topic_commands.add_parser("create", help="create Fusion's topics (idempotent)")
    create.set_defaults(run=_topics)

    models = commands.add_parser("models", help="list the catalog's models and presets")
    models.set_defaults(run=_models)

    from fusion.cli.evaluate import add_parser as add_eval

    add_eval(commands)

    from fusion.cli.index import add_parser as add_index

    add_index(commands)

    schemas = commands.add_parser("schemas", help="write the contracts' JSON Schemas and AsyncAPI document")
    schemas.add_argument(
        "--check", action="store_true", help="exit 1 if the committed schemas or document are stale"
    )
    schemas.set_defaults(run=_schemas)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings()
    try:
        catalog = load_catalog(settings.catalog)
    except CatalogError as error:
        print(f"fusion: {error}", file=sys.stderr)
        return EXIT_USAGE
    code: int = args.run(args, settings, catalog)
    return code


if __name__ == "__main__":
    sys.exit(main())
