"""fusion.gateway.body_limit.BodyLimit as a raw ASGI middleware, in front of a recording app."""

import json
from typing import Any

from fusion.gateway.body_limit import BodyLimit
from starlette.types import Message, Receive, Scope, Send

LIMIT = 1024


class RecordingApp:
    """Reads the whole body the ASGI way and answers 200; records what it got."""

    def __init__(self) -> None:
        self.calls = 0
        self.bodies: list[bytes] = []
        self.messages: list[Message] = []
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        self.scopes.append(scope)
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            self.messages.append(message)
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Client:
    """Feeds the body in the given pieces, then `http.disconnect`; records what is sent back."""

    def __init__(self, *pieces: bytes) -> None:
        self._pieces = list(pieces)
        self.received = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.received += 1
        if not self._pieces:
            return {"type": "http.disconnect"}
        piece = self._pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(self._pieces)}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        [start] = [message for message in self.sent if message["type"] == "http.response.start"]
        status: int = start["status"]
        return status

    @property
    def json(self) -> Any:
        return json.loads(
            b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        )

    def header(self, name: bytes) -> bytes | None:
        [start] = [message for message in self.sent if message["type"] == "http.response.start"]
        return dict(start["headers"]).get(name)


def http_scope(content_length: int | None = None) -> Scope:
    headers = [(b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}


def assert_too_large(client: Client) -> None:
    assert client.status == 413
    assert client.header(b"content-type") == b"application/json"
    error = client.json["error"]
    assert error["code"] == "request_too_large"
    assert error["type"] == "invalid_request_error"
    assert str(LIMIT) in error["message"]
    length = client.header(b"content-length")
    assert length is not None
    assert int(length) == len(json.dumps(client.json).encode())


async def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    app = RecordingApp()
    client = Client(b"x" * (LIMIT + 1))

    await BodyLimit(app, LIMIT)(http_scope(LIMIT + 1), client.receive, client.send)

    assert_too_large(client)
    assert app.calls == 0
    assert client.received == 0  # refused on the header alone


async def test_a_chunked_body_over_the_limit_is_refused() -> None:
    app = RecordingApp()
    client = Client(b"a" * 600, b"b" * 600, b"c" * 600)

    await BodyLimit(app, LIMIT)(http_scope(None), client.receive, client.send)

    assert_too_large(client)
    assert app.calls == 0
    assert client.received == 2  # it stops reading once over the limit


async def test_an_understated_length_does_not_get_a_larger_body_through() -> None:
    app = RecordingApp()
    client = Client(b"a" * 1000, b"b" * 1000)

    await BodyLimit(app, LIMIT)(http_scope(10), client.receive, client.send)

    assert_too_large(client)
    assert app.calls == 0


async def test_a_body_under_the_limit_reaches_the_app_intact() -> None:
    app = RecordingApp()
    pieces = (b'{"model": "fusion", ', b'"messages": []}')
    client = Client(*pieces)

    await BodyLimit(app, LIMIT)(http_scope(sum(map(len, pieces))), client.receive, client.send)

    assert client.status == 200
    assert app.bodies == [b"".join(pieces)]
    assert app.messages == [{"type": "http.request", "body": b"".join(pieces), "more_body": False}]


async def test_a_body_of_exactly_the_limit_passes() -> None:
    app = RecordingApp()
    client = Client(b"z" * LIMIT)

    await BodyLimit(app, LIMIT)(http_scope(None), client.receive, client.send)

    assert client.status == 200
    assert app.bodies == [b"z" * LIMIT]


async def test_after_the_replayed_body_the_app_reads_the_client_again() -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        seen.append(await receive())  # e.g. a streaming response listening for the disconnect

    client = Client(b"{}")
    await BodyLimit(app, LIMIT)(http_scope(2), client.receive, client.send)

    assert seen == [{"type": "http.request", "body": b"{}", "more_body": False}, {"type": "http.disconnect"}]


async def test_other_scopes_pass_through_untouched() -> None:
    app = RecordingApp()
    client = Client(b"x" * (LIMIT * 4))
    scope: Scope = {"type": "lifespan"}

    await BodyLimit(app, LIMIT)(scope, client.receive, client.send)

    assert app.calls == 1
    assert app.scopes == [scope]
    assert client.received == 0
    assert client.sent == []
