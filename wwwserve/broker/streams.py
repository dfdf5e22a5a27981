"""The JetStream assets the network keeps on its hubs: the directory bucket and the ledger's streams.

Hubs run JetStream in one domain (`subjects.JS_DOMAIN`), so a provider's leaf node (which runs no
JetStream of its own) reaches them through `$JS.wwwserve.API`. Creating them is idempotent: the hub
does it when it starts, and an agent that finds them missing does it too (an open hub lets it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from wwwserve.protocol import subjects

log = structlog.get_logger(__name__)

DIRECTORY_TTL_S = 30.0  # an entry not refreshed this long is gone (a provider refreshes every 10 s)
LEDGER_DUPLICATE_WINDOW_S = 600.0  # a receipt re-published within this window is stored once
CHECKPOINT_STATE_MAX_AGE_S = 7 * 24 * 3600.0


def jetstream(nc: NATS) -> JetStreamContext:
    """The hubs' JetStream, from a hub or from a provider's leaf node alike."""
    return nc.jetstream(domain=subjects.JS_DOMAIN, timeout=5.0)


def ledger_stream_config(replicas: int) -> StreamConfig:
    """Every ledger record in the order the hubs stored it; a record id is stored once."""
    return StreamConfig(
        name=subjects.LEDGER_STREAM,
        subjects=[subjects.LEDGER_RECEIPT],
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=LEDGER_DUPLICATE_WINDOW_S,
        discard=DiscardPolicy.NEW,
    )


def checkpoint_stream_config(replicas: int) -> StreamConfig:
    """Each provider's latest signed checkpoint vote, and checkpointed states stored once by digest."""
    return StreamConfig(
        name=subjects.CHECKPOINT_STREAM,
        subjects=[f"{subjects.LEDGER_CHECKPOINT_PREFIX}.*", f"{subjects.LEDGER_STATE_PREFIX}.*"],
        storage=StorageType.FILE,
        num_replicas=replicas,
        max_msgs_per_subject=1,
        max_age=CHECKPOINT_STATE_MAX_AGE_S,
        duplicate_window=120.0,
        allow_direct=True,  # a newcomer fetches a state by its subject (direct get, any replica)
    )


def directory_config(replicas: int) -> KeyValueConfig:
    """One entry per provider (its last heartbeat, refreshed slowly), gone after `DIRECTORY_TTL_S`."""
    return KeyValueConfig(
        bucket=subjects.DIRECTORY_BUCKET,
        history=1,
        ttl=DIRECTORY_TTL_S,
        storage=StorageType.MEMORY,
        replicas=replicas,
        limit_marker_ttl=DIRECTORY_TTL_S,  # watchers hear when an entry expires
    )


async def follow_ledger(
    js: JetStreamContext, cb: Callable[[Msg], Awaitable[None]], after_seq: int = 0
) -> Subscription:
    """Every ledger record after stream sequence `after_seq`, then each new one, in stream order
    (an ordered consumer): how agents (agent/credits.py) and hubs (hubguard.py) fold the ledger."""
    return await js.subscribe(
        subjects.LEDGER_RECEIPT,
        stream=subjects.LEDGER_STREAM,
        cb=cb,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1),
        idle_heartbeat=5.0,
        inactive_threshold=60.0,
        pending_msgs_limit=1 << 20,
    )


async def read_all(
    js: JetStreamContext, subject: str, stream: str, *, last_per_subject: bool = False, wait_s: float = 5.0
) -> list[bytes]:
    """What `stream` holds on `subject` now, in stream order (only each subject's last message with
    `last_per_subject`): a one-off read, for tools and a newcomer's catch-up."""
    if not (await js.stream_info(stream)).state.messages:
        return []
    sub = await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else None,
        pending_msgs_limit=1 << 20,
    )
    out = []
    try:
        while True:
            msg = await sub.next_msg(timeout=wait_s)
            out.append(msg.data)
            if msg.metadata.num_pending == 0:
                return out
    finally:
        await sub.unsubscribe()


async def ensure_streams(nc: NATS, replicas: int = 1) -> None:
    """Create the directory bucket and the ledger streams unless they exist (safe to call by many)."""
    js = jetstream(nc)
    for cfg in (ledger_stream_config(replicas), checkpoint_stream_config(replicas)):
        try:
            await js.stream_info(cfg.name or "")
        except NotFoundError:
            try:
                await js.add_stream(cfg)
            except BadRequestError as e:  # created by someone else in between
                log.debug("stream.exists", stream=cfg.name, error=str(e))
    try:
        await js.stream_info(f"KV_{subjects.DIRECTORY_BUCKET}")
    except NotFoundError:
        try:
            await js.create_key_value(directory_config(replicas))
        except BadRequestError as e:
            log.debug("stream.exists", stream=subjects.DIRECTORY_BUCKET, error=str(e))


async def create_when_ready(
    url: str, replicas: int, user: tuple[str, str] | None = None, wait_s: float = 60.0
) -> bool:
    """Create the assets on the hub at `url`, waiting for a clustered JetStream to elect its leader."""
    auth = {"user": user[0], "password": user[1]} if user else {}
    nc = await nats.connect(url, name="wwwserve-hub-setup", **auth)
    loop = asyncio.get_running_loop()
    end = loop.time() + wait_s
    try:
        while True:
            try:
                await ensure_streams(nc, replicas)
                return True
            except (nats.js.errors.Error, nats.errors.Error) as e:
                if loop.time() > end:
                    log.warning("hub.jetstream_unavailable", error=repr(e))
                    return False
                await asyncio.sleep(0.5)
    finally:
        await nc.close()
