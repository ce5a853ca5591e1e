"""!help: the switches and the ! commands, grouped, each switch with its default here, wrapped to
the terminal (words are never cut), paged when longer than the screen; `!help -f` or
`!help !fetch` shows one entry.

The entries come from the switch table (line/table.py, via switches.py) and the command registry
(dispatch.py); the defaults from the runner (config/shown_defaults.py, the one home the docs
read too). Only the grouping lives here.
"""

from __future__ import annotations

import textwrap

from invoke.errors import InvokeError
from invoke.line.switches import closest
from invoke.line.table import SWITCHES
from invoke.shell import batch  # noqa: F401 - registers !replay, which !help follows
from invoke.shell.dispatch import COMMANDS, QUIT_WORDS, Command, ShellContext, command
from invoke.shell.switches import SwitchSpec, switch_specs

# (title, the switches' fields, the commands' names), in the order !help shows them. A switch or
# command in no group is shown under "Other" (tests/test_shell.py keeps that group empty).
GROUPS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        'Generation: PROMPT [SWITCHES], e.g. "a red circle" -s 20 -S 42',
        (
            "steps",
            "seed",
            "iterations",
            "width",
            "height",
            "cfg_scale",
            "sampler",
            "hires_fix",
            "variation_amount",
            "with_variations",
            "seamless",
            "seamless_axes",
            "log_tokenization",
            "skip_normalize",
        ),
        ("dream",),
    ),
    (
        "img2img, inpainting and outcrop: start from a picture",
        (
            "init_img",
            "strength",
            "fit",
            "init_mask",
            "invert_mask",
            "outcrop",
            "latents",
            "save_latents",
        ),
        ("fix",),
    ),
    (
        "ControlNet, image prompts and upscaling",
        (
            "controlnet",
            "control_image",
            "control_processor",
            "control_weight",
            "control_start",
            "control_end",
            "ip_adapter",
            "ip_image",
            "ip_weight",
            "upscale",
            "upscaler",
        ),
        (),
    ),
    (
        "Models and add-ons",
        ("refiner", "refiner_start"),
        (
            "models",
            "switch",
            "import_model",
            "edit_model",
            "del_model",
            "loras",
            "embeddings",
            "controlnets",
            "ip_adapters",
            "upscalers",
        ),
    ),
    (
        "Files and outputs",
        ("outdir", "grid", "fnformat", "png_compression", "save_intermediates", "intermediates"),
        ("fetch", "replay"),
    ),
    ("Shell", (), ("history", "NN", "search", "clear", "help")),
)
SWEEPS = (
    "A sweep: {red|blue} in the prompt is one line per alternative (groups combine, the first "
    "slowest), -S 1,2 one per seed, -I 'dir/*.png' one per file; at most 1000 pictures a line."
)
QUIT_ENTRY = (", ".join([*QUIT_WORDS, "Ctrl-D"]), "Leave the shell.")
NAME_COLUMN = 28  # an entry's help starts here, or on the next line when its name is longer
HELP_INDENT = 6  # where a help that does not fit beside its name goes
# Help beside the names only with this much room for it (a hub id is 40 characters); on a
# narrower screen every help goes under its name.
WIDE_HELP = 44


@command(
    "help",
    "!help [SWITCH | !COMMAND]",
    "Show the switches, each with its default here, and the ! commands; with a switch (-f, "
    "--strength) or a command (!fetch), that one entry. Also -h, --help, help or ? alone.",
    after="replay",  # where !help has always been listed
)
def _help(ctx: ShellContext, args: str) -> None:
    wanted = args.strip()
    defaults = ctx.runner.line_defaults()
    if wanted:
        for line in entry_lines(wanted, defaults, ctx.columns):
            ctx.out(line)
        return
    ctx.page(help_lines(defaults, ctx.columns))


def help_lines(defaults: dict[str, str] | None = None, width: int = 80) -> list[str]:
    """All of !help: each group's switches and commands, wrapped to `width` columns."""
    defaults = defaults or {}
    specs = {switch.field: spec for switch, spec in zip(SWITCHES, switch_specs(), strict=True)}
    placed_fields = {f for _, fields, _ in GROUPS for f in fields}
    placed_names = {n for _, _, names in GROUPS for n in names}
    groups = [*GROUPS]
    other_fields = tuple(f for f in specs if f not in placed_fields)
    other_names = tuple(n for n in COMMANDS if n not in placed_names)
    if other_fields or other_names:
        groups.append(("Other", other_fields, other_names))
    lines: list[str] = []
    for title, fields, names in groups:
        lines += _wrap(title, width, "", "  ")
        if title == GROUPS[0][0]:
            lines += _wrap(SWEEPS, width, "  ", "    ")
        for field in fields:
            spec = specs[field]
            help_text = spec.help
            if spec.metavar and field in defaults:  # a flag's default is plainly off
                help_text += f" [default: {defaults[field]}]"
            lines += _entry(_switch_name(spec), help_text, width)
        for name in names:
            if name in COMMANDS:
                lines += _entry(COMMANDS[name].usage, COMMANDS[name].help, width)
        if title == "Shell":
            lines += _entry(*QUIT_ENTRY, width)
        lines.append("")
    hint = "!help -f (any switch) or !help !fetch (any command) shows one entry."
    return lines + _wrap(hint, width, "", "")


def entry_lines(wanted: str, defaults: dict[str, str], width: int = 80) -> list[str]:
    """One switch (any of its spellings) or one ! command (with or without its `!`), in full."""
    for switch, spec in zip(SWITCHES, switch_specs(), strict=True):
        if wanted in spec.names or wanted.lstrip("-") == switch.field:
            value = switch.expects if switch.takes_value else "none (a flag)"
            lines = [_switch_name(spec)]
            for label, text in (
                ("", spec.help),
                ("value: ", value),
                ("default: ", defaults.get(switch.field, "")),
            ):
                if text:
                    lines += _wrap(label + text, width, "    ", "      ")
            return lines
    found = _find_command(wanted)
    if found is not None:
        return [*_wrap(found.usage, width, "", "    "), *_wrap(found.help, width, "    ", "    ")]
    raise InvokeError(f"!help: {wanted} is not a switch or a ! command{_suggestion(wanted)}")


def _find_command(wanted: str) -> Command | None:
    name = wanted.removeprefix("!")
    if name.isascii() and name.isdigit():
        name = "NN"
    return COMMANDS.get(name)


def _suggestion(wanted: str) -> str:
    known = [name for spec in switch_specs() for name in spec.names]
    known += [f"!{name}" for name in COMMANDS if name != "NN"]
    close = closest(wanted, known)
    if close is None:
        return "; !help lists them all"
    return f"; did you mean !help {close}?"


def _switch_name(spec: SwitchSpec) -> str:
    return ", ".join(spec.names) + (f" {spec.metavar}" if spec.metavar else "")


def _entry(name: str, help_text: str, width: int) -> list[str]:
    """`  NAME   help...` with the help wrapped beside the name, or below a name too long."""
    if len(name) + 4 <= NAME_COLUMN and width >= NAME_COLUMN + WIDE_HELP:
        first = f"  {name:<{NAME_COLUMN - 2}}"
        return _wrap(help_text, width, first, " " * NAME_COLUMN)
    lines = _wrap(name, width, "  ", "    ")
    return lines + _wrap(help_text, width, " " * HELP_INDENT, " " * HELP_INDENT)


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    """Words never cut: a word longer than the line overflows it rather than being split."""
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [first.rstrip()]
