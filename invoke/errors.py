"""Errors the user can act on: each one is a single line naming the thing and what would work.

Front ends print `str(err)` and carry on; nothing else catches these.
"""

from __future__ import annotations


class InvokeError(Exception):
    """Base class: the message is one line, meant for the user as it is."""


class ParseError(InvokeError):
    """A command line that cannot be turned into a request."""

    def __init__(self, switch: str, value: str, allowed: str) -> None:
        self.switch = switch
        self.value = value
        self.allowed = allowed
        super().__init__(f"{switch}: {value} {allowed}" if value else f"{switch}: {allowed}")


class InitImageError(InvokeError):
    """An init image or mask that cannot be used."""


class ModelError(InvokeError):
    """A model that cannot be found, trusted or loaded."""


class OutputError(InvokeError):
    """Results that cannot be written."""


class MetadataError(InvokeError):
    """A PNG whose metadata cannot be read back into a command."""
