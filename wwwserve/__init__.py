"""wwwserve: a decentralized network of independent LLM inference providers over NATS."""

__version__ = "0.1.0"
PROTOCOL_VERSION = "1"
