"""Malformed records for every topic a Fusion service reads, drawn from a seed: the same seed gives the
same records, byte for byte.

On the three consumed topics no value is a valid message of the topic's contract, whatever its key and
headers (test_fuzz.py checks it), so each must be dead-lettered. On the markers topic
(`fusion.judge.released`, read by a judge taking over partitions) they are markers with bad keys,
garbage values or bad headers. Kinds take turns, so a topic gets about as many of each; within a kind
the variant is drawn, the large ones seldom.
"""

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from fusion_contracts import FusionRequest, PanelAnswer, PanelPlan, PanelTask, limits, topics
from pydantic import BaseModel

__all__ = [
    "CONSUMED",
    "EPOCH",
    "KINDS",
    "MARKER_KINDS",
    "Malformed",
    "malformed",
    "refused",
    "valid_examples",
]

CONSUMED: Final = {topics.REQUESTS: "dispatcher", topics.TASKS: "panel-worker", topics.ANSWERS: "judge"}
"""Each consumed topic and the service that must dead-letter what it cannot use."""

EPOCH: Final = datetime(2026, 1, 1, tzinfo=UTC)
"""The instant every time in the records is taken from, so that a seed gives the same bytes."""

MiB: Final = 1024 * 1024
Headers = tuple[tuple[str, bytes | None], ...]
Path = tuple[str | int, ...]
Json = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Malformed:
    topic: str
    kind: str
    value: bytes | None
    key: bytes | None
    headers: Headers = ()


def valid_examples(now: datetime = EPOCH) -> dict[str, list[Json]]:
    """Valid messages per consumed topic, as JSON objects, for the fuzzer to break."""
    at, later = now.isoformat(), (now + timedelta(seconds=60)).isoformat()
    messages = [{"role": "user", "content": "fuzz"}]
    ids: Json = {"schema_version": 1}
    return {
        topics.REQUESTS: [{**ids, "request_id": "fuzz-req", "messages": messages, "preset": "standin"}],
        topics.TASKS: [
            {
                **ids,
                "request_id": "fuzz-task",
                "member_index": 0,
                "member": {"model": "fast"},
                "messages": messages,
                "deadline_at": later,
                "dispatched_at": at,
            }
        ],
        topics.ANSWERS: [
            {
                "kind": "answer",
                **ids,
                "request_id": "fuzz-answer",
                "member_index": 0,
                "model": "fast",
                "status": "ok",
                "text": "x",
                "latency_ms": 1.0,
                "finished_at": at,
            },
            {
                "kind": "plan",
                **ids,
                "request_id": "fuzz-plan",
                "messages": messages,
                "members": [{"model": "fast"}],
                "judge": {"model": "fast"},
                "quorum": 1,
                "grace_s": 0.0,
                "panel_deadline_at": later,
                "deadline_at": later,
                "submitted_at": at,
                "dispatched_at": at,
            },
        ],
    }


def malformed(topic: str, count: int, seed: int = 7) -> Iterator[Malformed]:
    """`count` malformed records for `topic`: the kinds in turn, then its edge cases."""
    rng = random.Random(f"{seed}/{topic}")
    if topic == topics.RELEASED:
        for number in range(count):
            kind = MARKER_KINDS[number % len(MARKER_KINDS)]
            key, value, headers = _MARKERS[kind](rng, f"fuzz-marker-{number}".encode())
            yield Malformed(topic, kind, value, key, headers)
        return
    bases = valid_examples()[topic]
    edges = _edge_cases(topic, bases[0])[:count]
    for number in range(count - len(edges)):
        kind = KINDS[number % len(KINDS)]
        base = {**rng.choice(bases), "request_id": f"fuzz-{number}"}  # each invalid request rejected
        key, headers = f"fuzz-{number}".encode(), ()
        if kind == "bad key":
            key = _garbage_key(rng)
        elif kind == "bad headers":
            headers = _headers(rng)
        make = _VALUES.get(kind) or rng.choice(_SMALL)
        yield Malformed(topic, kind, make(rng, topic, base), key, headers)
    yield from edges


def refused(topic: str) -> Malformed:
    """A record the broker should refuse: a value over the topics' size limit; on the markers topic,
    a record without a key (refused while the topic is compacted)."""
    if topic == topics.RELEASED:
        return Malformed(topic, "missing key", b"", None)
    return Malformed(topic, "over the size limit", b"x" * (limits.MAX_MESSAGE_BYTES + 1024), b"fuzz-refused")


def _edge_cases(topic: str, base: Json) -> list[Malformed]:
    """Invalid requests whose id is readable, so that their rejected result goes where their `reply_to`
    says: a topic that does not exist, a partition out of range. One of each, last: whatever sends
    to either may be held up there."""
    if topic != topics.REQUESTS:
        return []
    replies = {
        "fuzz-edge-nowhere": {"topic": "fusion.fuzz.no-such-topic"},
        "fuzz-edge-partition": {"topic": topics.RESULTS, "partition": 999},
    }
    invalid = {**base, "messages": []}
    return [
        Malformed(
            topic, "wrong fields", _json({**invalid, "request_id": rid, "reply_to": reply}), rid.encode()
        )
        for rid, reply in replies.items()
    ]


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def _with(base: Json, path: Path, value: Any) -> Json:
    """A copy of `base` with the field at `path` set to `value`."""
    copy: Json = json.loads(json.dumps(base))
    target: Any = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


def _text_field(rng: random.Random, base: Json) -> Path:
    fields: list[Path] = [("request_id",), ("messages", 0, "content"), ("model",), ("text",)]
    return rng.choice([path for path in fields if path[0] in base])


_MARK: Final = "@@FUZZ@@"


def _spliced(base: Json, path: Path, raw: bytes) -> bytes:
    """`base` as JSON, with `raw` written into the string at `path`, bytes JSON could not hold."""
    return _json(_with(base, path, f"fu{_MARK}zz")).replace(_MARK.encode(), raw)


# The kinds of value. Each takes the generator, the topic and a valid message to break.

Make = Callable[[random.Random, str, Json], bytes | None]

_BAD_UTF8: Final = (
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xa0\xa1",
    b"\xe2\x28\xa1",
    b"\xf0\x28\x8c\xbc",
    b"\xc0\xaf",  # an overlong "/"
    b"\xed\xa0\x80",  # a surrogate, encoded
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xe2\x82",  # cut short
)


def _binary_garbage(rng: random.Random, topic: str, base: Json) -> bytes:
    prefix = rng.choice([b"", b"{", b"[", b'{"', b'{"request_id": '])
    return prefix + rng.randbytes(rng.randint(1, 2048))


def _invalid_utf8(rng: random.Random, topic: str, base: Json) -> bytes:
    if rng.random() < 0.2:  # the whole message in Latin-1, with non-ASCII characters in it
        return json.dumps(_with(base, _text_field(rng, base), "caf\u00e9 \u00fc"), ensure_ascii=False).encode(
            "latin-1"
        )
    return _spliced(base, _text_field(rng, base), rng.choice(_BAD_UTF8) * rng.randint(1, 3))


def _truncated(rng: random.Random, topic: str, base: Json) -> bytes:
    text = _json(_with(base, _text_field(rng, base), "fuzz \u00e9\u4e2d\U0001f600"))
    cut = rng.randint(1, len(text) - 1)  # sometimes through a character
    return text[:cut] + rng.choice([b"", b" ", b"\n"])


def _wrong_type(rng: random.Random, topic: str, base: Json) -> bytes:
    if rng.random() < 0.1:
        return rng.choice([b"1e999", b"-0", b"NaN", b"Infinity"])
    values = [[], [base], [base, base], [1, 2, 3], 0, -1, 3.14, 10**40, None, True, False, "", "fuzz"]
    return _json(rng.choice([*values, json.dumps(base)]))  # the last: the message encoded twice


_REQUIRED: Final = {
    topics.REQUESTS: ("messages",),  # a request without an id gets one
    topics.TASKS: ("request_id", "member_index", "member", "messages", "deadline_at"),
    topics.ANSWERS: ("kind", "request_id", "model", "status", "messages", "judge"),
}
_WRONG: Final[dict[str, list[tuple[Path, Any]]]] = {
    topics.REQUESTS: [
        (("messages",), []),
        (("messages",), "hello"),
        (("messages",), {"role": "user", "content": "x"}),
        (("messages", 0, "role"), "robot"),
        (("messages", 0, "role"), "system"),  # no user message left
        (("messages", 0, "content"), "   "),
        (("messages", 0, "content"), 42),
        (("preset",), ""),
        (("panel",), [{"model": "fast"}]),  # a preset and a panel
        (("policy",), {"quorum": 0}),
        (("policy",), {"deadline_s": 0}),
        (("policy",), {"judge_share": 1.5}),
        (("policy",), {"max_cost_usd": -1}),
        (("stream",), []),
        (("metadata",), {"a": 1}),
        (("reply_to",), {"topic": "bad topic!"}),
        (("submitted_at",), "yesterday"),
        (("request_id",), "-starts-with-a-dash"),
        (("request_id",), 12),
    ],
    topics.TASKS: [
        (("member_index",), "zero"),
        (("member_index",), 1.5),
        (("member",), "fast"),
        (("member",), {}),
        (("member", "temperature"), 3),
        (("member", "max_tokens"), 0),
        (("messages", 0, "role"), "tool"),
        (("deadline_at",), "soon"),
        (("dispatched_at",), None),
        (("request_id",), "has space"),
    ],
    topics.ANSWERS: [
        (("status",), "maybe"),
        (("latency_ms",), -1),
        (("latency_ms",), "fast"),
        (("usage",), {"input_tokens": -1}),
        (("cost_usd",), -0.5),
        (("finished_at",), "later"),
        (("request_id",), "a/b"),
        (("members",), []),
        (("quorum",), 0),
    ],
}


def _known(topic: str, base: Json) -> frozenset[str]:
    """The fields of the contract `base` is a message of. Readers ignore any other field (a newer
    minor's), so only a change to one of these can break a message."""
    contracts: dict[str, type[BaseModel]] = {topics.REQUESTS: FusionRequest, topics.TASKS: PanelTask}
    kinds: dict[str, type[BaseModel]] = {"answer": PanelAnswer, "plan": PanelPlan}
    contract = contracts.get(topic) or kinds[base["kind"]]
    return frozenset(contract.model_fields)


def _wrong_fields(rng: random.Random, topic: str, base: Json) -> bytes:
    choice = rng.randrange(3)
    if choice == 0:  # a required field missing
        dropped = rng.choice([name for name in _REQUIRED[topic] if name in base])
        return _json({name: value for name, value in base.items() if name != dropped})
    wrong = [(path, value) for path, value in _WRONG[topic] if path[0] in _known(topic, base)]
    path, value = rng.choice(wrong)  # of the wrong type, or out of range
    broken: Json = _with(base, path, value) if path[0] in base else {**base, str(path[0]): value}
    if choice == 1:  # with a field no contract has, which alone would be ignored
        broken[f"surprise_{rng.randrange(100)}"] = rng.random()
    return _json(broken)


def _wrong_schema_version(rng: random.Random, topic: str, base: Json) -> bytes:
    # Neither 1.0 nor true: the contract takes both for 1 (validation from JSON is lax about them).
    version = rng.choice([0, 2, -1, 99, "1", "v1", "", None, 1.5, [1], {"v": 1}, 10**30, False])
    return _json({**base, "schema_version": version})


def _wrong_kind(rng: random.Random, topic: str, base: Json) -> bytes:
    if "kind" not in base:  # requests and tasks have none: an answer, which has no messages
        answer = valid_examples()[topics.ANSWERS][0]
        return _json({**answer, "request_id": base["request_id"]})
    other = "plan" if base["kind"] == "answer" else "answer"
    kind = rng.choice(["result", "chunk", "Plan", "ANSWER", "", "answer ", None, 1, ["answer"], other, _MARK])
    return _json({k: v for k, v in base.items() if k != "kind"} if kind == _MARK else {**base, "kind": kind})


Change = Callable[[random.Random], tuple[Path, Any]]
"""A field at or over a limit: its path and value."""


def _chars(path: Path, chars: int, at_most: int = 10) -> tuple[int, Change]:
    return 10, lambda rng: (path, "c" * (chars + rng.randint(0, at_most)))


_LIMITS: Final[dict[str, list[tuple[int, Change]]]] = {
    "*": [
        (30, lambda rng: (("request_id",), "r" * (limits.MAX_ID_CHARS + rng.choice([1, 2, 100, 10_000])))),
        # just under the topics' size limit, in a field with a limit of its own (a field no contract
        # has would be ignored: a newer minor's)
        (2, lambda rng: (("request_id",), "p" * (limits.MAX_MESSAGE_BYTES - rng.randint(2_000, 64_000)))),
        (10, lambda rng: (("schema_version",), 2)),  # at the limit (below), wrong elsewhere
    ],
    topics.REQUESTS: [
        _chars(("messages", 0, "content"), limits.MAX_PROMPT_CHARS + 1),
        (2, lambda rng: (("messages", 0, "content"), "c" * 1_000_001)),
        (10, lambda rng: (("messages",), [{"role": "user", "content": "m"}] * (limits.MAX_MESSAGES + 1))),
        (10, lambda rng: (("panel",), [{"model": "fast"}] * (limits.MAX_PANEL_MEMBERS + 1))),
        (10, lambda rng: (("metadata",), {f"k{i}": "v" for i in range(33)})),
        (10, lambda rng: (("policy",), {"deadline_s": limits.MAX_DEADLINE_S + 0.001})),
        (10, lambda rng: (("policy",), {"grace_s": limits.MAX_GRACE_S + 1, "quorum": 9})),
        _chars(("preset",), 201),
    ],
    topics.TASKS: [
        (20, lambda rng: (("member_index",), limits.MAX_PANEL_MEMBERS + rng.choice([0, 1, 10**6]))),
        (2, lambda rng: (("messages", 0, "content"), "c" * 1_000_001)),
        _chars(("member", "model"), 201),
        _chars(("member", "system_prompt"), 20_001),
        _chars(("messages", 0, "name"), 65),
    ],
    topics.ANSWERS: [
        (20, lambda rng: (("member_index",), limits.MAX_PANEL_MEMBERS + rng.choice([0, 1, 10**6]))),
        _chars(("text",), limits.MAX_ANSWER_CHARS + 1),
        (2, lambda rng: (("text",), "t" * 3_000_000)),
        _chars(("error",), 2_001),
        _chars(("worker",), 201),
        _chars(("model",), 201),
    ],
}


def _over_limits(rng: random.Random, topic: str, base: Json) -> bytes:
    changes = [*_LIMITS["*"], *_LIMITS[topic]]
    path, value = _pick(rng, changes)(rng)
    while path[0] not in _known(topic, base):  # a field of the other kind of message on the topic
        path, value = _pick(rng, changes)(rng)
    at_limit = {**base, "request_id": "r" * limits.MAX_ID_CHARS}
    start = at_limit if path == ("schema_version",) else base
    return _json(_with(start, path, value) if path[0] in start else {**start, path[0]: value})


def _deep_nesting(rng: random.Random, topic: str, base: Json) -> bytes:
    depth = rng.choice([64, 199, 200, 201, 512, 999, 1_001, 2_000, 10_000, 100_000])
    shape = rng.randrange(3)
    if shape == 0:
        return b"[" * depth + b"]" * depth
    if shape == 1:
        return b'{"a":' * depth + b"1" + b"}" * depth
    inner = b"[" * depth + b"]" * depth  # in a field of an otherwise valid message
    return _json(_with(base, ("request_id",), _MARK)).replace(f'"{_MARK}"'.encode(), inner)


def _nul_bytes(rng: random.Random, topic: str, base: Json) -> bytes:
    text = _json(base)
    return rng.choice(
        [
            b"\x00" * rng.randint(1, 4096),
            b"\x00" + text,
            text + b"\x00",
            text.replace(b":", b"\x00:", 1),  # between tokens
            _spliced(base, _text_field(rng, base), b"\x00"),  # raw, inside a string
            _json({**base, "request_id": "fuzz\u0000id"}),  # escaped, in an id that must be plain
        ]
    )


def _odd_unicode(rng: random.Random, topic: str, base: Json) -> bytes:
    text = json.dumps(base)
    literal = ("kind", "\u0430nswer") if "kind" in base else ("schema_version", "\u0430")  # Cyrillic a
    return rng.choice(
        [
            text.encode(rng.choice(["utf-16", "utf-16-le", "utf-32"])),
            b"\xef\xbb\xbf" + text.encode(),  # a byte order mark
            text.replace('"request_id": "', '"request_id": "\\ud800', 1).encode(),  # a lone surrogate
            _json({**base, "request_id": "fu\u200bzz\u202e"}),  # zero-width and right-to-left marks
            _json({**base, "request_id": "fuzz-\U0001f600"}),
            _json({**base, literal[0]: literal[1]}),
            _json({**base, "schema_version": "\uff11"}),  # a full-width digit
        ]
    )


def _empty_value(rng: random.Random, topic: str, base: Json) -> bytes | None:
    return rng.choice([None, b"", b" ", b"\n", b"\t\r\n "])


_VALUES: Final[dict[str, Make]] = {
    "binary garbage": _binary_garbage,
    "invalid UTF-8": _invalid_utf8,
    "truncated JSON": _truncated,
    "wrong JSON type": _wrong_type,
    "wrong fields": _wrong_fields,
    "wrong schema_version": _wrong_schema_version,
    "wrong kind": _wrong_kind,
    "over limits": _over_limits,
    "deep nesting": _deep_nesting,
    "NUL bytes": _nul_bytes,
    "odd unicode": _odd_unicode,
    "empty value": _empty_value,
}
_SMALL: Final = [_binary_garbage, _truncated, _wrong_type, _wrong_fields, _wrong_schema_version]
"""The values under a bad key or bad headers."""

KINDS: Final = (*_VALUES, "bad key", "bad headers")


# Keys and headers


def _garbage_key(rng: random.Random) -> bytes | None:
    """No key, binary keys, keys that are not UTF-8, keys up to 1.9 MiB. Two that fit a record but not
    its dead letter, which holds the key twice: 1.4 MiB of bytes that become three each as U+FFFD,
    and NULs, which JSON writes in six."""
    keys: list[tuple[int, Callable[[], bytes | None]]] = [
        (10, lambda: None),
        (10, lambda: b""),
        (20, lambda: rng.randbytes(rng.randint(1, 64))),
        (20, lambda: b"fuzz-" + rng.choice(_BAD_UTF8) + str(rng.random()).encode()),
        (10, lambda: b"fuzz\x00key\x00" * rng.randint(1, 8)),
        (4, lambda: b"k" * rng.choice([64 * 1024, 512 * 1024, MiB, 1_900_000])),
        (2, lambda: b"\xff" * (1_400_000 + rng.randint(0, 1000))),
        (2, lambda: b"\x00" * (700_000 + rng.randint(0, 1000))),
    ]
    return _pick(rng, keys)()


def _pick(rng: random.Random, weighted: list[tuple[int, T]]) -> T:
    return rng.choices([item for _, item in weighted], [weight for weight, _ in weighted])[0]


_TRACEPARENTS: Final = (
    b"",
    b"garbage",
    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
    b"00-zzzz651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    b"00-00000000000000000000000000000000-0000000000000000-01",  # all-zero ids
    b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # a forbidden version
    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    b"00-" + b"a" * 10_000,
    b"\xff\xfe\x00\x01",
)


def _headers(rng: random.Random) -> Headers:
    headers: list[tuple[int, Callable[[], Headers]]] = [
        (20, lambda: (("traceparent", rng.choice(_TRACEPARENTS)),)),
        (20, lambda: ((rng.choice(["x-binary", "content-type", "tracestate"]), rng.randbytes(64)),)),
        (10, lambda: (("baggage", rng.choice([b"=;=,%%%", b"k=" + b"v" * 10_000, b"\xff=\xfe"])),)),
        (10, lambda: ((rng.choice(["traceparent", "x-null"]), None),)),  # no value (null): Kafka allows it
        (10, lambda: (("traceparent", _TRACEPARENTS[2] + b"-01"), ("traceparent", b"garbage"))),
        (10, lambda: tuple((f"h{i}", b"v") for i in range(rng.randint(100, 1000)))),
        (5, lambda: (("x-big", rng.randbytes(256 * 1024)),)),
        (5, lambda: (("tr\u00e0ceparent", b"00"), ("\U0001f600", b"emoji"))),
        (5, lambda: (("", b"no name"),)),
    ]
    return _pick(rng, headers)()


# Markers: a request id for key and an empty value. Values are read past; keys are request ids.

Marker = tuple[bytes | None, bytes | None, Headers]


def _garbage(rng: random.Random) -> bytes:
    size = rng.choice([1, 16, 1024, 4096]) if rng.random() < 0.98 else rng.choice([256 * 1024, MiB])
    return rng.choice([rng.randbytes(size), b"\x00" * size, _json({"request_id": "fuzz", "released": True})])


_MARKERS: Final[dict[str, Callable[[random.Random, bytes], Marker]]] = {
    "garbage value": lambda rng, key: (key, _garbage(rng), ()),
    "invalid UTF-8 key": lambda rng, key: (key + rng.choice(_BAD_UTF8), rng.choice([b"", _garbage(rng)]), ()),
    "binary key": lambda rng, key: (rng.randbytes(rng.randint(1, 64)), b"", ()),
    "huge key": lambda rng, key: (
        b"m" * (rng.choice([1024, 65536]) if rng.random() < 0.95 else MiB) + key,
        b"",
        (),
    ),
    "empty key": lambda rng, key: (b"", rng.choice([b"", b"x"]), ()),
    "bad headers": lambda rng, key: (key, b"", _headers(rng)),
}
MARKER_KINDS: Final = tuple(_MARKERS)
