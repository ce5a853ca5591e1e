"""The defaults file: launch options the user always wants, one a line, as InvokeAI's
`invokeai.init` (and `~/.invokeai` before it) held them:

    # ~/.config/invoke-dream/invoke.init
    --outdir ~/pictures
    --model sd15
    --steps 30 --sampler k_euler_a

It lives beside the user's models.yaml (settings.defaults_file_path). Its options are the
command line's defaults: click's `default_map`, so an option given on the command line wins and
`--show-config` can tell each value's source. Each line is parsed alone, with the command's own
options, so a mistake is one line naming the file and the line; `~` starts a path in the home
folder, as in a shell.

Nothing here prints: `LaunchCommand` keeps what it read in `ctx.meta`, and `invoke/__main__.py`
says what is wrong or prints `show_config`'s lines.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from invoke.config.user_dir import defaults_file_path, user_config_dir, user_config_origin
from invoke.errors import InvokeError

if TYPE_CHECKING:
    from invoke.config.settings import Settings

MAX_DEFAULTS_FILE = 64_000  # bytes: a defaults file is a few lines
META_KEY = "invoke.defaults"  # where LaunchCommand leaves the Defaults it read, in ctx.meta
# Options that do something rather than set something: never defaults.
NOT_SETTINGS = ("help", "version", "show_config", "from_file", "dry_run", "json_lines")
LINE = "line"  # the command's argument: the command line to run


@dataclass
class Defaults:
    """What the defaults file gave: each option's value and the line it is on."""

    path: Path
    values: dict[str, Any] = field(default_factory=dict)  # parameter name -> value
    lines: dict[str, int] = field(default_factory=dict)  # parameter name -> line number
    problem: str | None = None  # one line naming the file and the line; nothing applies then
    present: bool = False  # there is a file (or something else) at `path`


class LaunchCommand(click.Command):
    """A click command whose defaults come from the defaults file. `check` validates one line's
    values beyond what click checks (the launch defaults of line switches), raising InvokeError."""

    def __init__(
        self, *args: Any, check: Callable[[Mapping[str, Any]], object], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.check = check

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        defaults = read_defaults(self, defaults_file_path())
        extra.setdefault("default_map", defaults.values)
        ctx = super().make_context(info_name, args, parent, **extra)
        ctx.meta[META_KEY] = defaults
        return ctx


def read_defaults(command: LaunchCommand, path: Path) -> Defaults:
    """The defaults file at `path` read and checked line by line (no file: no defaults)."""
    defaults = Defaults(path)
    if not (path.exists() or path.is_symlink()):
        return defaults  # the usual case: nothing more to import or read
    from invoke.reading import read_file  # (refuses a folder, a FIFO, a device; caps the size)

    defaults.present = True
    try:
        data = read_file(path, str(path), MAX_DEFAULTS_FILE, "a defaults file is a few lines")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvokeError(f"{path}: not UTF-8 text") from exc
        for number, line in enumerate(text.splitlines(), 1):
            try:
                values = _line_values(command, line)
            except InvokeError as exc:
                raise InvokeError(f"{path}:{number}: {exc}") from exc
            defaults.values.update(values)
            defaults.lines.update(dict.fromkeys(values, number))
    except InvokeError as exc:
        return Defaults(path, problem=str(exc), present=True)
    return defaults


def _line_values(command: LaunchCommand, line: str) -> dict[str, Any]:
    """The options one line of the file sets, parsed by the command itself."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:  # an unclosed quote
        raise InvokeError(f"{line.strip()}: {str(exc).lower()}; close the quote") from exc
    if not words:
        return {}
    options = {name: param for param in command.params for name in _names(param)}
    actions = [name for name, param in options.items() if param.name in NOT_SETTINGS]
    actions += command.context_settings.get("help_option_names", ["--help"])
    for word in words:
        if word.split("=", 1)[0] in actions:
            raise InvokeError(f"{word} is not a setting; give it on the command line")
    try:
        ctx = click.Command.make_context(command, "invoke", words, resilient_parsing=False)
    except click.ClickException as exc:
        raise InvokeError(exc.format_message()) from exc
    if ctx.params.get(LINE):
        raise InvokeError(_not_an_option(ctx.params[LINE], options))
    command.check(ctx.params)
    return {
        name: value.expanduser() if isinstance(value, Path) else value
        for name, value in ctx.params.items()
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }


def _names(param: click.Parameter) -> list[str]:
    return [*param.opts, *param.secondary_opts] if isinstance(param, click.Option) else []


def _not_an_option(rest: tuple[str, ...], options: Mapping[str, click.Parameter]) -> str:
    """What is wrong with the words click took for the command line to run."""
    word = rest[0]
    if not word.startswith("-"):
        return (
            f"{shlex.join(rest)} is not a launch option: only those go here (--outdir DIR, "
            "--model NAME, ...); a command line to run goes on the command line"
        )
    near = difflib.get_close_matches(word.split("=", 1)[0], list(options), n=1)
    hint = f"did you mean {near[0]}?" if near else "see invoke --help"
    return f"unknown launch option {word}; {hint}"


# -- invoke --show-config -------------------------------------------------------------------------


def show_config(ctx: click.Context, settings: Settings) -> list[str]:
    """Where invoke reads its settings from, then each launch setting with its value and where
    that value came from: the default, the defaults file (file:line) or the command line."""
    defaults: Defaults = ctx.meta[META_KEY]
    origin = user_config_origin()
    count = f"{len(defaults.values)} settings" if defaults.present else "none there"
    lines = [
        f"config folder  {user_config_dir()}  ({f'${origin}' if origin else 'the default'})",
        f"defaults file  {defaults.path}  ({count})",
        f"models.yaml    {_models_file(settings)}",
        "",
    ]
    rows = [("setting", "from", "value")]
    for param in ctx.command.params:
        if isinstance(param, click.Option) and param.name not in NOT_SETTINGS:
            name = param.name or ""
            long = next((o for o in param.opts if o.startswith("--")), param.opts[0])
            rows.append((long, _source(ctx, name, defaults), _shown(param, ctx.params.get(name))))
    width = [max(len(row[i]) for row in rows) for i in (0, 1)]
    lines += [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}".rstrip() for a, b, c in rows]
    return lines


def _models_file(settings: Settings) -> str:
    """The models.yaml in use, and why that one."""
    from invoke.config.models_yaml import SHIPPED_CONFIG, config_path

    try:
        used = config_path(settings)
    except InvokeError as exc:
        return str(exc)
    if used is None:
        return "none (the embedded model only)"
    if settings.config is not None:
        return f"{used}  (--config)"
    return f"{used}  ({'the shipped list' if used == SHIPPED_CONFIG else 'your copy'})"


def _shown(param: click.Option, value: Any) -> str:
    """A value as the user would type it; an unset one as --help describes its default."""
    if value is None:
        described = (param.help or "").rpartition("[")[2].partition("]")[0]
        return f"[{described}]" if described else "[unset]"
    if param.is_flag and isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _source(ctx: click.Context, name: str, defaults: Defaults) -> str:
    source = ctx.get_parameter_source(name)
    if source == ParameterSource.DEFAULT_MAP and name in defaults.lines:
        return f"{defaults.path.name}:{defaults.lines[name]}"
    if source == ParameterSource.COMMANDLINE:
        return "command line"
    return "default"
