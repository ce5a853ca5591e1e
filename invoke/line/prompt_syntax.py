"""A prompt, as InvokeAI 2.2+ users type it, parsed into plain values (no torch here).

`parse_prompt` is the one reader of a prompt string: it returns a frozen `Prompt` holding all that
the session, the backend and outputs need of it, so none of them reads the text again.

What users type, and what it means here:
- `[blurry, ugly]`: the negative prompt (every `[...]` group, joined).
- `a cat:0.7 a dog:0.3`: sub-prompts whose embeddings are mixed by the weights (`:number` at the end
  of a word; scaled to sum to 1 unless -x). `\\:` is a literal colon.
- `ball+`, `ball++`, `ball-`: one word up- or down-weighted, 1.1 (0.9) per sign.
- `(a red ball)+`, `(a red ball)1.3`: a group, with signs or a number (AUTOMATIC1111's
  `(a red ball:1.3)` is read the same, so prompts copied from it work); groups nest and their
  weights multiply (`(a (red)++ ball)1.2` makes "red" 1.2 x 1.21). Parentheses with no weight
  after them are text, as they always were (only what is inside may carry weights), so prompts
  written before this syntax existed give the same pictures.
- `("a cat", "a dog").blend(0.3, 0.7)`: the prompts' embeddings mixed by the weights (summed
  to 1 unless -x, as `a cat:0.3 a dog:0.7` sub-prompts are).
- `("a cat", "playing with a ball").and()` or `.and(1, 0.5)`: each prompt encoded on its own and
  the embeddings put side by side (77 tokens each), so each keeps its full token budget; the
  weights scale each part like a group's.
- `\\(`, `\\)`, `\\+`, `\\-` are literal characters. An unmatched parenthesis is text, so a
  smiley or a stray bracket never makes a line fail.
- `withLora(name, 0.8)` (InvokeAI 2.3) and `<lora:name:0.8>` (AUTOMATIC1111) name a LoRA file to
  merge into the model for this line, at that strength (1 when left out). They are not words:
  split_loras takes them out of the prompt before anything else reads it, wherever they stand
  (inside `[...]` too, as AUTOMATIC1111 does).
- `<name>` is a textual inversion embedding's trigger (InvokeAI 2.x's `<concept>`) when the
  embeddings folder has a file of that name; otherwise it is text, as it always was. Triggers
  are words like any other here: `(<name>)1.3` weights the embedding's vectors. Which names are
  files is for the session to find out (embedding_names lists the candidates); the backend puts
  each trigger's vectors where split_triggers says.
How a weight acts on the embedding is the backend's business (backend/prompts.py).

The weighting syntax works on one sub-prompt: the LoRA references, the `[negative]` groups and the
`text:0.5` sub-prompts are split off first (split_prompt).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from invoke.errors import ParseError
from invoke.line.prompt import (
    TRIGGER,
    Fragment,
    LoraUse,
    Parts,
    Prompt,
    Sequence,
    SubPrompt,
)

__all__ = [
    "PromptParts",
    "embedding_names",
    "parse_prompt",
    "parse_weighting",
    "split_loras",
    "split_prompt",
]

UP, DOWN = 1.1, 0.9


def parse_prompt(text: str, skip_normalize: bool = False) -> Prompt:
    """The prompt string -> a Prompt: LoRA references, `[negative]`, `text:0.5` sub-prompts, the
    weighting syntax of each, and its `<name>` words, all read here and only here.

    Raises ParseError for a LoRA reference or a .blend()/.and() that cannot be used."""
    words, loras = split_loras(text)
    parts = _split_text(words, skip_normalize)
    return Prompt(
        text=text,
        skip_normalize=skip_normalize,
        positive=tuple(SubPrompt(t, w, parse_weighting(t)) for t, w in parts.positive),
        negative=SubPrompt(parts.negative, 1.0, parse_weighting(parts.negative)),
        loras=loras,
        embeddings=_trigger_names(words),
    )


@dataclass(frozen=True)
class PromptParts:
    """A prompt split for the text encoder: weighted positive sub-prompts and the negative."""

    positive: tuple[tuple[str, float], ...]
    negative: str


def split_prompt(prompt: str, skip_normalize: bool = False) -> PromptParts:
    """`[...]` groups -> the negative prompt; `a cat:0.7 a dog:0.3` -> weighted sub-prompts.

    A weight is `:number` at the end of a word; other colons are text, and `\\:` is always a
    literal colon. Weights are scaled to sum to 1 unless skip_normalize (if they sum to 0, they
    become equal). A prompt without weights is one sub-prompt of weight 1.0. LoRA references
    (withLora(...), <lora:...>) are not text: they are left out (split_loras)."""
    return _split_text(split_loras(prompt)[0], skip_normalize)


def _split_text(prompt: str, skip_normalize: bool) -> PromptParts:
    """split_prompt on a prompt whose LoRA references are already out."""
    negatives = [group.strip() for group in _NEGATIVE.findall(prompt)]
    negative = _unescape(" ".join(group for group in negatives if group))
    positive_text = _NEGATIVE.sub(" ", prompt)

    parts: list[tuple[str, float]] = []
    start = 0
    for match in _WEIGHT.finditer(positive_text):
        parts.append((positive_text[start : match.start()], float(match.group(1))))
        start = match.end()
    tail = positive_text[start:]
    if tail.strip() or not parts:
        parts.append((tail, 1.0))
    parts = [(_tidy(text), weight) for text, weight in parts]
    parts = [(text, weight) for text, weight in parts if text] or [("", 1.0)]

    if not skip_normalize:
        total = sum(weight for _, weight in parts)
        if total == 0:
            parts = [(text, 1.0 / len(parts)) for text, _ in parts]
        else:
            parts = [(text, weight / total) for text, weight in parts]
    return PromptParts(positive=tuple(parts), negative=negative)


_NEGATIVE = re.compile(r"\[([^\[\]]*)\]")
# `:0.5` at the end of a word, not after a backslash (`\:0.5` is text). At most 6 digits before
# the point, so weights (and their sum) stay finite.
_WEIGHT = re.compile(r"(?<!\\):([+-]?(?:[0-9]{1,6}(?:\.[0-9]*)?|\.[0-9]+))(?=\s|$)")


def _unescape(text: str) -> str:
    return text.replace("\\:", ":")


def _tidy(text: str) -> str:
    # Removing `[...]` leaves double spaces; the text encoder does not care, logs read better.
    return " ".join(_unescape(text).split())


# -- LoRA references ------------------------------------------------------------------------------

# withLora(name) / withLora(name, 0.8); the name may be quoted. <lora:name> / <lora:name:0.8>.
_WITH_LORA = re.compile(r"withLora\(([^()]*)\)", re.IGNORECASE)
_ANGLE_LORA = re.compile(r"<lora:([^<>]*)>", re.IGNORECASE)


def split_loras(prompt: str) -> tuple[str, tuple[LoraUse, ...]]:
    """The prompt without its LoRA references, and the LoRAs in the order they first appear (a
    name given twice is merged once, at the sum of its weights).

    Raises ParseError for a reference without a name or with a weight that is not a number."""
    found: list[tuple[int, LoraUse]] = []

    def take(match: re.Match[str], use: LoraUse) -> str:
        found.append((match.start(), use))
        return " "

    text = _WITH_LORA.sub(lambda m: take(m, _with_lora(m.group(0), m.group(1))), prompt)
    text = _ANGLE_LORA.sub(lambda m: take(m, _angle_lora(m.group(0), m.group(1))), text)
    if not found:
        return prompt, ()
    weights: dict[str, float] = {}
    for _, use in sorted(found, key=lambda pair: pair[0]):
        weights[use.name] = weights.get(use.name, 0.0) + use.weight
    return " ".join(text.split()), tuple(LoraUse(n, round(w, 6)) for n, w in weights.items())


def _with_lora(whole: str, inside: str) -> LoraUse:
    name, _, weight = inside.partition(",")
    return _lora_use(whole, name.strip().strip("\"'").strip(), weight, "withLora(name, 0.8)")


def _angle_lora(whole: str, inside: str) -> LoraUse:
    name, _, weight = inside.partition(":")
    return _lora_use(whole, name.strip(), weight, "<lora:name:0.8>")


def _lora_use(whole: str, name: str, weight: str, example: str) -> LoraUse:
    if not name:
        raise ParseError("prompt", whole, f"names no LoRA; write {example}")
    weight = weight.strip()
    if not weight:
        return LoraUse(name)
    if not re.fullmatch(rf"[+-]?{_NUMBER}", weight):
        raise ParseError(
            "prompt", whole, f"takes one number as its weight (1 = full strength), e.g. {example}"
        )
    return LoraUse(name, float(weight))


def embedding_names(prompt: str) -> tuple[str, ...]:
    """The names of a prompt's `<name>` words in the order they first appear, LoRA references
    left out: the candidates for embeddings (those with a file in the folder are)."""
    return _trigger_names(split_loras(prompt)[0])


def _trigger_names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(TRIGGER.findall(text)))


def parse_weighting(text: str) -> Sequence | Parts:
    """A sub-prompt's text -> its weighted fragments, or the parts of a blend or conjunction.

    Raises ParseError for a .blend/.and whose weights do not match its prompts."""
    combined = _COMBINE.fullmatch(text.strip())
    if combined:
        prompts = _quoted_list(combined.group(1))
        if prompts is not None:
            name = combined.group(2)
            weights = _weights(name, combined.group(3), len(prompts))
            return Parts(name, tuple(zip((_sequence(p) for p in prompts), weights, strict=True)))
    return _sequence(text)


# -- .blend / .and --------------------------------------------------------------------------------

_COMBINE = re.compile(r"\((.*)\)\.(blend|and)\(([^()]*)\)", re.DOTALL)
_QUOTED = re.compile(r'\s*"((?:[^"\\]|\\.)*)"\s*')
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"


def _quoted_list(inner: str) -> list[str] | None:
    """`"a", "b"` -> ["a", "b"]; None when the text is not a list of quoted prompts."""
    prompts, position = [], 0
    while True:
        match = _QUOTED.match(inner, position)
        if not match:
            return None
        prompts.append(re.sub(r'\\(["\\])', r"\1", match.group(1)))
        position = match.end()
        if position == len(inner):
            return prompts
        if inner[position] != ",":
            return None
        position += 1


def _weights(name: str, text: str, count: int) -> list[float]:
    words = [w.strip() for w in text.split(",")] if text.strip() else []
    if name == "and" and not words:
        return [1.0] * count
    example = ", ".join(["1"] * count)
    if len(words) != count:
        raise ParseError(
            "prompt",
            f".{name}({text.strip()})",
            f"needs one weight per prompt ({count}), e.g. .{name}({example})",
        )
    for word in words:
        if not re.fullmatch(_NUMBER, word):
            raise ParseError(
                "prompt", f".{name}({text.strip()})", f"takes numbers >= 0, e.g. .{name}({example})"
            )
    weights = [float(w) for w in words]
    if name == "blend" and not any(weights):
        raise ParseError("prompt", f".blend({text.strip()})", "needs a weight above 0")
    return weights


# -- weighted groups and words --------------------------------------------------------------------

# What may follow a group or a signed word: the end, a space, or punctuation (`ball++,`).
_AFTER = r"(?=$|[\s,.;:!?)\]])"
_GROUP_WEIGHT = re.compile(rf"(\++|-+|{_NUMBER}){_AFTER}")
# AUTOMATIC1111's spelling of a weighted group, `(words:1.3)`, read the same as `(words)1.3`.
_COLON_WEIGHT = re.compile(rf"(.*?)(?<!\\):\s*({_NUMBER})\s*", re.DOTALL)
_WORD_WEIGHT = re.compile(rf"([^\s()\\+-][^\s()\\]*?)(\++|-+){_AFTER}")


def _plausible(colon: re.Match[str]) -> bool:
    return any(ch.isalpha() for ch in colon.group(1)) and float(colon.group(2)) < 10


def _sign_weight(signs: str) -> float:
    return (UP if signs[0] == "+" else DOWN) ** len(signs)


def _sequence(text: str, weight: float = 1.0) -> Sequence:
    fragments: list[Fragment] = []
    plain: list[str] = []  # text at this group's own weight, not yet a fragment

    def flush() -> None:
        if plain:
            _append(fragments, Fragment("".join(plain), weight))
            plain.clear()

    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "()+-":
            plain.append(text[i + 1])
            i += 2
            continue
        if ch == "(":
            close = _matching(text, i)
            if close is not None:
                suffix = _GROUP_WEIGHT.match(text, close + 1)
                colon = _COLON_WEIGHT.fullmatch(text, i + 1, close)
                # Only words with a plausible weight: `(12:30)` and `(16:9)` stay text.
                if colon and not suffix and _plausible(colon):
                    flush()
                    for fragment in _sequence(colon.group(1), weight * float(colon.group(2))):
                        _append(fragments, fragment)
                    i = close + 1
                    continue
                if suffix:
                    signs = suffix.group(1)
                    factor = _sign_weight(signs) if signs[0] in "+-" else float(signs)
                    flush()
                    for fragment in _sequence(text[i + 1 : close], weight * factor):
                        _append(fragments, fragment)
                    i = suffix.end()
                    continue
                # Unweighted parentheses are the user's text (CLIP reads them, as it always
                # did); only what is inside may carry weights.
                plain.append("(")
                flush()
                for fragment in _sequence(text[i + 1 : close], weight):
                    _append(fragments, fragment)
                plain.append(")")
                i = close + 1
                continue
        if not ch.isspace() and (i == 0 or text[i - 1].isspace() or text[i - 1] in "()"):
            word = _WORD_WEIGHT.match(text, i)
            if word:
                flush()
                _append(fragments, Fragment(word.group(1), weight * _sign_weight(word.group(2))))
                i = word.end()
                continue
        plain.append(ch)
        i += 1
    flush()
    return tuple(fragments)


def _append(fragments: list[Fragment], fragment: Fragment) -> None:
    """Add a fragment, keeping a space between words and merging runs of the same weight."""
    fragment = Fragment(fragment.text, round(fragment.weight, 6))  # 1.1 ** 2 prints as 1.21
    if fragments and fragments[-1].weight == fragment.weight:
        fragments[-1] = Fragment(fragments[-1].text + fragment.text, fragment.weight)
    elif fragment.text:
        fragments.append(fragment)


def _matching(text: str, start: int) -> int | None:
    """Index of the `)` closing the `(` at start (escaped parentheses do not count), or None."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None
