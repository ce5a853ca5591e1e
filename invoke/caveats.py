"""What a line will do that the person would not expect, said before the work starts (before the
model loads, and in a --dry-run): a picture far larger than the model's own size, and words the
model never learned.

Nothing here draws or loads a model: it reads the init image's header and the model folder's
training.json (where a model that ships its vocabulary keeps it: the default model does).

When the size is far larger. A model draws best at its own size; a side more than twice the
model's is "far": the UNet's view then covers less than half the picture, so it repeats its
subject in tiles, and the time grows with the pixels (an 8x side is 64x the work). Up to twice
the side is a size people choose on purpose (768 or 1024 on a 512 model): no note for that.

Whom it tells:
- an init image used at its own size (no --fit) that is far larger: every line, with the --fit
  line that would draw at the model's size (the image chose the size, not the person);
- -W/-H (on the line, in the launch options or the defaults file; with --fit, the box) far
  larger: once per model and size in a session (the person chose that size; once is enough),
  and not with --hires_fix (which draws at the model's size first: made for this);
- --outcrop: never (the canvas is the image's size plus what the person added).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from invoke.errors import InvokeError
from invoke.images import fitted_size, init_image_size
from invoke.line.prompt import TRIGGER, Prompt
from invoke.line.request import Request

FAR = 2  # a side more than this many times the model's is far larger

Size = tuple[int, int]


def times(size: Size, native: Size) -> float:
    """How many times the model's size `size` is, on its larger side."""
    return max(size[0] / native[0], size[1] / native[1])


def is_far(size: Size, native: Size) -> bool:
    return times(size, native) > FAR


@dataclass(frozen=True)
class Model:
    """What the caveats need of the active model, known without loading it."""

    name: str
    native: Size
    multiple: int  # pixels per latent cell: sizes round down to it


def size_caveat(line: Request, resolved: Request, init: Path | None, model: Model) -> str | None:
    """The note for a line whose init image, used at its own size, is far larger than the model's
    (None when it is not, with --fit or with --outcrop)."""
    if init is None or resolved.fit or resolved.outcrop:
        return None
    own = init_image_size(init, 1)
    drawn = (own[0] - own[0] % model.multiple, own[1] - own[1] % model.multiple)
    if not is_far(drawn, model.native):
        return None
    box = (resolved.width or model.native[0], resolved.height or model.native[1])
    suggested = replace(line, fit=True)
    if is_far(box, model.native):  # its -W/-H would make the --fit box far larger too
        box, suggested = model.native, replace(suggested, width=None, height=None)
    fitted = fitted_size(own, box, model.multiple)
    return (
        f"init image {init.name} is {drawn[0]}x{drawn[1]}, {_times(drawn, model)}: it will "
        f"draw at {drawn[0]}x{drawn[1]}, slowly, and that far above its size a model draws "
        f"repeated, tiled pictures; add --fit to draw at {fitted[0]}x{fitted[1]}: "
        f"{suggested.to_command()}"
    )


def explicit_size_caveat(resolved: Request, init: Path | None, model: Model) -> str | None:
    """The note for -W/-H (or --fit's box) far larger than the model's size; None when not,
    with --hires_fix (txt2img) or --outcrop, and for an init image used at its own size."""
    if resolved.outcrop or (init is None and resolved.hires_fix):
        return None
    if init is not None and not resolved.fit:
        return None  # the image's size is used: size_caveat's
    assert resolved.width and resolved.height
    size = (resolved.width, resolved.height)
    if init is not None:
        size = fitted_size(init_image_size(init, 1), size, model.multiple)
    if not is_far(size, model.native):
        return None
    native = f"{model.native[0]}x{model.native[1]}"
    hires = "" if init is not None else f", or add --hires_fix to draw at {native} first"
    return (
        f"-W/-H: {size[0]}x{size[1]} is {_times(size, model)}: slow, and that far above its "
        f"size a model draws repeated, tiled pictures; leave out -W/-H to draw at {native}{hires}"
    )


def _times(size: Size, model: Model) -> str:
    return (
        f"{times(size, model.native):.3g}x the size model {model.name} draws best "
        f"({model.native[0]}x{model.native[1]})"
    )


# -- the words a model knows ----------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """The words a model learned, in named groups ("colours": [...]), as its training.json's
    `vocabulary` key lists them; what a prompt of only unknown words gets (`unknown`)."""

    groups: tuple[tuple[str, tuple[str, ...]], ...]
    example: str = ""
    unknown: str = ""

    @property
    def words(self) -> frozenset[str]:
        return frozenset(word for _, group in self.groups for word in group)


def vocabulary(folder: Path | None) -> Vocabulary | None:
    """The vocabulary a model folder ships (its training.json's `vocabulary`); None for a model
    that ships none (then nothing is said about its words) or an unreadable file."""
    if folder is None:
        return None
    try:
        meta = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    known = meta.get("vocabulary") if isinstance(meta, dict) else None
    if not isinstance(known, dict):
        return None
    groups = tuple(
        (name, tuple(str(word).lower() for word in words))
        for name, words in known.items()
        if isinstance(words, list)
    )
    if not groups:
        return None
    return Vocabulary(groups, str(known.get("example", "")), str(known.get("unknown", "")))


WORD = re.compile(r"[^\W\d_]+")  # a run of letters: digits and punctuation part words


def unknown_words(prompt: Prompt, known: frozenset[str]) -> list[str]:
    """The prompt's words (positive and negative, lower case, each once, in order) not in
    `known`; `<name>` triggers (embeddings) are not words."""
    texts = [part.plain for part in (*prompt.positive, prompt.negative)]
    found: list[str] = []
    for text in texts:
        for word in WORD.findall(TRIGGER.sub(" ", text).lower()):
            if word not in known and word not in found:
                found.append(word)
    return found


def words_caveat(prompt: Prompt, vocab: Vocabulary, model_name: str) -> str | None:
    """The note naming the words a model never learned; None when it knows them all."""
    unknown = unknown_words(prompt, vocab.words)
    if not unknown:
        return None
    groups = [f"{name} ({', '.join(words)})" for name, words in vocab.groups]
    listed = ", ".join(groups[:-1]) + f" and {groups[-1]}" if len(groups) > 1 else groups[0]
    example = f', as in "{vocab.example}"' if vocab.example else ""
    outcome = f" ({vocab.unknown})" if vocab.unknown else ""
    # The words first: what the person must read before the line wraps.
    return (
        f"model {model_name} never learned: {', '.join(unknown)}{outcome}; "
        f"it knows only {listed}{example}"
    )


# -- a session's caveats ------------------------------------------------------------------------


class Models(Protocol):
    """What the teller needs of the session's models (model_cache.ModelCache)."""

    @property
    def entry(self) -> Any: ...  # its name

    @property
    def native_size(self) -> Size: ...

    @property
    def size_multiple(self) -> int: ...

    def loaded_active(self) -> Any: ...

    def unloaded_folder(self) -> Path | None: ...


class Teller:
    """Says a session's caveats through `warn`: each line's, and a -W/-H one once a session. It
    is told a line before the model loads, except a model whose size is known only once it has
    loaded (a checkpoint file, a model not on this machine yet): see `model`."""

    def __init__(self, warn: Callable[[str], None], models: Models) -> None:
        self.warn = warn
        self.models = models
        self.told: set[str] = set()  # the -W/-H caveats said

    def model(self) -> Model | None:
        """The active model's name, size and cell, known without loading it; None when they are
        not (the session loads it first)."""
        models = self.models
        if models.loaded_active() is None and models.unloaded_folder() is None:
            return None
        return Model(models.entry.name, models.native_size, models.size_multiple)

    def tell(self, line: Request, resolved: Request, init: Path | None) -> None:
        """What the line (as typed, and resolved; its init image found) will do that the person
        would not expect. A caveat never fails a line: an unreadable image fails in its stage."""
        model = self.model()
        if model is None:
            return
        try:
            found = [size_caveat(line, resolved, init, model)]
            chosen = explicit_size_caveat(resolved, init, model)
        except InvokeError:
            found, chosen = [], None
        if chosen and chosen not in self.told:  # the person chose that size: once is enough
            self.told.add(chosen)
            found.append(chosen)
        vocab = vocabulary(self.models.unloaded_folder())
        if vocab is not None:
            found.append(words_caveat(resolved.parsed_prompt, vocab, model.name))
        for text in found:
            if text:
                self.warn(text)
