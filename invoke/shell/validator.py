"""Switch errors shown under the line while it is typed, before Enter sends it anywhere."""

from __future__ import annotations

import re

from prompt_toolkit.document import Document
from prompt_toolkit.validation import ValidationError, Validator

from invoke.errors import InvokeError, ParseError
from invoke.line import sweep
from invoke.line.parse import parse_fix, parse_line
from invoke.line.request import Request
from invoke.shell.dispatch import is_help_request


class LineValidator(Validator):
    """Runs the real parser on the line; a ParseError becomes the message at the bad switch.

    `!` commands are left alone (their arguments are checked when they run), except `!dream`,
    which is a command line like any other, and `!fix FILE`, which is one after its file.
    """

    def validate(self, document: Document) -> None:
        text = document.text
        if is_help_request(text):  # `-h` asks for help; it is not a misspelt -H
            return
        head = text.lstrip()
        fix = re.match(r"!fix(\s|$)", head)
        if head.startswith("!") and not fix and not re.match(r"!dream(\s|$)", head):
            return
        try:
            if fix:
                parse_fix(head[fix.end() :])  # the file's existence is checked on Enter
            else:
                parsed = parse_line(text)
                if isinstance(parsed, Request):
                    sweep.check(parsed)  # an unclosed `{`, a sweep past its bound
        except ParseError as exc:
            raise ValidationError(error_position(text, exc), str(exc)) from exc
        except InvokeError as exc:
            raise ValidationError(len(text), str(exc)) from exc
        except Exception:
            # A parser bug must not lock the user out of Enter: the line goes through and the
            # shell reports the same exception as one line after it.
            return


def error_position(text: str, exc: ParseError) -> int:
    """Where the cursor goes for a ParseError: the last place the offending switch was typed."""
    spellings = re.findall(r"--?[A-Za-z][\w-]*", exc.switch or "")
    best = -1
    for spelling in spellings:
        # Short switches may carry their value glued on (-S42, -Ak_lms); long ones may not.
        tail = r"(?=[\s=]|$)" if spelling.startswith("--") or len(spelling) > 2 else ""
        for match in re.finditer(r"(?<!\S)" + re.escape(spelling) + tail, text):
            best = max(best, match.start())
    if best >= 0:
        return best
    if exc.value and exc.value in text:
        return text.rindex(exc.value)
    return len(text)
