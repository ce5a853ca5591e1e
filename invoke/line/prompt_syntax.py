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

import math
import re
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate

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
from invoke.line.switches import number_text, shorten

__all__ = [
    "PromptParts",
    "embedding_names",
    "parse_prompt",
    "parse_weighting",
    "split_loras",
    "split_prompt",
]

UP, DOWN = 1.1, 0.9
# The range of every weight, so that none is infinite or NaN (which draws a black picture) and
# none is so large that the picture is noise: a word's or a group's weight (all its groups' weights
# and signs multiplied) and a .blend()/.and() weight are in [0, WEIGHT_MAX]; a `text:0.5`
# sub-prompt weight is in [-WEIGHT_MAX, WEIGHT_MAX], before and after the scaling to sum 1; a
# LoRA's strength (all its references summed) is in [-LORA_MAX, LORA_MAX].
WEIGHT_MAX = 100.0
LORA_MAX = 10.0
# How deep parentheses may nest (each level is a group whose inside is read again).
MAX_NESTING = 100


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
        weight = float(match.group(1))
        if not -WEIGHT_MAX <= weight <= WEIGHT_MAX:
            raise ParseError(
                "prompt",
                match.group(0),
                f"is a sub-prompt weight outside [{_range(-WEIGHT_MAX)}]; "
                "write \\: for a colon that is text",
            )
        parts.append((positive_text[start : match.start()], weight))
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
            largest = max(abs(weight) for _, weight in parts)
            if largest > WEIGHT_MAX:
                raise ParseError(
                    "prompt",
                    "",
                    f"has sub-prompt weights that sum to {total:.4g}: scaled to sum to 1 one "
                    f"would be {largest:.4g}, outside [{_range(-WEIGHT_MAX)}]; give weights "
                    "that do not cancel out, or -x to use them as typed",
                )
    return PromptParts(positive=tuple(parts), negative=negative)


def _range(lo: float, hi: float = WEIGHT_MAX) -> str:
    return f"{number_text(lo)}, {number_text(hi)}"


_NEGATIVE = re.compile(r"\[([^\[\]]*)\]")
# `:0.5` at the end of a word, not after a backslash (`\:0.5` is text). At most 6 digits before
# the point, so weights (and their sum) stay finite.
_WEIGHT = re.compile(r"(?<!\\):([+-]?(?:[0-9]{1,6}(?:\.[0-9]*)?|\.[0-9]+))(?=\s|$)")


def _unescape(text: str) -> str:
    # `\{`, `\}`, `\|`: literal in a sweep (invoke/line/sweep.py), plain text to the model
    for ch in ":{}|":
        text = text.replace("\\" + ch, ch)
    return text


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
    for name, weight in weights.items():
        if not -LORA_MAX <= weight <= LORA_MAX:
            raise ParseError(
                "prompt",
                f"LoRA {shorten(name)}",
                f"is used at {weight:.4g} in all (its references summed); a LoRA's strength is "
                f"in [{_range(-LORA_MAX, LORA_MAX)}]",
            )
    return " ".join(text.split()), tuple(LoraUse(n, round(w, 6)) for n, w in weights.items())


def _with_lora(whole: str, inside: str) -> LoraUse:
    name, _, weight = inside.partition(",")
    return _lora_use(whole, name.strip().strip("\"'").strip(), weight, "withLora(name, 0.8)")


def _angle_lora(whole: str, inside: str) -> LoraUse:
    name, _, weight = inside.partition(":")
    return _lora_use(whole, name.strip(), weight, "<lora:name:0.8>")


def _lora_use(whole: str, name: str, weight: str, example: str) -> LoraUse:
    shown = shorten(whole)
    if not name:
        raise ParseError("prompt", shown, f"names no LoRA; write {example}")
    weight = weight.strip()
    if not weight:
        return LoraUse(name)
    if not re.fullmatch(rf"[+-]?{_NUMBER}", weight):
        raise ParseError(
            "prompt", shown, f"takes one number as its weight (1 = full strength), e.g. {example}"
        )
    strength = float(weight)
    if not -LORA_MAX <= strength <= LORA_MAX:  # 400 digits read as infinity
        raise ParseError(
            "prompt",
            shown,
            f"has the strength {shorten(weight)}; a LoRA's strength is in "
            f"[{_range(-LORA_MAX, LORA_MAX)}]",
        )
    return LoraUse(name, strength)


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
            parts = tuple(zip((_sequence(p) for p in prompts), weights, strict=True))
            if name == "and":  # each part's weight scales its words, as a group's does
                for sequence, weight in parts:
                    for fragment in sequence:
                        _checked(fragment.weight * weight, fragment.text)
            return Parts(name, parts)
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
    example = f".{name}({shorten(', '.join(['1'] * count), 20)})"
    shown = f".{name}({shorten(text.strip())})"
    if len(words) != count:
        raise ParseError(
            "prompt", shown, f"needs one weight per prompt ({count}), e.g. {example}"
        )  # fmt: skip
    for word in words:
        if not re.fullmatch(_NUMBER, word):
            allowed = f"takes numbers in [{_range(0)}], e.g. {example}"
            raise ParseError("prompt", shown, allowed)
        if not float(word) <= WEIGHT_MAX:  # 400 digits read as infinity
            allowed = f"has the weight {shorten(word)}; a weight is in [{_range(0)}]"
            raise ParseError("prompt", shown, allowed)
    weights = [float(w) for w in words]
    if name == "blend" and not any(weights):
        raise ParseError("prompt", shown, "needs a weight above 0")
    return weights


# -- weighted groups and words --------------------------------------------------------------------

# What may follow a group or a signed word: the end, a space, or punctuation (`ball++,`).
_AFTER_PUNCTUATION = ",.;:!?)]"
_AFTER = r"(?=$|[\s,.;:!?)\]])"
_GROUP_WEIGHT = re.compile(rf"(\++|-+|{_NUMBER}){_AFTER}")
# What reads as a group's weight but is no plain number: refused, never a NaN or infinite weight.
_NOT_PLAIN_WEIGHT = re.compile(
    rf"(?:{_NUMBER}[eE][+-]?[0-9]+|nan|inf|infinity){_AFTER}", re.IGNORECASE
)
# Where reading has something to decide: a backslash, a `(`, or a word's first character (after a
# space or a parenthesis; at the start of a group too, which _Weighting.read looks at itself).
_DECISION = re.compile(r"[\\(]|(?<=[\s()])\S")
# Past this many signs a word's weight is far outside the range anyway (1.1 ** 50 > 100).
_MOST_SIGNS = 200


def _sign_weight(signs: str) -> float:
    if len(signs) > _MOST_SIGNS:  # 1.1 ** 20000 would raise OverflowError
        return math.inf if signs[0] == "+" else 0.0
    return (UP if signs[0] == "+" else DOWN) ** len(signs)


def _sequence(text: str, weight: float = 1.0) -> Sequence:
    """Text -> its weighted fragments. Linear in the text's length: the parentheses are paired in
    one pass first, and each character is then read once, by the innermost group holding it."""
    reader = _Weighting(text)
    reader.read(0, len(text), weight, 0)
    return reader.fragments.result()


class _Fragments:
    """Fragments being collected; a run of text at one weight becomes one fragment."""

    def __init__(self) -> None:
        self.runs: list[tuple[float, list[str]]] = []

    def add(self, text: str, weight: float) -> None:
        weight = round(weight, 6)  # 1.1 ** 2 prints as 1.21
        if self.runs and self.runs[-1][0] == weight:
            self.runs[-1][1].append(text)
        elif text:
            self.runs.append((weight, [text]))

    def result(self) -> Sequence:
        return tuple(Fragment("".join(pieces), weight) for weight, pieces in self.runs)


class _Weighting:
    """One text's weighting syntax, read by index ranges (no slicing, no rescanning)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.closes = _pairs(text)
        self.fragments = _Fragments()

    @cached_property
    def letters(self) -> list[int]:
        """letters[k]: how many letters text[:k] holds (A1111's `(words:1.3)` needs one)."""
        return list(accumulate((ch.isalpha() for ch in self.text), initial=0))

    def read(self, start: int, stop: int, weight: float, depth: int) -> None:
        """Add text[start:stop]'s fragments at `weight` (its enclosing groups' product)."""
        text = self.text
        plain: list[str] = []  # text at this group's own weight, not yet a fragment

        def flush() -> None:
            if plain:
                self.fragments.add("".join(plain), weight)
                plain.clear()

        i = start
        while i < stop:
            if i > start:  # what lies before the next decision is plain text: take it whole
                found = _DECISION.search(text, i, stop)
                decision = stop if found is None else found.start()
                plain.append(text[i:decision])
                i = decision
                if i == stop:
                    break
            ch = text[i]
            if ch == "\\" and i + 1 < stop and text[i + 1] in "()+-":
                plain.append(text[i + 1])
                i += 2
                continue
            close = self.closes.get(i, stop) if ch == "(" else stop
            if close < stop:
                flush()
                i = self._group(i, close, stop, weight, depth + 1)
                continue
            if not ch.isspace() and (i == start or text[i - 1].isspace() or text[i - 1] in "()"):
                word = self._signed_word(i, stop)
                if word is not None:
                    signs, end = word
                    flush()
                    factor = _sign_weight(text[signs:end])
                    self.fragments.add(text[i:signs], _checked(weight * factor, text[i:end]))
                    i = end
                    continue
            plain.append(ch)
            i += 1
        flush()

    def _group(self, i: int, close: int, stop: int, weight: float, depth: int) -> int:
        """Read the group text[i] = `(` ... text[close] = `)`; return where reading goes on."""
        text = self.text
        if depth > MAX_NESTING:
            raise ParseError(
                "prompt", "", f"nests parentheses more than {MAX_NESTING} deep; the limit is "
                f"{MAX_NESTING}"
            )  # fmt: skip
        suffix = _GROUP_WEIGHT.match(text, close + 1, stop)
        if suffix:
            signs = suffix.group(1)
            factor = _sign_weight(signs) if signs[0] in "+-" else float(signs)
            shown = text[i : suffix.end()]
            if signs[0] not in "+-" and factor > WEIGHT_MAX:
                raise _out_of_range(shown, signs)
            self.read(i + 1, close, _checked(weight * factor, shown), depth)
            return suffix.end()
        wrong = _NOT_PLAIN_WEIGHT.match(text, close + 1, stop)
        if wrong:
            raise _out_of_range(text[i : wrong.end()], wrong.group(0))
        colon = self._colon_weight(i + 1, close)
        if colon is not None:
            end, factor = colon
            self.read(i + 1, end, _checked(weight * factor, text[i : close + 1]), depth)
            return close + 1
        # Unweighted parentheses are the user's text (CLIP reads them, as it always did); only
        # what is inside may carry weights.
        self.fragments.add("(", weight)
        self.read(i + 1, close, weight, depth)
        self.fragments.add(")", weight)
        return close + 1

    def _colon_weight(self, start: int, stop: int) -> tuple[int, float] | None:
        """AUTOMATIC1111's `(words:1.3)`: where the words end and the weight, when text[start:stop]
        ends in `:NUMBER` (spaces allowed around it), the colon is not `\\:`, the words hold a
        letter and the weight is under 10 (so `(12:30)` and `(16:9)` stay text)."""
        text = self.text
        end = stop
        while end > start and text[end - 1].isspace():
            end -= 1
        digits = end
        while digits > start and text[digits - 1] in "0123456789.":
            digits -= 1
        number = text[digits:end]
        colon = digits
        while colon > start and text[colon - 1].isspace():
            colon -= 1
        colon -= 1
        if colon < start or text[colon] != ":" or (colon > 0 and text[colon - 1] == "\\"):
            return None
        if not re.fullmatch(_NUMBER, number) or self.letters[colon] == self.letters[start]:
            return None
        factor = float(number)
        return (colon, factor) if factor < 10 else None

    def _signed_word(self, i: int, stop: int) -> tuple[int, int] | None:
        """`ball++` at i: (where its signs start, where they end), or None. A word is what
        follows a space or a parenthesis up to the next one (not starting with a sign); its
        signs are the first run of one sign followed by the end, a space or punctuation."""
        text = self.text
        if text[i] in "()\\+-":
            return None
        j = i + 1
        while j < stop:
            ch = text[j]
            if ch in "()\\" or ch.isspace():
                return None
            if ch in "+-":
                end = j
                while end < stop and text[end] == ch:
                    end += 1
                if end == stop or text[end].isspace() or text[end] in _AFTER_PUNCTUATION:
                    return j, end
                j = end
                continue
            j += 1
        return None


def _checked(weight: float, shown: str) -> float:
    """A weight some text gets (its groups' weights and signs multiplied), if within range."""
    if not weight <= WEIGHT_MAX:  # NaN fails this too
        raise ParseError(
            "prompt",
            shorten(shown),
            f"would weigh {weight:.4g} (its groups' weights and signs multiplied); "
            f"a weight is at most {number_text(WEIGHT_MAX)}",
        )
    return weight


def _out_of_range(shown: str, weight: str) -> ParseError:
    return ParseError(
        "prompt",
        shorten(shown),
        f"has the weight {shorten(weight)}; a group's weight is a plain number in "
        f"[0, {number_text(WEIGHT_MAX)}]",
    )


def _pairs(text: str) -> dict[int, int]:
    """Each `(` that is closed -> its `)`, in one pass. A backslash takes the next character with
    it (`\\(` and `\\)` do not count); a `(` never closed is text, and so is a stray `)`."""
    closes: dict[int, int] = {}
    opened: list[int] = []
    for found in _PAREN_OR_ESCAPE.finditer(text):
        if found.group(0) == "(":
            opened.append(found.start())
        elif found.group(0) == ")" and opened:
            closes[opened.pop()] = found.start()
    return closes


_PAREN_OR_ESCAPE = re.compile(r"\\[\s\S]?|[()]")
