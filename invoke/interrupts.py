"""Two-stage stopping for long batches, by Ctrl-C or SIGTERM alike: the first signal asks to stop
after the current image, a second stops at once (and so does the first while the batch waits for
its next line: nothing is being made). Pure: the batch runner arms it, the session looks
at it between images, and holds both signals while a finished picture is written and logged.

Outside a batch, SIGTERM stops at once as a second Ctrl-C would (`Terminated`, a
KeyboardInterrupt), so the same clean-ups run: no temporary file is left, and the pictures made so
far are named. `__main__` installs that with `terminate_like_ctrl_c`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_stop_after_image = threading.Event()
_armed = 0  # nesting depth: `!replay` inside a batch must not disarm the outer batch's handler
_idle = threading.Event()  # the batch waits for its next line: nothing is being made
_stopped_by = ""  # the name of the first signal of the armed batch: "Ctrl-C" or "SIGTERM"
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_STOPPING = {
    "Ctrl-C": "stopping after the current image (Ctrl-C again to stop now)",
    "SIGTERM": "SIGTERM: stopping after the current image (SIGTERM or Ctrl-C again to stop now)",
}


# The exit status after each, by the shell's convention: 128 + the signal's number.
EXIT_STATUS = {"Ctrl-C": 130, "SIGTERM": 143}


class Terminated(KeyboardInterrupt):
    """SIGTERM, stopping at once: caught wherever a Ctrl-C is, then the program ends."""


def which(stop: KeyboardInterrupt) -> str:
    """The signal behind a KeyboardInterrupt, as the user knows it: "SIGTERM" or "Ctrl-C"."""
    return "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"


def stop_requested() -> bool:
    """True once a first Ctrl-C or SIGTERM asked to stop after the image being made."""
    return _stop_after_image.is_set()


def stopped_by() -> str:
    """The signal that asked the batch to stop ("Ctrl-C", "SIGTERM"); "" while none has."""
    return _stopped_by


def _on_terminate(signum: int, frame: object) -> None:
    raise Terminated


def terminate_like_ctrl_c() -> None:
    """SIGTERM raises Terminated (a KeyboardInterrupt) instead of ending the process on the spot,
    so a stop by `kill` keeps what a Ctrl-C keeps. Main thread only (signals are caught there)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_terminate)


@contextmanager
def two_stage(notify: Callable[[str], None]) -> Iterator[None]:
    """While active, the first SIGINT or SIGTERM only sets the flag (and says so); the next one
    raises KeyboardInterrupt (Terminated for SIGTERM). Outside the main thread signals cannot be
    caught: a no-op. Nested uses share the outermost one's handler and flag."""
    global _armed, _stopped_by
    if threading.current_thread() is not threading.main_thread() or _armed:
        yield
        return

    def on_signal(signum: int, frame: object) -> None:
        global _stopped_by
        if _stop_after_image.is_set() or _idle.is_set():
            raise Terminated if signum != signal.SIGINT else KeyboardInterrupt
        _stopped_by = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        _stop_after_image.set()
        # The signal may land while stderr is mid-write (a progress bar): a reentrant write then
        # raises RuntimeError, and losing this notice beats failing the image being made.
        with contextlib.suppress(RuntimeError):
            notify(_STOPPING[_stopped_by])

    previous = {signum: signal.signal(signum, on_signal) for signum in _SIGNALS}
    _armed += 1
    try:
        yield
    finally:
        _armed -= 1
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stop_after_image.clear()
        _stopped_by = ""


@contextmanager
def waiting_for_input() -> Iterator[None]:
    """While a batch waits for its next line (a live producer on stdin), no image is being
    made: the first Ctrl-C or SIGTERM stops at once rather than after an image that may never
    come."""
    _idle.set()
    try:
        yield
    finally:
        _idle.clear()


@contextmanager
def held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done, then act as they would have: the block
    (a picture written, then logged and named) is never cut in two. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        pending.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in pending:
            signal.raise_signal(signum)  # the handler put back acts on it now
