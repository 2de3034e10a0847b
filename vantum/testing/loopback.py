"""Serving a raw-stream fake (a WebSocket provider, a webhook receiver) for one block.

The WebSocket fakes (Deepgram, Cartesia, OpenAI Realtime) and the webhook receiver
each take the raw TCP stream themselves; what they share is the chore around it:
listen on a free loopback port, say which port the kernel picked, and stop serving
(closing every connection) when the test's block ends. The ASGI fakes use
:func:`vantum.asgi.serve_app` for the same job through Hypercorn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import trio


@asynccontextmanager
async def serve_streams(
    handler: Callable[[trio.SocketStream], Awaitable[object]],
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[int]:
    """Accept connections on ``host:port`` (0: any free port) and run ``handler`` on
    each until the block exits; yields the bound port. Leaving the block cancels
    every handler, which closes its connection."""
    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(trio.serve_tcp, handler, port, host=host)
        )
        try:
            yield int(listeners[0].socket.getsockname()[1])
        finally:
            nursery.cancel_scope.cancel()
