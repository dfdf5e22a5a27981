"""The hubs' part in verification: a provider the ledger proves bad gets no user requests through them.

Agents' routing penalties only steer what agents forward; a request a plain client or the gateway
publishes at a hub goes to whichever leaf the queue group picks. So each hub follows the ledger
stream (the same signed records every agent folds) and, when the duel evidence proves a provider bad
(`DuelEvidence.proven_bad`: at least half of its recent judge-weighted verdicts lost, over at least
three), reloads its config with that provider's leaf user denied `llm.request.>` and closes the
leaf's connection through the system account (nats-server applies a leaf's permissions when it
connects: a reload alone leaves its existing queue subscription in place; measured). The leaf
reconnects at once without the request subscription: its heartbeats, direct subject and duels still
flow, so the duels that keep sampling it can prove it good again, and the hub then lifts the ban the
same way. Needs authenticated leafs (`--provider-users`): an anonymous leaf has no name to deny.

An operator sees `hub.provider_banned` / `hub.provider_restored` in the hub's log (with the evidence),
`proven_bad` in `wwwserve ledger --json`, and the leaf without `llm.request.*` in `nats server report
leafnodes` / `/leafz?subs=1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from wwwserve.agent.service import status_subject
from wwwserve.broker.streams import follow_ledger, jetstream
from wwwserve.ledger.book import LedgerView, apply
from wwwserve.ledger.records import parse_record
from wwwserve.protocol import subjects

log = structlog.get_logger(__name__)

CHECK_S = 1.0  # how often the evidence is compared with the hub's ban list
IDLE_WAIT_S = 10.0  # how long a provider told of a ban may take to finish its work before its leaf closes


def banned_by(view: LedgerView, providers: set[str]) -> frozenset[str]:
    """The providers (of those with a hub login) that the ledger's duel evidence proves bad."""
    return frozenset(n for n in providers if view.evidence.proven_bad(n))


def leafs_of(leafz: dict[str, Any], provider: str) -> list[int]:
    """Connection ids of the leafs that serve as `provider` (its own status subject is among their
    subscriptions: only its leaf may subscribe to it usefully), from a LEAFZ answer with subscriptions."""
    own = f"llm.status.{provider}"
    return [
        int(leaf["id"]) for leaf in leafz.get("leafs", []) if own in (leaf.get("subscriptions_list") or [])
    ]


class HubGuard:
    """Follows the ledger at one hub and keeps its ban list equal to what the evidence proves.

    `apply_bans(banned)` re-renders and reloads the hub's config; the guard then closes the affected
    leaf connections through the system account (`system_user`), so their subscriptions are checked
    again against the new permissions.
    """

    def __init__(
        self,
        *,
        url: str,
        hub_name: str,
        user: tuple[str, str],
        system_user: tuple[str, str],
        providers: set[str],
        apply_bans: Callable[[frozenset[str]], None],
    ) -> None:
        self.url = url
        self.hub_name = hub_name
        self.user = user
        self.system_user = system_user
        self.providers = providers
        self.apply_bans = apply_bans
        self.view = LedgerView()
        self.banned: frozenset[str] = frozenset()
        self._sub: Subscription | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the ledger and enforce bans until `stop` is set."""
        nc = await nats.connect(self.url, user=self.user[0], password=self.user[1], name="wwwserve-hub-guard")
        sysc = await nats.connect(
            self.url, user=self.system_user[0], password=self.system_user[1], name="wwwserve-hub-guard-sys"
        )
        try:
            while not stop.is_set():
                if self._sub is None:
                    await self._follow(nc)
                await self.check(nc, sysc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), CHECK_S)
        finally:
            await nc.close()
            await sysc.close()

    async def _follow(self, nc: Client) -> None:
        with contextlib.suppress(TimeoutError, nats.errors.Error, nats.js.errors.Error):
            self._sub = await follow_ledger(jetstream(nc), self._on_record)

    async def _on_record(self, msg: Msg) -> None:
        with contextlib.suppress(ValueError, ValidationError):
            apply(self.view, parse_record(json.loads(msg.data)))  # signatures checked there

    async def check(self, nc: Client, sysc: Client) -> None:
        """Apply what the evidence proves now: reload the config, then close the affected leafs."""
        banned = banned_by(self.view, self.providers)
        if banned == self.banned:
            return
        changed = banned ^ self.banned
        for name in sorted(banned - self.banned):
            d = self.view.evidence.duel(name)
            log.warning(
                "hub.provider_banned",
                hub=self.hub_name,
                provider=name,
                duels_fought=d.verdicts,
                duels_lost=d.lost,
                bad_rate=round(d.bad_rate, 3),
            )
        for name in sorted(self.banned - banned):
            log.info("hub.provider_restored", hub=self.hub_name, provider=name)
        self.apply_bans(banned)
        self.banned = banned
        await asyncio.sleep(0.2)  # the reload is asynchronous (a signal): let the server re-read its file
        await asyncio.gather(*(self._reopen(nc, sysc, name) for name in changed))

    async def _reopen(self, nc: Client, sysc: Client, provider: str) -> None:
        """Have `provider`'s leaf reconnect under its new permissions, losing none of its answers.

        A leaf's answers in flight when its connection closes are lost, so the hub first tells the
        provider (`llm.hub.notice.<p>`): its agent leaves the queue groups and finishes what it has;
        once its status says idle (or after IDLE_WAIT_S: a provider that ignores the notice loses its
        own answers) the connection is closed and the leaf reconnects at once.
        """
        notice = json.dumps({"hub": self.hub_name, "banned": provider in self.banned}).encode()
        with contextlib.suppress(nats.errors.Error):
            await nc.publish(subjects.hub_notice_subject(provider), notice)
        end = asyncio.get_running_loop().time() + IDLE_WAIT_S
        while asyncio.get_running_loop().time() < end:
            await asyncio.sleep(0.1)
            try:
                state = json.loads((await nc.request(status_subject(provider), b"", timeout=1.0)).data)
            except (TimeoutError, nats.errors.Error, ValueError):
                continue
            if not state.get("accepting", True) and not state.get("running") and not state.get("queued"):
                break
        await self._close_leafs(sysc, provider)

    async def _close_leafs(self, sysc: Client, provider: str) -> None:
        """Close `provider`'s leaf connections at this hub (they reconnect under the new rules)."""
        try:
            query = json.dumps({"server_name": self.hub_name, "subscriptions": True}).encode()
            reply = await sysc.request("$SYS.REQ.SERVER.PING.LEAFZ", query, timeout=2.0)
            answer = json.loads(reply.data)
            server_id, leafz = answer["server"]["id"], answer["data"]
            for cid in leafs_of(leafz, provider):
                kick = json.dumps({"cid": cid}).encode()
                await sysc.request(f"$SYS.REQ.SERVER.{server_id}.KICK", kick, timeout=2.0)
                log.info("hub.leaf_closed", hub=self.hub_name, provider=provider, cid=cid)
        except (TimeoutError, nats.errors.Error, KeyError, ValueError) as exc:
            log.warning("hub.leaf_close_failed", hub=self.hub_name, provider=provider, error=repr(exc))
