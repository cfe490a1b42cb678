"""Notice the server's shutdown signal when it arrives, not when the lifespan ends.

uvicorn handles SIGTERM and SIGINT by first draining open connections (up to its
graceful-shutdown timeout) and only then running the app's lifespan shutdown. Work that is
not a connection, like the legacy jobs, has to know at the signal: to stop taking new
work at once, and to count its grace period from the same moment the streams do. So the
handler the server installed is wrapped: ours runs first, then the server's, unchanged.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, FrameType | None], Any]


class ShutdownSignals:
    """Calls ``callback`` on the running loop whenever SIGTERM or SIGINT arrives."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._installed: dict[int, tuple[Handler, Handler]] = {}  # signal → (ours, previous)

    def install(self) -> bool:
        """Chain onto the current handlers; False where signals cannot be watched.

        Only the main thread may set handlers, and a signal nobody handles (the default
        action kills the process) has no shutdown to wait for: both are left alone.
        """
        if threading.current_thread() is not threading.main_thread():
            return False
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            if not callable(previous) or sig in self._installed:
                continue

            def handler(signum: int, frame: FrameType | None, previous: Handler = previous
                        ) -> Any:
                # A signal handler may interrupt the loop mid-callback: hand over, don't act.
                try:
                    loop.call_soon_threadsafe(self._callback)
                except RuntimeError:  # the loop is already closed
                    pass
                return previous(signum, frame)

            signal.signal(sig, handler)
            self._installed[sig] = (handler, previous)
        return bool(self._installed)

    def remove(self) -> None:
        """Put the previous handlers back, unless someone replaced ours meanwhile."""
        for sig, (ours, previous) in self._installed.items():
            if signal.getsignal(sig) is ours:
                signal.signal(sig, previous)
        self._installed.clear()
