"""structlog configuration, done once at startup: pretty in a terminal, JSON otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is now: a stream captured at setup may since have been closed."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", json_logs: bool | None = None) -> None:
    """Set up structlog (and stdlib logging) for a wwwserve process; logs go to stderr."""
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def connection_callbacks(logger: Any) -> dict[str, Any]:
    """nats-py callbacks that log connection trouble as one structured line, not a traceback."""

    async def error_cb(exc: Exception) -> None:
        logger.debug("nats.error", error=repr(exc))

    async def disconnected_cb() -> None:
        logger.info("nats.disconnected")

    async def reconnected_cb() -> None:
        logger.info("nats.reconnected")

    return {"error_cb": error_cb, "disconnected_cb": disconnected_cb, "reconnected_cb": reconnected_cb}
