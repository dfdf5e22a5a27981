"""Render nats-server configs for hubs and leaf nodes from the templates in broker/."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from string import Template

DEFAULT_MAX_PAYLOAD = 1024 * 1024


def _template(name: str) -> Template:
    return Template(resources.files("wwwserve.broker").joinpath("templates", name).read_text())


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
    leaf_user: str | None = None
    leaf_password: str | None = None
    max_payload: int = DEFAULT_MAX_PAYLOAD
    ping_interval: str = "5s"

    def render(self) -> str:
        """The nats-server config text for this hub."""
        auth = ""
        if self.leaf_user and self.leaf_password:
            auth = (
                f"authorization {{ user: {json.dumps(self.leaf_user)}, "
                f"password: {json.dumps(self.leaf_password)} }}"
            )
        cluster = ""
        if self.cluster_port:
            routes = ", ".join(json.dumps(r) for r in self.routes)
            cluster = (
                f'cluster {{\n  name: "{self.cluster_name}"\n  listen: "{self.host}:{self.cluster_port}"\n'
                f"  routes: [{routes}]\n}}"
            )
        return _template("hub.conf.tmpl").substitute(
            name=self.name,
            host=self.host,
            port=self.port,
            leafnode_port=self.leafnode_port,
            max_payload=self.max_payload,
            ping_interval=self.ping_interval,
            monitoring=_monitoring(self.host, self.http_port),
            leaf_authorization=auth,
            cluster=cluster,
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
        creds = ""
        if self.credentials_user and self.credentials_password:
            creds = ""  # carried in the URL userinfo, which nats-server understands for remotes
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
            remote_credentials=creds,
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
