"""`make fuzz`: over 10,000 malformed records on every topic a service reads, from a seed
(tests/support/fuzz.py). Each bad message on a consumed topic is dead-lettered with its reason, its
topic, partition and offset; no service exits or stops answering; no consumer group is left short of
the end of a partition; a good request still completes.

The markers topic (`fusion.judge.released`) has no contract and no consumer group: the judge alone
writes it, and a judge taking over answers partitions reads it, taking each record's key for the id
of a request already released. Its bad records are not dead-lettered: a judge skips a record whose
key is no request id, and must not fail on it. So the check there is that a judge restarted after
the fuzz takes over, does not exit, and fuses a good request. Afterwards the fuzzed markers are taken
out of the topic again, so that no judge taking over later in the session reads them.
"""

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, PolicyViolationError
from fusion.client import FusionClient
from fusion.kafka.codec import DecodeError, decode
from fusion.kafka.tap import TopicTap
from fusion.settings import Settings
from fusion_contracts import (
    AnswersMessage,
    ChatMessage,
    DeadLetter,
    FusedResult,
    FusionRequest,
    PanelTask,
    Policy,
    limits,
    topics,
)
from pydantic import TypeAdapter
from rich.console import Console
from rich.table import Table

from fusion_testing.stack import HEALTH_PORTS, Services
from tests.support.fuzz import CONSUMED, KINDS, MARKER_KINDS, Malformed, malformed, refused

pytestmark = [pytest.mark.kafka]

PER_TOPIC = 3_000
"""Malformed records on each consumed topic."""
MARKERS = 1_000
SEED = 7
GROUPS = {
    topics.REQUESTS: "fusion-dispatcher",
    topics.TASKS: "fusion-panel-workers",
    topics.ANSWERS: "fusion-judges",
}
CONTRACTS: dict[str, TypeAdapter[Any]] = {
    topics.REQUESTS: TypeAdapter(FusionRequest),
    topics.TASKS: TypeAdapter(PanelTask),
    topics.ANSWERS: TypeAdapter(AnswersMessage),
}
SEND_WINDOW = 500
LETTERS_TIMEOUT_S = 150.0
LETTERS_QUIET_S = 20.0
"""How long the dead letters may pause before the wait ends (a service retries a record it fails on
for about a second before it gives up on it)."""
COMMITS_TIMEOUT_S = 30.0
ERROR_PREFIXES = ("not valid JSON", "schema:", "empty message", "unsupported schema version")

_LETTER = TypeAdapter(DeadLetter)
Place = tuple[str, int, int]
"""Where a record is: topic, partition, offset."""


def _records() -> Iterator[Malformed]:
    """Every topic's records in turn, so that every service has work from the start."""
    streams = [malformed(topic, PER_TOPIC, SEED) for topic in CONSUMED]
    streams.append(malformed(topics.RELEASED, MARKERS, SEED))
    for batch in itertools.zip_longest(*streams):
        yield from (record for record in batch if record is not None)


def test_no_fuzzed_value_is_a_valid_message() -> None:
    valid = [
        (record.topic, record.kind)
        for record in _records()
        if record.topic in CONTRACTS and _decodes(CONTRACTS[record.topic], record.value)
    ]
    assert not valid


def _decodes(adapter: TypeAdapter[Any], value: bytes | None) -> bool:
    try:
        decode(adapter, value)
    except DecodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Sent:
    """A fuzzed record on a consumed topic, as its dead letter must describe it."""

    kind: str
    key: str | None
    size: int
    digest: str


def _sent(record: Malformed) -> Sent:
    # A dead letter keeps the key's first bytes only: a huge key must not make it too large to send.
    kept = record.key[: limits.MAX_DEAD_LETTER_KEY_BYTES] if record.key is not None else None
    key = kept.decode("utf-8", errors="replace") if kept is not None else None
    value = record.value or b""
    return Sent(record.kind, key, len(value), _digest(value[: limits.MAX_DEAD_LETTER_RAW_BYTES]))


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@dataclass
class Letters:
    """The dead letters seen, by the place of the record each stands for."""

    by_place: defaultdict[Place, list[DeadLetter]] = field(default_factory=lambda: defaultdict(list))
    undecodable: int = 0

    def collect(self, record: Any) -> None:
        try:
            letter = decode(_LETTER, record.value)
        except DecodeError:
            self.undecodable += 1
            return
        self.by_place[(letter.topic, letter.partition, letter.offset)].append(letter)

    def of(self, topic: str) -> int:
        return sum(len(letters) for place, letters in self.by_place.items() if place[0] == topic)


@dataclass
class Fuzz:
    sent: dict[Place, Sent] = field(default_factory=dict)
    """The records on the consumed topics."""
    markers: dict[Place, str] = field(default_factory=dict)
    """The records on the markers topic, and their kinds."""
    refusals: dict[str, str] = field(default_factory=dict)
    """Each record the broker should refuse (see `refused`), and its error ("" if it took it)."""
    letters: Letters = field(default_factory=Letters)


@pytest.fixture(scope="module")
async def fuzzed(settings: Settings, services: Services) -> AsyncIterator[Fuzz]:
    """Publishes the records, waits for their dead letters, prints the counts; afterwards takes the
    fuzzed markers out of the markers topic and restarts the judge, so it holds only real ones."""
    fuzz = Fuzz()
    logs = {path: path.stat().st_size for path in services.log_dir.glob("*.log")}
    tap = TopicTap(settings.kafka_bootstrap, topics.DLQ, fuzz.letters.collect)
    await tap.start()
    started = time.monotonic()
    try:
        with _debug_logs_off():
            await _publish(settings.kafka_bootstrap, _records(), fuzz)
            published = time.monotonic()
            await _refuse(settings.kafka_bootstrap, fuzz)
            await _wait_for_letters(fuzz)
        _print_counts(fuzz, published - started, time.monotonic() - started)
        yield fuzz
    finally:
        await tap.stop()
        _print_logged_problems(logs)
        await _restore_markers(settings.kafka_bootstrap, {(p, o) for _, p, o in fuzz.markers})
        if "judge" in services.processes:
            services.stop("judge")
        services.start("judge")
        print(f"fuzz: {time.monotonic() - started:.0f} s in all")


async def test_every_bad_message_is_dead_lettered_with_its_reason(fuzzed: Fuzz) -> None:
    sent, found = fuzzed.sent, fuzzed.letters.by_place
    missing = Counter((place[0], sent[place].kind) for place in sent if place not in found)
    problems = [f"no dead letter for {n} {kind!r} on {topic}" for (topic, kind), n in sorted(missing.items())]
    for place, letters in found.items():
        if place not in sent:
            if all(_undeliverable(letter) for letter in letters):
                continue  # a rejected result whose reply_to could not take it (it went to fusion.results)
            problems.append(f"{len(letters)} dead letters for {place}, which the fuzz did not send")
            continue
        problems.extend(f"{place} ({sent[place].kind}): {p}" for p in _wrong(letters, place, sent[place]))
    over = [
        what for what, error in fuzzed.refusals.items() if not error and not what.startswith(topics.RELEASED)
    ]
    problems.extend(f"the broker accepted {what}" for what in over)
    if fuzzed.letters.undecodable:
        problems.append(f"{fuzzed.letters.undecodable} records on {topics.DLQ} that are not a DeadLetter")
    assert not problems, "\n".join([*problems[:60], f"({len(problems)} problems)"])


def _undeliverable(letter: DeadLetter) -> bool:
    """The judge's dead letter for a result (of a fuzzed request whose id was readable) that its
    `reply_to` could not take: its topic and partition are that destination."""
    return letter.service == "judge" and letter.error.startswith("result not delivered to its reply_to")


def _wrong(letters: list[DeadLetter], place: Place, sent: Sent) -> Iterator[str]:
    """What the dead letters of one record get wrong. Each must describe it; one at least must say
    what is wrong with its value (a service that failed on it otherwise gives up with its exception)."""
    service = CONSUMED[place[0]]
    for letter in letters:
        if letter.service != service:
            yield f"service {letter.service!r}, not {service!r}"
        if not letter.error:
            yield "no error"
        if letter.key != sent.key:
            yield f"key {(letter.key or '')[:40]!r}, not {(sent.key or '')[:40]!r}"
        truncated = sent.size > limits.MAX_DEAD_LETTER_RAW_BYTES
        if letter.raw_size != sent.size or letter.raw_truncated != truncated:
            yield f"raw_size {letter.raw_size} (truncated: {letter.raw_truncated}), not {sent.size}"
        if _digest(base64.b64decode(letter.raw_base64)) != sent.digest:
            yield "raw_base64 is not the record's value"
    if not any(letter.error.startswith(ERROR_PREFIXES) for letter in letters):
        yield f"error {letters[0].error[:160]!r}"


async def test_every_service_survives_and_still_answers(
    fuzzed: Fuzz, services: Services, client: FusionClient
) -> None:
    for name, process in services.processes.items():
        assert process.poll() is None, f"{name} exited"
    async with httpx.AsyncClient() as http:
        for port in HEALTH_PORTS.values():
            assert (await http.get(f"http://127.0.0.1:{port}/health")).is_success
    result = await client.fuse(_good("after the fuzz"))
    assert result.status == "complete"


def _good(content: str) -> FusionRequest:
    return FusionRequest(
        messages=[ChatMessage(role="user", content=content)], preset="standin", policy=Policy(deadline_s=30)
    )


async def test_no_consumer_group_is_left_short_of_a_partition_end(fuzzed: Fuzz, settings: Settings) -> None:
    deadline = time.monotonic() + COMMITS_TIMEOUT_S
    bootstrap = settings.kafka_bootstrap
    while (short := await _short_partitions(bootstrap)) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(1.0)  # commits are seen only by asking for them
    for topic, partition, committed, end in short:
        at = fuzzed.sent.get((topic, partition, committed))
        print(f"  {GROUPS[topic]} on {topic}[{partition}]: committed {committed}, end {end}", end="")
        print(f"; the record there: {at.kind!r}" if at else "")
    assert not short, f"{len(short)} partitions short of their end after {COMMITS_TIMEOUT_S:.0f} s"


async def _short_partitions(bootstrap: str) -> list[tuple[str, int, int, int]]:
    """(topic, partition, committed, end) of every consumed partition whose group has not committed
    its end."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, isolation_level="read_committed")
    await admin.start()
    await consumer.start()
    try:
        short = []
        for topic, group in GROUPS.items():
            committed = await admin.list_consumer_group_offsets(group)
            partitions = await _partitions(admin, topic)
            for tp, end in (await consumer.end_offsets(partitions)).items():
                offset = committed[tp].offset if tp in committed else 0
                if offset < end:
                    short.append((topic, tp.partition, offset, end))
        return short
    finally:
        await consumer.stop()
        await admin.close()


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    (described,) = await admin.describe_topics([topic])
    partitions = sorted(p["partition"] for p in described["partitions"])
    assert partitions, f"{topic} has no partitions"
    return [TopicPartition(topic, p) for p in partitions]


async def test_a_judge_taking_over_reads_past_bad_markers(
    fuzzed: Fuzz, services: Services, client: FusionClient
) -> None:
    before = fuzzed.letters.of(topics.ANSWERS)
    services.stop("judge")
    services.start("judge")  # takes every answers partition over, reading their markers
    result: FusedResult | None
    try:
        result = await client.fuse(_good("after the markers"), timeout_s=45)
    except TimeoutError:
        result = None
    again = fuzzed.letters.of(topics.ANSWERS) - before
    print(f"\nafter the judge took over: {again} more dead letters for answers (read again)")
    assert services.processes["judge"].poll() is None, "the judge exited"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{HEALTH_PORTS['judge']}/health")).is_success
    assert result is not None, "no result within 45 s from the judge that took over"
    assert result.status == "complete"


# Publishing


async def _publish(bootstrap: str, records: Iterable[Malformed], fuzz: Fuzz) -> None:
    total = len(CONSUMED) * PER_TOPIC + MARKERS
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,  # a retry does not write a record twice
        linger_ms=5,
        max_batch_size=1024 * 1024,
        max_request_size=limits.MAX_MESSAGE_BYTES,
    )
    await producer.start()
    started = time.monotonic()
    pending: list[tuple[Malformed, asyncio.Future[Any]]] = []
    try:
        for number, record in enumerate(records, 1):
            sending = producer.send(record.topic, record.value, record.key, headers=list(record.headers))
            pending.append((record, await sending))
            if len(pending) >= SEND_WINDOW:
                await _settle(pending, fuzz)
            if number % 2_000 == 0:
                print(f"fuzz: {number:,}/{total:,} records published ({time.monotonic() - started:.1f} s)")
        await _settle(pending, fuzz)
    finally:
        await producer.stop()


async def _settle(pending: list[tuple[Malformed, asyncio.Future[Any]]], fuzz: Fuzz) -> None:
    """Waits for the broker's acknowledgements, and keeps where each record went."""
    for record, future in pending:
        meta = await future
        place = (meta.topic, meta.partition, meta.offset)
        if record.topic == topics.RELEASED:
            fuzz.markers[place] = record.kind
        else:
            fuzz.sent[place] = _sent(record)
    pending.clear()


async def _refuse(bootstrap: str, fuzz: Fuzz) -> None:
    """One record per topic that the broker should refuse, each on its own (a refusal fails its
    batch). One over the size limit must be refused; a marker without a key is, while the markers
    topic is compacted."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2 * limits.MAX_MESSAGE_BYTES)
    await producer.start()
    try:
        for topic in [*CONSUMED, topics.RELEASED]:
            record = refused(topic)
            what = f"{topic} ({record.kind})"
            try:
                meta = await producer.send_and_wait(topic, record.value, record.key)
            except KafkaError as error:
                fuzz.refusals[what] = type(error).__name__
                continue
            fuzz.refusals[what] = ""
            place = (topic, meta.partition, meta.offset)
            if topic in CONSUMED:
                fuzz.sent[place] = _sent(record)
            else:
                fuzz.markers[place] = record.kind
    finally:
        await producer.stop()


async def _wait_for_letters(fuzz: Fuzz) -> None:
    started = changed = shown = time.monotonic()
    found = 0
    while True:
        now, count = time.monotonic(), len(fuzz.sent.keys() & fuzz.letters.by_place.keys())
        if count != found:
            found, changed = count, now
        if found == len(fuzz.sent) or now - changed > LETTERS_QUIET_S or now - started > LETTERS_TIMEOUT_S:
            return
        if now - shown >= 5.0:
            print(f"fuzz: {found:,}/{len(fuzz.sent):,} dead letters ({now - started:.0f} s)")
            shown = now
        await asyncio.sleep(0.5)


@contextlib.contextmanager
def _debug_logs_off() -> Iterator[None]:
    """The client's taps log every record they cannot decode at debug level, here thousands of lines
    over the progress; structlog left unconfigured prints every level."""
    if structlog.is_configured():
        yield
        return
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        yield
    finally:
        structlog.reset_defaults()


# Reporting


def _print_counts(fuzz: Fuzz, published_s: float, total_s: float) -> None:
    lettered = {place for place in fuzz.sent if place in fuzz.letters.by_place}
    sent = Counter((place[0], s.kind) for place, s in fuzz.sent.items())
    found = Counter((place[0], fuzz.sent[place].kind) for place in lettered)
    markers = Counter(fuzz.markers.values())
    table = Table(title="malformed records: sent / dead-lettered", title_justify="left")
    table.add_column("kind")
    for topic in CONSUMED:
        table.add_column(topic, justify="right")
    table.add_column(f"{topics.RELEASED} (sent)", justify="right")
    for kind in dict.fromkeys([*KINDS, *MARKER_KINDS]):
        cells = [f"{found[(t, kind)]}/{sent[(t, kind)]}" if sent[(t, kind)] else "" for t in CONSUMED]
        table.add_row(kind, *cells, str(markers[kind] or ""))
    totals = [f"{_of(found, topic)}/{_of(sent, topic)}" for topic in CONSUMED]
    table.add_row("all", *totals, str(len(fuzz.markers)), end_section=True)
    console = Console(width=120)
    console.print(table)
    for what, error in fuzz.refusals.items():
        console.print(f"{what}: {f'refused by the broker ({error})' if error else 'accepted by the broker'}")
    for topic in CONSUMED:
        letters = [(p, ls) for p, ls in fuzz.letters.by_place.items() if p[0] == topic and p in fuzz.sent]
        reasons = Counter(letter.error.split(":")[0][:40] for _, ls in letters for letter in ls)
        twice = sum(len(ls) > 1 for _, ls in letters)
        console.print(f"{topic}: {twice} records dead-lettered more than once; reasons: {dict(reasons)}")
    records = len(fuzz.sent) + len(fuzz.markers)
    console.print(f"{records:,} records published in {published_s:.1f} s; dead letters in {total_s:.1f} s")


def _of(counts: Counter[tuple[str, str]], topic: str) -> int:
    return sum(n for (t, _), n in counts.items() if t == topic)


def _print_logged_problems(since: dict[Path, int]) -> None:
    """What the services logged at warning or above since the fuzz began, but dead letters: each
    event once per service, with the last line of its exception."""
    counts: Counter[tuple[str, str]] = Counter()
    for path, offset in since.items():
        with path.open("rb") as log:
            log.seek(offset)
            for line in log:
                counts.update([(path.stem, what)] if (what := _problem_in(line)) else [])
    print("\nlogged by the services since the fuzz began (warnings and worse, dead letters aside):")
    for (service, what), n in counts.most_common(40):
        print(f"  {service}: {n} x {what}")


def _problem_in(line: bytes) -> str | None:
    try:
        event = json.loads(line)
    except ValueError:
        text = line.decode(errors="replace").strip()
        return f"(not JSON) {text[:120]}" if "Traceback" in text or "Error" in text else None
    if not isinstance(event, dict) or event.get("event") == "dead letter":
        return None
    if "exception" not in event and event.get("level") not in ("warning", "error", "critical"):
        return None
    what = f"{event.get('level')} {str(event.get('event'))[:70]!r}"
    if "exception" in event:
        what += f": {str(event['exception']).strip().splitlines()[-1][:140]}"
    elif "error" in event:
        what += f": {str(event['error'])[:140]}"
    return what


# Cleaning up


async def _restore_markers(bootstrap: str, fuzzed: set[tuple[int, int]]) -> None:
    """Leaves the markers topic with the judge's own markers only: reads them, deletes every record,
    writes them again."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        partitions = await _partitions(admin, topics.RELEASED)
        keep = await _markers_but(bootstrap, partitions, fuzzed)
        await _delete_records(admin, partitions)
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=limits.MAX_MESSAGE_BYTES)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topics.RELEASED, b"", k, partition=p) for p, k in keep])
    finally:
        await producer.stop()
    print(f"markers topic restored: {len(fuzzed)} fuzzed markers out, {len(keep)} of the judge's kept")


async def _markers_but(
    bootstrap: str, partitions: list[TopicPartition], fuzzed: set[tuple[int, int]]
) -> list[tuple[int, bytes]]:
    """(partition, key) of every committed marker but the fuzzed ones."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=limits.MAX_MESSAGE_BYTES,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        keep: list[tuple[int, bytes]] = []
        remaining = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while remaining:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                keep += [
                    (tp.partition, r.key) for r in records if r.key and (tp.partition, r.offset) not in fuzzed
                ]
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        return keep
    finally:
        await consumer.stop()


async def _delete_records(admin: AIOKafkaAdminClient, partitions: list[TopicPartition]) -> None:
    """Every record of these partitions (-1: up to the high watermark). A compacted topic takes
    DeleteRecords only while `delete` is among its cleanup policies: added for the while."""
    everything = {tp: RecordsToDelete(-1) for tp in partitions}
    try:
        await admin.delete_records(everything)
        return
    except PolicyViolationError:
        pass
    topic = partitions[0].topic
    configs = await _dynamic_configs(admin, topic)
    await _alter_configs(admin, topic, {**configs, "cleanup.policy": "compact,delete"})
    try:
        await admin.delete_records(everything)
    finally:
        await _alter_configs(admin, topic, configs)


async def _dynamic_configs(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    """The topic's own configs (AlterConfigs replaces them all at once)."""
    (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    ((code, message, _, _, entries),) = response.resources
    if code:
        raise RuntimeError(f"cannot describe {topic}'s configs: {message} ({code})")
    return {entry[0]: entry[1] for entry in entries if entry[3] == _DYNAMIC_TOPIC_CONFIG}


_DYNAMIC_TOPIC_CONFIG = 1


async def _alter_configs(admin: AIOKafkaAdminClient, topic: str, configs: dict[str, str]) -> None:
    for response in await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)]):
        for code, message, *_ in response.resources:
            if code:
                raise RuntimeError(f"cannot set {topic}'s configs: {message} ({code})")
