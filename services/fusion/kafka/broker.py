"""One place that builds the Kafka broker and publishes contracts, so every service connects alike."""

import logging

from faststream.kafka import KafkaBroker
from fusion_contracts import limits
from pydantic import BaseModel

from fusion.kafka.codec import encode
from fusion.settings import Settings

_HEADERS = {"content-type": "application/json"}


def build_broker(settings: Settings, client_id: str) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap,
        client_id=client_id,
        allow_auto_create_topics=False,
        max_request_size=limits.MAX_MESSAGE_BYTES,
        # FastStream logs every message it handles at this level: keep that out of INFO.
        log_level=logging.DEBUG,
        logger=logging.getLogger("fusion.kafka"),
    )


class Outbox:
    """Publishes contracts as JSON. Waits for the broker's acknowledgement of each message."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def send(self, topic: str, message: BaseModel, key: bytes, partition: int | None = None) -> None:
        await self._broker.publish(
            encode(message), topic=topic, key=key, partition=partition, headers=_HEADERS
        )
