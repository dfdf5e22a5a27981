"""Render nats-server configs for hubs and leaf nodes from the templates in broker/."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from string import Template
from typing import Any

from wwwserve.protocol import subjects

DEFAULT_MAX_PAYLOAD = 1024 * 1024


def _template(name: str) -> Template:
    return Template(resources.files("wwwserve.broker").joinpath("templates", name).read_text())


# JetStream API calls that read the directory and the ledger (ordered consumers, direct gets);
# creating or deleting streams is left to the hubs and ops. Each under the domain's prefix (what a
# leaf's client sends) and the plain one: a hub of that domain maps `$JS.<domain>.API` requests from
# its own clients to `$JS.API` before checking permissions (a client user at a hub was refused).
_READ_CALLS = [
    "INFO",
    "STREAM.INFO.*",
    "STREAM.NAMES",
    "STREAM.MSG.GET.*",
    "DIRECT.GET.>",
    "CONSUMER.CREATE.*",
    "CONSUMER.CREATE.*.>",
    "CONSUMER.DELETE.*.*",
    "CONSUMER.INFO.*.*",
]
JS_READ = [
    *(f"$JS.{subjects.JS_DOMAIN}.API.{c}" for c in _READ_CALLS),
    *(f"$JS.API.{c}" for c in _READ_CALLS),
    "$JS.FC.>",
]


def provider_permissions(name: str, banned: bool = False) -> dict[str, Any]:
    """What a provider's leaf node may send into the hub: requests, its own heartbeats and receipts.

    Subjects a leaf user may publish are exported to the hub; what it may subscribe to is imported.
    So provider `alice` cannot heartbeat, or answer status queries, as anyone else. A provider the
    ledger proves bad (`banned`, wwwserve/hubguard.py) may not take `llm.request.>` from the hub: no
    user request reaches it through this hub; duels (direct subjects) still do, so it can recover.
    """
    subscribe: dict[str, Any] = {"allow": [">"]}
    if banned:
        subscribe["deny"] = [f"{subjects.REQUEST_PREFIX}.>"]
    return {
        "publish": {
            "allow": [
                "llm.request.>",
                "llm.direct.>",
                "llm.cancel.>",
                f"llm.heartbeat.{name}.>",
                f"llm.status.{name}",
                "llm.ledger.receipt",
                f"{subjects.LEDGER_CHECKPOINT_PREFIX}.{name}",
                f"{subjects.LEDGER_STATE_PREFIX}.*",
                subjects.directory_put_subject(name),
                *JS_READ,
                "llm.duel.>",
                "_INBOX.>",
                "$SRV.>",
            ]
        },
        "subscribe": subscribe,
    }


CLIENT_PERMISSIONS: dict[str, Any] = {
    "publish": {
        "allow": [
            "llm.request.>",
            "llm.direct.>",
            "llm.cancel.>",
            "llm.status.>",
            "llm.ledger.view.>",
            *JS_READ,
            "_INBOX.>",
        ]
    },
    "subscribe": {"allow": ["_INBOX.>", "llm.heartbeat.>", "llm.status.>"]},
}


def _authorization(
    providers: dict[str, str],
    clients: dict[str, str],
    ops: dict[str, str],
    banned: frozenset[str] = frozenset(),
    system_user: tuple[str, str] | None = None,
) -> str:
    """The hub's `authorization` block: one user per provider, client users, ops users (no limits);
    with `system_user`, a system account for the hub's own guard (it closes a banned leaf's connection)."""
    if not (providers or clients or ops):
        return ""
    users: list[dict[str, Any]] = []
    users += [
        {"user": n, "password": p, "permissions": provider_permissions(n, n in banned)}
        for n, p in providers.items()
    ]
    users += [{"user": n, "password": p, "permissions": CLIENT_PERMISSIONS} for n, p in clients.items()]
    users += [{"user": n, "password": p} for n, p in ops.items()]
    block = "authorization {\n  users: " + json.dumps(users, indent=2) + "\n}"
    if system_user is not None:
        sys_users = json.dumps([{"user": system_user[0], "password": system_user[1]}])
        block += f"\naccounts {{\n  SYS {{ users: {sys_users} }}\n}}\nsystem_account: SYS"
    return block


def _monitoring(host: str, http_port: int | None) -> str:
    return f'http: "{host}:{http_port}"' if http_port else ""


@dataclass(frozen=True)
class HubConfig:
    """What a hub needs: where clients and leaf nodes connect, and optionally its cluster peers."""

    name: str = "hub"
    host: str = "127.0.0.1"
    port: int = 4222
    leafnode_port: int = 7422
    http_port: int | None = None
    cluster_port: int | None = None
    routes: list[str] = field(default_factory=list)
    cluster_name: str = "wwwserve"
    cluster_no_advertise: bool = False  # peers use only the listed routes (e.g. through WAN relays)
    provider_users: dict[str, str] = field(default_factory=dict)  # provider name -> password
    client_users: dict[str, str] = field(default_factory=dict)
    ops_users: dict[str, str] = field(default_factory=dict)
    max_payload: int = DEFAULT_MAX_PAYLOAD
    ping_interval: str = "5s"
    jetstream_dir: str = "jetstream"  # JetStream's store (relative: to nats-server's working directory)
    jetstream_max_file: str = "10G"
    internal_user: tuple[str, str] | None = None  # (user, password) the hub's own setup logs in with
    system_user: tuple[str, str] | None = None  # the hub guard's system-account login (closes leafs)
    banned: frozenset[str] = frozenset()  # providers proven bad: no `llm.request.>` for their leafs

    def render(self) -> str:
        """The nats-server config text for this hub."""
        cluster = ""
        if self.cluster_port:
            routes = ", ".join(json.dumps(r) for r in self.routes)
            cluster = (
                f'cluster {{\n  name: "{self.cluster_name}"\n  listen: "{self.host}:{self.cluster_port}"\n'
                f"  routes: [{routes}]\n"
                + ("  no_advertise: true\n" if self.cluster_no_advertise else "")
                + "}"
            )
        return _template("hub.conf.tmpl").substitute(
            name=self.name,
            host=self.host,
            port=self.port,
            leafnode_port=self.leafnode_port,
            max_payload=self.max_payload,
            ping_interval=self.ping_interval,
            monitoring=_monitoring(self.host, self.http_port),
            authorization=_authorization(
                self.provider_users,
                self.client_users,
                {**self.ops_users, **dict([self.internal_user] if self.internal_user else [])},
                self.banned,
                self.system_user,
            ),
            cluster=cluster,
            jetstream=(
                f"jetstream {{\n  store_dir: {json.dumps(self.jetstream_dir)}\n"
                f"  domain: {json.dumps(subjects.JS_DOMAIN)}\n  max_file_store: {self.jetstream_max_file}\n}}"
            ),
        )


@dataclass(frozen=True)
class LeafConfig:
    """What a provider's leaf node needs: its own client port and the hubs it joins (failover order)."""

    hub_urls: list[str]
    name: str = "leaf"
    host: str = "127.0.0.1"
    port: int = 4222
    http_port: int | None = None
    credentials_user: str | None = None
    credentials_password: str | None = None
    max_payload: int = DEFAULT_MAX_PAYLOAD
    ping_interval: str = "5s"
    reconnect: str = "1s"

    def render(self) -> str:
        """The nats-server config text for this leaf node."""
        if not self.hub_urls:
            raise ValueError("a leaf node needs at least one hub URL (--hub)")
        urls = ", ".join(json.dumps(_leaf_url(u)) for u in self.hub_urls)
        if self.credentials_user and self.credentials_password:
            # carried in the URL userinfo, which nats-server understands for leafnode remotes
            urls = ", ".join(
                json.dumps(_leaf_url(u, self.credentials_user, self.credentials_password))
                for u in self.hub_urls
            )
        return _template("leaf.conf.tmpl").substitute(
            name=self.name,
            host=self.host,
            port=self.port,
            max_payload=self.max_payload,
            ping_interval=self.ping_interval,
            monitoring=_monitoring(self.host, self.http_port),
            reconnect=self.reconnect,
            hub_urls=urls,
        )


def _leaf_url(url: str, user: str | None = None, password: str | None = None) -> str:
    """Normalise a hub address to a nats-leaf URL, adding credentials when given."""
    url = url.strip()
    if "://" not in url:
        url = f"nats-leaf://{url}"
    if user and password and "@" not in url:
        scheme, rest = url.split("://", 1)
        url = f"{scheme}://{user}:{password}@{rest}"
    return url
