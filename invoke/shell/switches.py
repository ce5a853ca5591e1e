"""The line switches as the shell shows them, read from the parser's table."""

from __future__ import annotations

from dataclasses import dataclass

from invoke.line.table import SWITCHES


@dataclass(frozen=True)
class SwitchSpec:
    """One line switch as the shell shows it: every spelling, its value's name, help, completion."""

    names: tuple[str, ...]  # "-s", "--steps"
    metavar: str  # "" for a flag
    help: str
    complete: str | None  # "path" | "sampler" | None


def switch_specs() -> list[SwitchSpec]:
    """The parser's SWITCHES table (the parser owns it) as help and completion read it."""
    specs = []
    for switch in SWITCHES:
        metavar = switch.metavar if switch.takes_value else ""
        if " " in metavar and not switch.many:
            # "a file path" reads well in errors; help wants one word (`SIDE PIXELS` is two)
            metavar = metavar.split()[-1].upper()
        specs.append(SwitchSpec(switch.names, metavar, switch.help, switch.complete))
    return specs
