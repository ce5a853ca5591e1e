"""Tab completion: `!` command names, switch names, sampler names, file paths, LoRA names and
embedding names."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from invoke.line.prompt import NAME_CHARACTER
from invoke.line.samplers import SAMPLERS
from invoke.shell.dispatch import COMMANDS
from invoke.shell.runner import Runner
from invoke.shell.switches import SwitchSpec, switch_specs

Listing = tuple[list[Path], list[str]]  # folders, and the names in them

# A LoRA name being typed in a prompt: `withLora(na` or `<lora:na`.
_LORA_NAME = re.compile(r"(withLora\(|<lora:)([^,:()<>]*)", re.IGNORECASE)
# An embedding's `<name>` being typed, maybe inside a weighted group: `(<na`.
_EMBEDDING_NAME = re.compile(rf"[(\[]*<({NAME_CHARACTER}*)")


class ShellCompleter(Completer):
    def __init__(self, runner: Runner | None = None) -> None:
        self.runner = runner
        self.paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event: CompleteEvent):
        before = document.text_before_cursor
        if before.lstrip().startswith("!"):
            word = document.get_word_before_cursor(WORD=True)
            earlier = before[: len(before) - len(word)].split()
            yield from self._command(before.lstrip(), word, earlier, complete_event)
            return
        yield from self._line(document, complete_event)

    def _line(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        """What a command line completes to (after `!dream` and `!fix FILE` too: what follows
        them is a line, never another `!` command, so this does not recurse)."""
        before = document.text_before_cursor
        word = document.get_word_before_cursor(WORD=True)
        earlier = before[: len(before) - len(word)].split()
        lora = _LORA_NAME.fullmatch(word)
        if lora is not None:
            yield from _choices(
                lora.group(2), self._names(lambda runner: runner.loras()), start=-len(lora.group(2))
            )
            return
        embedding = _EMBEDDING_NAME.fullmatch(word)
        if embedding is not None:
            typed = embedding.group(1)
            names = [f"{name}>" for name in self._names(lambda runner: runner.embeddings())]
            yield from _choices(typed, names, start=-len(typed))
            return
        specs = switch_specs()
        if word.startswith("-"):
            attached = _attached_sampler(word, specs)
            if attached is not None:
                yield from _choices(attached, SAMPLERS, start=-len(attached))
                return
            yield from _switches(word, specs)
            return
        kind = _kind_after(earlier[-1], specs) if earlier else None
        if kind == "sampler":
            yield from _choices(word, SAMPLERS, start=-len(word))
        elif kind == "path":
            yield from self._path(word, complete_event)
        elif kind == "seed":
            yield from _choices(word, self._seeds(), start=-len(word))
        elif kind == "controlnet":
            yield from _choices(
                word, self._names(lambda runner: runner.controlnets()), start=-len(word)
            )
        elif kind == "ip_adapter":
            yield from _choices(
                word, self._names(lambda runner: runner.ip_adapters()), start=-len(word)
            )
        elif kind == "model":
            yield from _choices(
                word, [] if self.runner is None else self.runner.model_names(), start=-len(word)
            )
        elif kind == "upscaler":
            yield from _choices(
                word, self._names(lambda runner: runner.upscalers()), start=-len(word)
            )

    def _seeds(self) -> list[str]:
        """This session's seeds, newest first (none without a runner)."""
        if self.runner is None:
            return []
        return list(dict.fromkeys(str(seed) for seed in reversed(self.runner.recent_seeds())))

    def _names(self, listing: Callable[[Runner], Listing]) -> list[str]:
        """Names in a folder of files a line can name: `listing` is `Runner.loras`,
        `Runner.embeddings`, `Runner.controlnets`, `Runner.ip_adapters` or `Runner.upscalers` (none
        without a runner)."""
        return [] if self.runner is None else listing(self.runner)[1]

    def _command(self, line: str, word: str, earlier: list[str], event: CompleteEvent):
        if not earlier:  # still typing the command name
            for cmd in COMMANDS.values():
                name = "!" + ("" if cmd.name == "NN" else cmd.name)
                if cmd.name != "NN" and name.startswith(word):
                    yield Completion(name, start_position=-len(word), display_meta=cmd.help)
            return
        cmd = COMMANDS.get(earlier[0][1:])
        if cmd is None or cmd.complete is None:
            if cmd is not None and cmd.name == "dream":
                # `!dream LINE` completes like the line itself
                rest = line[len(earlier[0]) :].lstrip()
                yield from self._line(Document(rest, len(rest)), event)
            return
        if cmd.complete == "path+line" and len(earlier) > 1:
            # past the file: the rest completes as a command line does (switches, samplers)
            rest = line[len(earlier[0]) :].lstrip()
            yield from self._line(Document(rest, len(rest)), event)
        elif cmd.complete in ("path", "path+line"):
            yield from self._path(word, event)
        elif callable(cmd.complete) and self.runner is not None:
            yield from _choices(word, sorted(cmd.complete(self.runner)), start=-len(word))

    def _path(self, word: str, event: CompleteEvent) -> Iterable[Completion]:
        # Quotes a user opened around a path are not part of the file name.
        quote = word[:1] if word[:1] in "'\"" else ""
        path = word[len(quote) :]
        yield from self.paths.get_completions(Document(path, len(path)), event)


def _names(specs: list[SwitchSpec]) -> set[str]:
    return {name for spec in specs for name in spec.names}


def _switches(word: str, specs: list[SwitchSpec]) -> Iterable[Completion]:
    for spec in specs:
        for name in spec.names:
            if name.startswith(word):
                yield Completion(name, start_position=-len(word), display_meta=spec.help)


def _kind_after(previous: str, specs: list[SwitchSpec]) -> str | None:
    for spec in specs:
        if previous in spec.names and spec.metavar:
            return spec.complete
    return None


def _attached_sampler(word: str, specs: list[SwitchSpec]) -> str | None:
    """InvokeAI users write `-Ak_lms`: a short sampler switch with its value glued on."""
    match = re.fullmatch(r"(-[A-Za-z])(\w+)", word)
    if match is None or word in _names(specs):
        return None
    if _kind_after(match.group(1), specs) != "sampler":
        return None
    return match.group(2)


def _choices(word: str, choices: Iterable[str], start: int) -> Iterable[Completion]:
    for choice in choices:
        if choice.startswith(word):
            yield Completion(choice, start_position=start)
