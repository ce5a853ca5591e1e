"""Key bindings the shell adds to prompt_toolkit's defaults."""

from __future__ import annotations

from prompt_toolkit.application.current import get_app
from prompt_toolkit.filters import Condition
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent


@Condition
def _line_has_error() -> bool:
    return get_app().current_buffer.validation_error is not None


def shell_key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("enter", filter=_line_has_error)
    def _to_the_error(event: KeyPressEvent) -> None:
        # The validator already flagged this line while it was typed, so prompt_toolkit would
        # refuse Enter without moving the cursor; take the cursor to the offending switch.
        buffer = event.current_buffer
        error = buffer.validation_error
        if error is not None:
            buffer.cursor_position = min(max(0, error.cursor_position), len(buffer.text))

    return bindings
