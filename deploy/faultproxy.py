"""A TCP proxy that injects faults between the gateway and its backend (Triton's gRPC port).

Real faults without touching the code under test: the gateway talks to the proxy as if it were
Triton, and the reliability suite switches the proxy's mode while load runs.

- `pass`: bytes flow both ways untouched;
- `slow`: every chunk from the backend is held `delay_s` before it is forwarded (a slow
  backend: requests reach it, answers come late);
- `blackhole`: connections stay open but nothing is forwarded either way (a hung backend);
- `reset()`: every open connection is aborted now (the backend dies mid-request); new
  connections are refused while `refuse` is set.

The proxy listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator


class FaultProxy:
    """Forward 127.0.0.1:`port` to `upstream` (host, port), with switchable faults."""

    def __init__(self, upstream: tuple[str, int], port: int = 0):
        self.upstream = upstream
        self.mode = "pass"
        self.delay_s = 0.0
        self.refuse = False
        self._sock = socket.create_server(("127.0.0.1", port))
        self.port = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, sock=self._sock)

    def stop(self) -> None:
        """Close the listener and every connection, end their tasks, stop the loop."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def set(self, mode: str, delay_s: float = 0.0) -> None:
        """Switch to `pass`, `slow` (with `delay_s`) or `blackhole`."""
        if mode not in ("pass", "slow", "blackhole"):
            raise ValueError(f"Unknown mode {mode!r}; use pass, slow or blackhole")
        self.mode, self.delay_s = mode, delay_s

    def reset(self) -> None:
        """Abort every open connection now (as if the backend process died)."""
        def abort() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
        self._loop.call_soon_threadsafe(abort)

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Within: open connections aborted and new ones refused (a dead backend)."""
        self.refuse = True
        self.reset()
        try:
            yield
        finally:
            self.refuse = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer, from_backend=False),
                                 self._pipe(up_reader, writer, from_backend=True),
                                 return_exceptions=True)
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    from_backend: bool) -> None:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            while self.mode == "blackhole":
                await asyncio.sleep(0.05)
            if from_backend and self.mode == "slow":
                await asyncio.sleep(self.delay_s)
            writer.write(chunk)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()
