"""The provider agent: serves requests from its own leaf node, forwards to peers, heartbeats."""

from wwwserve.agent.agent import Agent
from wwwserve.agent.settings import ProviderSettings

__all__ = ["Agent", "ProviderSettings"]
