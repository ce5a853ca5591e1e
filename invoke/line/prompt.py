"""A prompt as values: what `prompt_syntax.parse_prompt` reads a prompt string into, and what
the backend encodes and outputs format. Plain frozen data (it compares, hashes and pickles: a Job
carries it to another process); no parsing of the prompt's grammar here.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

# A `<name>`'s characters: no spaces, colons, slashes, brackets or parentheses, so `<lora:x>`,
# `<3` and `>_<` name nothing, and in `(<name>:1.2)` the name ends before the weight.
NAME_CHARACTER = r"[^\s<>:/\\()\[\]]"
TRIGGER = re.compile(rf"<({NAME_CHARACTER}+)>")


@dataclass(frozen=True)
class Fragment:
    """A run of prompt text and its weight (1.0 = as written)."""

    text: str
    weight: float = 1.0


# A prompt without .blend/.and: fragments that are tokenized and encoded together.
Sequence = tuple[Fragment, ...]


@dataclass(frozen=True)
class Parts:
    """`(...).blend(...)` (combine="blend") or `(...).and(...)` (combine="and")."""

    combine: str
    parts: tuple[tuple[Sequence, float], ...]


@dataclass(frozen=True)
class LoraUse:
    """A LoRA a prompt names, and how strongly to merge it (1.0 = as trained)."""

    name: str
    weight: float = 1.0


# -- the whole prompt -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SubPrompt:
    """A `text:0.5` sub-prompt, or the negative prompt: its text (LoRA references taken out,
    `\\:` read as a colon, spaces tidied), its weight in the mix (1.0 for the negative prompt),
    and its weighted fragments, or the parts of its .blend()/.and()."""

    text: str
    weight: float
    fragments: Sequence | Parts

    @property
    def plain(self) -> str:
        """The words without the weighting syntax."""
        return plain_text(self.fragments)


@dataclass(frozen=True)
class Prompt:
    """A prompt read once: what the session, the backend and outputs need of it. A plain value:
    it compares, hashes and pickles (a Job carries it to another process)."""

    text: str  # as typed, with its LoRA references
    skip_normalize: bool  # -x: the sub-prompt and .blend() weights as typed, not scaled to sum 1
    positive: tuple[SubPrompt, ...]  # never empty: ("", 1.0) when there is no text
    negative: SubPrompt  # text "" when the prompt has no [...] group
    loras: tuple[LoraUse, ...]  # in the order they first appear, each name once
    embeddings: tuple[str, ...]  # the `<name>` words: the embeddings it may use (embedding_names)

    @property
    def plain(self) -> str:
        """The positive words without syntax, sub-prompts joined by ", " (for the upscalers and
        the models that take plain text)."""
        return ", ".join(part.plain for part in self.positive)

    @property
    def conjunction_size(self) -> int:
        """The most prompts one `.and()` puts side by side, in any sub-prompt or the negative
        prompt (1 without .and()): the encoded prompt is that many encoder lengths long."""
        return max(
            len(part.fragments.parts)
            if isinstance(part.fragments, Parts) and part.fragments.combine == "and"
            else 1
            for part in (*self.positive, self.negative)
        )


def plain_text(parsed: Sequence | Parts) -> str:
    """The words without the syntax: for models that take a plain prompt."""
    if isinstance(parsed, Parts):
        return ", ".join(plain_text(sequence) for sequence, _ in parsed.parts)
    return " ".join("".join(f.text for f in parsed).split())


def is_weighted(parsed: Sequence | Parts) -> bool:
    return isinstance(parsed, Parts) or any(f.weight != 1.0 for f in parsed)


def split_triggers(text: str, names: Collection[str]) -> list[tuple[str, bool]]:
    """`a <x> cat` -> [("a ", False), ("x", True), (" cat", False)] when x is in `names`: text
    and embedding names in order. Any other `<...>` stays text."""
    pieces: list[tuple[str, bool]] = []
    start = 0
    for match in TRIGGER.finditer(text):
        if match.group(1) in names:
            pieces += [(text[start : match.start()], False), (match.group(1), True)]
            start = match.end()
    return [*pieces, (text[start:], False)]
