"""A bare nats-py echo responder: the floor the agent's overhead is measured against.

Run: python -m wwwserve.bench.echo NATS_URL SUBJECT
"""

from __future__ import annotations

import asyncio
import signal
import sys

import nats
from nats.aio.msg import Msg


async def serve(url: str, subject: str) -> None:
    """Answer every request on `subject` with its own payload until SIGTERM."""
    nc = await nats.connect(url)

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(subject, queue="echo", cb=echo)
    await nc.flush()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await nc.close()


if __name__ == "__main__":
    from wwwserve.runtime import run

    run(serve(sys.argv[1], sys.argv[2]))  # the same event loop the agent runs on
