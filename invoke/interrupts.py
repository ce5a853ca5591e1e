"""Two-stage Ctrl-C for long batches: the first asks to stop after the current image, a second
stops at once. Pure: the batch runner arms it, the session looks at it between images."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_stop_after_image = threading.Event()


def stop_requested() -> bool:
    """True once a first Ctrl-C asked to stop after the image being made."""
    return _stop_after_image.is_set()


@contextmanager
def two_stage(notify: Callable[[str], None]) -> Iterator[None]:
    """While active, the first SIGINT only sets the flag (and says so); the next one raises
    KeyboardInterrupt as usual. Outside the main thread signals cannot be caught: a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(signum: int, frame: object) -> None:
        if _stop_after_image.is_set():
            raise KeyboardInterrupt
        _stop_after_image.set()
        notify("stopping after the current image (Ctrl-C again to stop now)")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _stop_after_image.clear()
