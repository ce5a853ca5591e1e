"""Two-stage Ctrl-C for long batches: the first asks to stop after the current image, a second
stops at once (and so does the first while the batch waits for its next line: nothing is being
made). Pure: the batch runner arms it, the session looks at it between images."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_stop_after_image = threading.Event()
_armed = 0  # nesting depth: `!replay` inside a batch must not disarm the outer batch's handler
_idle = threading.Event()  # the batch waits for its next line: nothing is being made


def stop_requested() -> bool:
    """True once a first Ctrl-C asked to stop after the image being made."""
    return _stop_after_image.is_set()


@contextmanager
def two_stage(notify: Callable[[str], None]) -> Iterator[None]:
    """While active, the first SIGINT only sets the flag (and says so); the next one raises
    KeyboardInterrupt as usual. Outside the main thread signals cannot be caught: a no-op.
    Nested uses share the outermost one's handler and flag."""
    global _armed
    if threading.current_thread() is not threading.main_thread() or _armed:
        yield
        return

    def on_interrupt(signum: int, frame: object) -> None:
        if _stop_after_image.is_set() or _idle.is_set():
            raise KeyboardInterrupt
        _stop_after_image.set()
        # The signal may land while stderr is mid-write (a progress bar): a reentrant write then
        # raises RuntimeError, and losing this notice beats failing the image being made.
        with contextlib.suppress(RuntimeError):
            notify("stopping after the current image (Ctrl-C again to stop now)")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    _armed += 1
    try:
        yield
    finally:
        _armed -= 1
        signal.signal(signal.SIGINT, previous)
        _stop_after_image.clear()


@contextmanager
def waiting_for_input() -> Iterator[None]:
    """While a batch waits for its next line (a live producer on stdin), no image is being
    made: the first Ctrl-C stops at once rather than after an image that may never come."""
    _idle.set()
    try:
        yield
    finally:
        _idle.clear()
