"""The model commands: !models, !switch, !import_model, !edit_model, !del_model.

They drive the runner's model list (`Runner.model_names`, `switch`, `change_models`, ...).
Changes go to the user's own models.yaml (made from the shipped one on the first change), written
atomically; the shipped file is never touched.

In the interactive shell the commands that change the list ask for each value, showing the
default in brackets (Enter takes it). `--yes`, and any batch (stdin, --from_file, !replay), take
the defaults without asking; `--name`, `--description`, `-W/--width`, `-H/--height` give values
up front, so scripts can import a model in one line:

    !import_model /models/sd15 --name sd-1.5 --description "SD 1.5" --yes
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from invoke.config.libraries import (
    CONTROLNETS,
    EMBEDDINGS,
    IP_ADAPTERS,
    LORAS,
    UPSCALERS,
    Library,
)
from invoke.config.models_yaml import (
    CHECKPOINT_SUFFIXES,
    HUB_ID,
    MODEL_NAME,
    MODEL_NAME_RULE,
    REPO_FILES,
    ModelEntry,
    ModelsFileError,
    hub_snapshot,
    unique_model_name,
)
from invoke.config.settings import SIZE_MULTIPLE
from invoke.errors import InvokeError
from invoke.shell.dispatch import ShellContext, command, printable
from invoke.shell.runner import Runner

T = TypeVar("T")
ASK_TRIES = 3  # wrong answers in a row before the command gives up
AUTO = "auto"  # a size left to the model: not written to models.yaml


def model_names(runner: Runner) -> Iterable[str]:
    """Tab completion after !switch, !edit_model, !del_model."""
    return runner.model_names()


# -- arguments and questions ----------------------------------------------------------------------

OPTIONS = {
    "--name": "name",
    "--description": "description",
    "-W": "width",
    "--width": "width",
    "-H": "height",
    "--height": "height",
}


@dataclass
class Args:
    words: list[str] = field(default_factory=list)  # the words that are not options
    yes: bool = False
    given: dict[str, str] = field(default_factory=dict)  # --name etc.: answers given up front


def _parse_args(name: str, args: str, usage: str, options: Iterable[str] = ()) -> Args:
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise InvokeError(f"!{name}: {args.strip()} has {exc}; usage: {usage}") from exc
    parsed = Args()
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-y", "--yes"):
            parsed.yes = True
        elif word in OPTIONS and OPTIONS[word] in options:
            if i + 1 >= len(words):
                raise InvokeError(f"!{name}: {word} needs a value; usage: {usage}")
            parsed.given[OPTIONS[word]] = words[i + 1]
            i += 1
        elif word.startswith("-") and len(word) > 1 and not Path(word).exists():
            raise InvokeError(f"!{name}: unknown option {word}; usage: {usage}")
        else:
            parsed.words.append(word)
        i += 1
    if len(parsed.words) != 1:
        got = "nothing" if not parsed.words else f"{len(parsed.words)} words"
        raise InvokeError(f"!{name}: takes one {usage.split()[1]}, got {got}; usage: {usage}")
    return parsed


def _read_answer(question: str) -> str:
    """One line from the terminal the shell reads (prompt_toolkit's current input)."""
    from prompt_toolkit import PromptSession

    return PromptSession().prompt(question)


def _ask(
    ctx: ShellContext,
    cmd: str,
    args: Args,
    key: str,
    question: str,
    default: str,
    check: Callable[[str], T],
) -> T:
    """The answer for `key`: given as an option, else asked (Enter = default), else the default
    when the command may not ask (--yes, batches). A bad answer is asked again."""
    if key in args.given:
        return check(args.given[key])
    if args.yes or not ctx.interactive:
        return check(default)
    for attempt in range(ASK_TRIES):
        try:
            answer = _read_answer(f"{question} [{default}]: ").strip()
        except (KeyboardInterrupt, EOFError) as exc:
            raise InvokeError(f"!{cmd}: cancelled; models.yaml is unchanged") from exc
        try:
            return check(answer or default)
        except InvokeError as exc:
            if attempt == ASK_TRIES - 1:
                raise
            ctx.err(printable(str(exc)))
    raise AssertionError("unreachable")


def _name_check(cmd: str, taken: Iterable[str]) -> Callable[[str], str]:
    used = set(taken)

    def check(text: str) -> str:
        if not MODEL_NAME.fullmatch(text):
            raise InvokeError(f"!{cmd}: name {text!r}: use {MODEL_NAME_RULE}")
        if text in used:
            raise InvokeError(f"!{cmd}: a model named {text} exists; choose another name")
        return text

    return check


def _description_check(text: str) -> str:
    return " ".join(text.split())  # one line in models.yaml and in !models


def _size_check(cmd: str, side: str) -> Callable[[str], int | None]:
    def check(text: str) -> int | None:
        if text.strip().lower() == AUTO:
            return None
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < SIZE_MULTIPLE or value % SIZE_MULTIPLE:
            raise InvokeError(
                f"!{cmd}: {side} {text!r} must be a positive multiple of {SIZE_MULTIPLE} "
                f"(e.g. 512), or {AUTO} for the model's own size"
            )
        return value

    return check


def _ask_size(
    ctx: ShellContext, cmd: str, args: Args, current: ModelEntry | None
) -> dict[str, int | None]:
    sizes: dict[str, int | None] = {}
    for side in ("width", "height"):
        now = getattr(current, side) if current is not None else None
        default = str(now) if now else AUTO
        question = f"{side.capitalize()} in pixels ({AUTO} = the model's own)"
        sizes[side] = _ask(ctx, cmd, args, side, question, default, _size_check(cmd, side))
    return sizes


def _change(ctx: ShellContext, runner: Runner, change: Callable[[dict[str, Any]], None]) -> Path:
    """Write models.yaml; a file broken by hand meanwhile is reported one line per problem."""
    try:
        return runner.change_models(change)
    except ModelsFileError as exc:
        *earlier, last = str(exc).splitlines()
        for line in earlier:
            ctx.err(printable(line))
        raise InvokeError(last) from exc


def _set_fields(body: dict[str, Any], values: dict[str, Any]) -> None:
    """Put values into a models.yaml entry; None removes the key (the model's own value)."""
    for key, value in values.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value


# -- the commands ---------------------------------------------------------------------------------


@command("models", "!models", "List the models of models.yaml: name, status, description.")
def _models(ctx: ShellContext, args: str) -> None:
    runner = ctx.runner
    names = runner.model_names()
    width = max(len(n) for n in names)
    ctx.out(f"models in {runner.models_file_name()} (* = active):")
    for name in names:
        entry = runner.model_entry(name)
        mark = "*" if name == runner.entry.name else " "
        about = entry.description or entry.source
        if not entry.listed:
            about += " (from --model, not in models.yaml)"
        ctx.out(printable(f"{mark} {name:<{width}}  {runner.model_state(name):<10}  {about}"))


def _folder_command(
    listing: str,
    listed: Callable[[Runner], tuple[list[Path], list[str]]],
    library: Library,
    use: str,
) -> None:
    """Register `!<listing>`: the names in a folder of files a prompt can name, from the
    runner's `listed` folders and names (Runner.loras, .embeddings, .controlnets, .upscalers)."""
    what = library.what

    def handler(ctx: ShellContext, args: str) -> None:
        folders, names = listed(ctx.runner)
        if not names:
            stored = library.stored_as or f".safetensors {what}s"
            launch = f", or launch with {library.option} DIR"
            ctx.out(printable(f"no {what} files in {folders[0]}: put {stored} there{launch}"))
            return
        where = " and ".join(str(f) for f in folders)
        ctx.out(printable(f"{what}s in {where} (use as {use}):"))
        for name in names:
            ctx.out(printable(f"  {name}"))

    command(listing, f"!{listing}", f"List the {what}s {use} in a prompt can name.")(handler)


_folder_command(
    "loras", lambda runner: runner.loras(), LORAS, "withLora(NAME, 0.8) or <lora:NAME:0.8>"
)
_folder_command("embeddings", lambda runner: runner.embeddings(), EMBEDDINGS, "<NAME>")
_folder_command(
    "controlnets",
    lambda runner: runner.controlnets(),
    CONTROLNETS,
    "--controlnet NAME --control_image FILE",
)
_folder_command(
    "ip_adapters",
    lambda runner: runner.ip_adapters(),
    IP_ADAPTERS,
    "--ip_adapter NAME --ip_image FILE",
)
_folder_command(
    "upscalers", lambda runner: runner.upscalers(), UPSCALERS, "-U FACTOR --upscaler NAME"
)


@command(
    "switch",
    "!switch NAME",
    "Make NAME (from !models) the active model; loaded ones switch at once.",
    complete=model_names,
)
def _switch(ctx: ShellContext, args: str) -> None:
    runner = ctx.runner
    name = _parse_args("switch", args, "!switch NAME").words[0]
    entry = runner.switch(name)
    ctx.out(f"active model: {entry.name}")


IMPORT_USAGE = "!import_model PATH|OWNER/NAME [--name N] [--description D] [-W W] [-H H] [--yes]"


@command(
    "import_model",
    IMPORT_USAGE,
    "Add a diffusers folder, a .safetensors/.ckpt file or a Hugging Face repo id already in the "
    "local cache to your models.yaml (asks name, description, size; --yes takes the defaults).",
    complete="path",
)
def _import_model(ctx: ShellContext, args: str) -> None:
    cmd = "import_model"
    runner = ctx.runner
    parsed = _parse_args(cmd, args, IMPORT_USAGE, ("name", "description", "width", "height"))
    source = _import_source(parsed.words[0])
    names = runner.model_names()
    for name in names:
        entry = runner.model_entry(name)
        if entry.listed and source.value in (str(entry.path), str(entry.file), entry.repo_id):
            raise InvokeError(f"!{cmd}: {source.value} is already listed as {name} (see !models)")
    name = _ask(
        ctx,
        cmd,
        parsed,
        "name",
        "Name for the model",
        unique_model_name(source.base, names),
        _name_check(cmd, names),
    )
    description = _ask(
        ctx,
        cmd,
        parsed,
        "description",
        "Description",
        f"{name}, imported from {source.short}",
        _description_check,
    )
    body: dict[str, Any] = {"description": description, source.key: source.value}
    _set_fields(body, _ask_size(ctx, cmd, parsed, None))
    if ctx.dry_run:
        ctx.out(f"--dry-run: would add {name} ({source.value}); nothing written")
        return

    def add(raw: dict[str, Any]) -> None:
        if name in raw:
            raise InvokeError(f"!{cmd}: a model named {name} exists; choose another name")
        raw[name] = body

    written = _change(ctx, runner, add)
    ctx.out(f"added {name} to {written}; !switch {name} to use it")


@dataclass(frozen=True)
class _Source:
    """What !import_model adds: the models.yaml key (path, file or repo_id) and its value."""

    key: str
    value: str

    @property
    def short(self) -> str:
        """The folder's or the file's own name, or the repo id."""
        return self.value if self.key == "repo_id" else Path(self.value).name

    @property
    def base(self) -> str:
        """What the model is called unless the user says otherwise."""
        if self.key == "repo_id":
            return self.value.rpartition("/")[2]
        return Path(self.value).stem if self.key == "file" else self.short


def _import_source(word: str) -> _Source:
    """What `!import_model WORD` adds: a local folder or file (`path:`, `file:`), else a hub id
    (`repo_id:`) whose repo is in the local Hugging Face cache. Nothing is downloaded."""
    url = URL.match(word)
    if url:
        raise InvokeError(_url_refusal(word, url.group("host"), url.group("rest")))
    where = Path(word).expanduser()
    if not where.exists() and HUB_ID.fullmatch(word):
        # hub_snapshot's "not in the cache" says how to download it (`hf download`) and come back
        again = f", then !import_model {word} again"
        folder = hub_snapshot(word, "!import_model", REPO_FILES, then=again)
        if not (folder / "model_index.json").is_file():
            raise InvokeError(
                f"!import_model: {word} in the local Hugging Face cache ({folder}) is not a "
                f"diffusers model (no model_index.json); import its .safetensors file by path"
            )
        return _Source("repo_id", word)
    where = where.resolve()
    if where.is_dir():
        if not (where / "model_index.json").is_file():
            raise InvokeError(
                f"!import_model: {where} is not a diffusers model folder (no model_index.json); "
                f"give such a folder or a .safetensors/.ckpt file"
            )
        return _Source("path", str(where))
    if where.is_file():
        if where.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise InvokeError(
                f"!import_model: {where.name} is not a checkpoint; give a diffusers folder or a "
                f"{', '.join(CHECKPOINT_SUFFIXES)} file"
            )
        return _Source("file", str(where))
    raise InvokeError(
        f"!import_model: {where} does not exist; give a diffusers folder, a .safetensors/.ckpt "
        f"file or a Hugging Face repo id (owner/name)"
    )


URL = re.compile(r"(?i)[a-z][a-z0-9+.-]*://(?P<host>[^/]*)(?P<rest>/.*)?")
HUB_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")


def _url_refusal(word: str, host: str, rest: str | None) -> str:
    """invoke works offline: a URL is refused with what to do instead."""
    parts = (rest or "").strip("/").split("/")
    if host.lower() in HUB_HOSTS and len(parts) >= 2 and parts[2:3] in ([], ["tree"]):
        repo = "/".join(parts[:2])  # a repo's page: the repo id is the way in
        return (
            f"!import_model: {word} is a URL, and invoke never downloads; download the repo "
            f"with `hf download {repo}`, then !import_model {repo}"
        )
    return (
        f"!import_model: {word} is a URL, and invoke never downloads; download the file, "
        f"then !import_model PATH"
    )


EDIT_USAGE = "!edit_model NAME [--description D] [-W W] [-H H] [--yes]"


@command(
    "edit_model",
    EDIT_USAGE,
    "Change a model's description and size in your models.yaml (asks; Enter keeps a value).",
    complete=model_names,
)
def _edit_model(ctx: ShellContext, args: str) -> None:
    cmd = "edit_model"
    runner = ctx.runner
    parsed = _parse_args(cmd, args, EDIT_USAGE, ("description", "width", "height"))
    entry = _listed_entry(runner, cmd, parsed.words[0])
    values: dict[str, Any] = {
        "description": _ask(
            ctx, cmd, parsed, "description", "Description", entry.description, _description_check
        )
    }
    values.update(_ask_size(ctx, cmd, parsed, entry))
    now = {"description": entry.description, "width": entry.width, "height": entry.height}
    if values == now:
        ctx.out(f"{entry.name}: nothing changed")
        return
    if ctx.dry_run:
        ctx.out(f"--dry-run: would change {entry.name}; nothing written")
        return

    def edit(raw: dict[str, Any]) -> None:
        body = _raw_entry(raw, cmd, entry.name)
        _set_fields(body, values)
        if not body.get("description"):
            body.pop("description", None)

    written = _change(ctx, runner, edit)
    ctx.out(f"changed {entry.name} in {written}")


@command(
    "del_model",
    "!del_model NAME [--yes]",
    "Remove NAME from your models.yaml (not the active model; its files are kept).",
    complete=model_names,
)
def _del_model(ctx: ShellContext, args: str) -> None:
    cmd = "del_model"
    runner = ctx.runner
    parsed = _parse_args(cmd, args, "!del_model NAME [--yes]")
    entry = _listed_entry(runner, cmd, parsed.words[0])
    if entry.name == runner.entry.name:
        raise InvokeError(f"!{cmd}: {entry.name} is the active model; !switch to another one first")
    if not parsed.yes:
        if not ctx.interactive:
            raise InvokeError(
                f"!{cmd}: deleting {entry.name} needs confirming; add --yes in a batch"
            )
        sure = _ask(
            ctx,
            cmd,
            parsed,
            "confirm",
            f"Remove {entry.name} from {runner.models_file_name()}? Its files are kept (y/n)",
            "n",
            _yes_no,
        )
        if not sure:
            ctx.out(f"{entry.name} kept")
            return
    if ctx.dry_run:
        ctx.out(f"--dry-run: would remove {entry.name}; nothing written")
        return

    def delete(raw: dict[str, Any]) -> None:
        _raw_entry(raw, cmd, entry.name)
        del raw[entry.name]

    written = _change(ctx, runner, delete)
    ctx.out(f"removed {entry.name} from {written} (its files are kept)")
    if entry.default:
        ctx.out("no model says default: true now; the first one is used without --model")


def _yes_no(text: str) -> bool:
    answer = text.strip().lower()
    if answer in ("y", "yes"):
        return True
    if answer in ("n", "no"):
        return False
    raise InvokeError(f"!del_model: answer y or n, not {text!r}")


def _listed_entry(runner: Runner, cmd: str, name: str) -> ModelEntry:
    entry = runner.model_entry(name)
    if not entry.listed:
        raise InvokeError(
            f"!{cmd}: {name} came from --model and is not in models.yaml; "
            f"!import_model {entry.source} to add it"
        )
    return entry


def _raw_entry(raw: dict[str, Any], cmd: str, name: str) -> dict[str, Any]:
    body = raw.get(name)
    if not isinstance(body, dict):  # another process removed it since this shell read the file
        raise InvokeError(f"!{cmd}: {name} is no longer in models.yaml (see !models)")
    return body
