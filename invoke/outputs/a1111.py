"""AUTOMATIC1111's `parameters` text -> our command and the notes on what it could not carry.

The text is the prompt, an optional `Negative prompt:` and one settings line of `Key: value,`
fields (A1111's create_infotext). The prompt's emphasis is A1111's (`(word)` 1.1, `[word]` 1/1.1,
`(word:1.3)`, `\\(` a literal parenthesis); it is read as A1111 reads it (parse_prompt_attention's
rules: unclosed groups run to the end, a stray closer is text, weights of nested groups multiply)
and written in ours: `(text)WEIGHT` for each run of one weight. Everything is read in time linear
in the text's length: no regular expression here can backtrack.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from typing import Any

from invoke.errors import MetadataError
from invoke.line.prompt_syntax import WEIGHT_MAX
from invoke.line.samplers import from_a1111
from invoke.line.switches import Variation, shorten
from invoke.outputs.canonical import number, one_line, request_to_canonical

__all__ = ["a1111_fields", "command_from_a1111", "prompt_from_a1111", "read_a1111"]

# -- the settings line ---------------------------------------------------------------------------

# One `Key: value,` of AUTOMATIC1111's settings line (a value with commas is JSON-quoted). Every
# repetition is possessive: nothing is given back, so a field is tried in time linear in its
# length; a1111_fields starts a try only where one can begin.
_FIELD = re.compile(r'\s*+([\w ./+\-()]++):\s*+("(?:\\.|[^\\"])*+"|[^,]*+)(?:,|$)')
_KEY = re.compile(r"\s*+[\w ./+\-()]*+")


def a1111_fields(settings: str) -> dict[str, str]:
    """The `Key: value` pairs of a settings line, values unquoted. What is not a field is
    skipped: where no field starts, none starts later in the same run of key characters either
    (they would end at the same place), so the next try is past the run."""
    values: dict[str, str] = {}
    position = 0
    while position < len(settings):
        m = _FIELD.match(settings, position)
        if m is None:
            run = _KEY.match(settings, position)
            position = max(run.end() if run else 0, position + 1)
            continue
        value = m.group(2).strip()
        if value.startswith('"'):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        values[m.group(1).strip()] = value
        position = max(m.end(), position + 1)
    return values


# -- the prompt ----------------------------------------------------------------------------------

# A1111's extra networks: taken out of the prompt before its emphasis is read, wherever they are.
_NETWORK = re.compile(r"<(lora|lyco|hypernet):([^<>]*+)>", re.IGNORECASE)
# A group's weight at a `:` (A1111: `:\s*([+-]?[.\d]+)\s*\)`).
_GROUP_WEIGHT = re.compile(r":\s*+([+-]?[.\d]++)\s*+\)")
_BREAK = re.compile(r"\bBREAK\b")
_AND = re.compile(r"\bAND\b")
# `[from:to:when]` prompt editing and `[a|b]` alternation: one bracket run holding `:` or `|`.
_EDITING = re.compile(r"\[[^\[\]:|]*+[:|][^\[\]]*+\]")
# Where our parser would read a weight in plain text: a sign run ending a word, `:number`.
_SIGNS_AT_END = re.compile(r"(?<![+-])[+-]++(?=$|[\s,.;:!?()\]])")
_COLON_NUMBER = re.compile(r":(?=[+-]?[.\d])")


def _networks(text: str, loras: list[str], notes: list[str]) -> str:
    def take(m: re.Match[str]) -> str:
        kind, inside = m.group(1).lower(), m.group(2)
        if kind == "hypernet":
            notes.append(f"hypernetwork {m.group(0)} (no hypernetworks here)")
            return " "
        name, _, rest = inside.partition(":")
        weights = [w.strip() for w in rest.split(":")] if rest else []
        if len(weights) > 1:
            notes.append(
                f"{m.group(0)}'s second weight (one weight for the whole LoRA here: {weights[0]})"
            )
        loras.append(f"<lora:{name}:{weights[0]}>" if weights else f"<lora:{name}>")
        return " "

    return _NETWORK.sub(take, text)


def _words_not_network(m: re.Match[str], notes: list[str]) -> str:
    """A1111 takes extra networks from the prompt only: in the negative one they are words."""
    notes.append(f"{m.group(0)} in the negative prompt (words to A1111, not a network)")
    return " "


def _attention(text: str) -> list[tuple[str, float]]:
    """A1111's parse_prompt_attention, in linear time: (text, weight) runs, neighbours of one
    weight merged. A group's multiplier is laid on the runs it encloses through a running
    product (marks where each group starts and ends), not run by run."""
    runs: list[str] = []
    starts: dict[int, list[float]] = {}
    ends: dict[int, list[float]] = {}
    round_open: list[int] = []
    square_open: list[int] = []

    def close(opened: list[int], factor: float) -> None:
        start = opened.pop()
        if start < len(runs):
            starts.setdefault(start, []).append(factor)
            ends.setdefault(len(runs), []).append(factor)

    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":  # `\(` `\)` `\[` `\]` `\\` are literal; a lone backslash is nothing
            escaped = text[i + 1 : i + 2] in ("(", ")", "[", "]", "\\")
            runs.append(text[i + 1] if escaped else "")
            i += 2 if escaped else 1
        elif ch == "(":
            round_open.append(len(runs))
            i += 1
        elif ch == "[":
            square_open.append(len(runs))
            i += 1
        elif ch == ":" and round_open and (m := _GROUP_WEIGHT.match(text, i)):
            try:
                factor = float(m.group(1))
            except ValueError:  # `:1.2.3)`: A1111 fails; here it is text
                runs.append(":")
                i += 1
                continue
            close(round_open, factor)
            i = m.end()
        elif ch == ")" and round_open:
            close(round_open, 1.1)
            i += 1
        elif ch == "]" and square_open:
            close(square_open, 1 / 1.1)
            i += 1
        else:
            j = i + 1
            while j < n and text[j] not in "\\()[]:":
                j += 1
            runs.append(text[i:j])
            i = j
    for opened, factor in ((round_open, 1.1), (square_open, 1 / 1.1)):
        while opened:
            close(opened, factor)
    return _weighted(runs, starts, ends)


def _weighted(
    runs: list[str], starts: dict[int, list[float]], ends: dict[int, list[float]]
) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    # The product of the factors of the groups open at a run, kept as a sum of logarithms, a
    # count of negative factors and a count of zeros, so a group's end is undone in O(1).
    logs, negatives, zeros = 0.0, 0, 0
    for k, run in enumerate(runs):
        for sign, factors in ((-1, ends.get(k, ())), (1, starts.get(k, ()))):
            for factor in factors:
                if factor == 0:
                    zeros += sign
                else:
                    logs += sign * math.log(abs(factor))
                    negatives += sign * (factor < 0)
        weight = 0.0 if zeros else (-1) ** negatives * math.exp(min(logs, 700.0))
        if out and round(out[-1][1], 4) == round(weight, 4):
            out[-1] = (out[-1][0] + run, out[-1][1])
        elif run:
            out.append((run, weight))
    return out


def _escaped(text: str) -> str:
    """Plain text as our prompt syntax reads it back as the same text."""
    text = text.replace("\\", " ").replace("(", "\\(").replace(")", "\\)")
    # A1111 reads braces and bars as text (NovelAI's `{word}` emphasis): here they would be a sweep
    text = text.replace("{", "\\{").replace("}", "\\}").replace("|", "\\|")
    text = _SIGNS_AT_END.sub(lambda m: "".join("\\" + c for c in m.group(0)), text)
    return _COLON_NUMBER.sub("\\\\:", text)


def _weight_text(weight: float) -> str:
    return f"{round(weight, 4):g}"


def _notes_on(text: str, notes: list[str]) -> str:
    """Note what A1111's prompt holds that ours has not; `text` less its BREAKs."""
    if _EDITING.search(text):
        notes.append("prompt editing/alternation [a:b:N], [a|b] (read as plain emphasis here)")
    if _AND.search(text):
        notes.append("AND (composable diffusion; kept as the word)")
    if _BREAK.search(text):
        notes.append("BREAK (long prompts are cut into chunks by length here)")
        text = _BREAK.sub(" ", text)
    return text


def _ours(text: str, notes: list[str]) -> str:
    """A1111 emphasis -> ours, one `(text)WEIGHT` for each run that is not at weight 1."""
    out: list[str] = []
    weighted_before = False  # the last thing written is `(...)WEIGHT`: keep its weight apart
    for run, weight in _attention(_notes_on(text, notes)):
        if "[" in run or "]" in run:
            notes.append(
                "literal square brackets, read as spaces (our [...] is the negative prompt)"
            )
        if "\\" in run:
            notes.append("literal backslashes, read as spaces (ours escape what follows them)")
        escaped = _escaped(run.replace("[", " ").replace("]", " "))
        if not 0 <= weight <= WEIGHT_MAX:
            shown = shorten(run.strip(), 20)
            notes.append(f"emphasis {_weight_text(weight)} on {shown!r} (weights here are in "
                         f"[0, {WEIGHT_MAX:g}]; read as the nearest)")  # fmt: skip
            weight = min(max(weight, 0.0), WEIGHT_MAX)
        plain = round(weight, 4) == 1 or not escaped.strip()
        joined = escaped[:1].isspace() or (plain and escaped[:1] in ",.;!?")
        if weighted_before and escaped and not joined:
            out.append(" ")
        if plain:
            out.append(escaped)
        else:
            core = escaped.strip()
            lead, trail = escaped[: escaped.index(core)], escaped[escaped.index(core) + len(core) :]
            if not lead and out and not out[-1][-1:].isspace():
                lead = " "
            out.append(f"{lead}({core}){_weight_text(weight)}{trail}")
        weighted_before = not plain and not out[-1][-1].isspace()
    return one_line("".join(out))


def prompt_from_a1111(positive: str, negative: str = "") -> tuple[str, list[str]]:
    """A1111's prompt and negative prompt -> our prompt (`... [negative]`), and notes."""
    notes: list[str] = []
    loras: list[str] = []
    positive = _networks(positive, loras, notes)
    negative = _NETWORK.sub(lambda m: _words_not_network(m, notes), negative)
    prompt = _ours(positive, notes)
    neg = _ours(negative, notes)
    if neg:
        prompt = f"{prompt} [{neg}]"
    if loras:
        prompt = f"{prompt} {' '.join(loras)}".strip()
    return prompt, list(dict.fromkeys(notes))


# -- the whole text ------------------------------------------------------------------------------

# Fields read into the command (or into a note of their own); every other field is named in the
# note of what was dropped. Version and the hashes of what is named are not settings.
_READ = {
    "Steps", "Seed", "CFG scale", "Size", "Sampler", "Schedule type", "Tiling",
    "Variation seed", "Variation seed strength", "Denoising strength", "Model", "Model hash",
    "Hires upscale", "Hires resize", "Hires steps", "Hires upscaler", "First pass size",
    "Version", "Lora hashes", "TI hashes", "Invoke prompt",
}  # fmt: skip
# A1111's upscalers that enlarge the latents, as our --hires_fix does.
_LATENT = re.compile(r"latent\b", re.IGNORECASE)


def command_from_a1111(text: str) -> tuple[str, list[str]]:
    """A1111's `parameters` -> (our canonical command, notes on what it could not carry).

    Raises MetadataError when there is no settings line or a field we read is malformed."""
    lines = text.strip().splitlines()
    settings_at = max(
        (i for i, line in enumerate(lines) if line.lstrip().startswith("Steps:")), default=-1
    )
    if settings_at < 0:
        raise MetadataError("has no 'Steps:' line")
    positive: list[str] = []
    negative: list[str] = []
    for line in lines[:settings_at]:
        if line.startswith("Negative prompt:") or negative:
            negative.append(line.removeprefix("Negative prompt:"))
        else:
            positive.append(line)
    values = a1111_fields(lines[settings_at])
    if values.get("Invoke prompt"):  # ours: the prompt as typed, where A1111's words differ
        prompt, notes = values["Invoke prompt"], []
    else:
        prompt, notes = prompt_from_a1111("\n".join(positive), "\n".join(negative))
    fields: dict[str, Any] = {"prompt": prompt}
    for key, field, kind in (
        ("Steps", "steps", int),
        ("Seed", "seed", int),
        ("CFG scale", "cfg_scale", float),
    ):
        if key in values:
            fields[field] = number(values[key], kind, key)
    if "Size" in values:
        fields["width"], fields["height"] = _size(values["Size"], "Size")
    _sampler(values, fields, notes)
    if values.get("Tiling", "").strip().lower() == "true":
        fields["seamless"] = True
    if "Variation seed" in values and "Variation seed strength" in values:
        fields["with_variations"] = (
            Variation(
                number(values["Variation seed"], int, "Variation seed"),
                number(values["Variation seed strength"], float, "Variation seed strength"),
            ),
        )
    _strength(values, fields, notes)
    if values.get("Model") or values.get("Model hash"):
        named = values.get("Model") or "?"
        hashed = f" (hash {values['Model hash']})" if values.get("Model hash") else ""
        notes.append(f"model {named}{hashed}: choose it with !switch if you have it")
    others = [_unread(k, v) for k, v in values.items() if k not in _READ]
    if others:
        notes.append(f"{', '.join(others)} (no such settings here)")
    return request_to_canonical(fields, "parameters"), notes


_CONTROLNET = re.compile(r"ControlNet (\d{1,3})")


def _unread(key: str, value: str) -> str:
    """A field with no equivalent here, as its note names it."""
    unit = _CONTROLNET.fullmatch(key)
    if unit:
        inner = a1111_fields(value)
        what = ", ".join(inner[k] for k in ("Module", "Model") if inner.get(k)) or shorten(
            value, 40
        )
        return (
            f"ControlNet unit {unit.group(1)} ({shorten(what, 60)}; its control image is not kept)"
        )
    return f"{key}: {shorten(value, 40)}"


def _size(text: str, key: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*+(\d{1,6})\s*+x\s*+(\d{1,6})\s*+", text)
    if not m:
        raise MetadataError(f"{key} is {shorten(text)!r}, not WIDTHxHEIGHT")
    return number(m.group(1), int, key), number(m.group(2), int, key)


def _sampler(values: dict[str, str], fields: dict[str, Any], notes: list[str]) -> None:
    sampler = values.get("Sampler", "").strip()
    if not sampler:
        return
    schedule = values.get("Schedule type")
    ours = from_a1111(sampler, schedule)
    if ours is not None:
        fields["sampler"] = ours
    else:
        shown = f"{sampler}, Schedule type {schedule}" if schedule else sampler
        notes.append(f"sampler {shown} (none here runs it; the default sampler is used)")


def _hires_resize(text: str, width: int | None, height: int | None) -> tuple[int, int]:
    """`Hires resize: WxH`; a 0 side follows the first pass's shape, as A1111 computes it."""
    to_w, to_h = _size(text, "Hires resize")
    if (to_w and to_h) or not (width and height):
        if not (to_w and to_h):
            raise MetadataError(f"Hires resize is {shorten(text)!r} and no Size gives its shape")
        return to_w, to_h
    if not to_h:
        return to_w, to_w * height // width
    return to_h * width // height, to_h


def _strength(values: dict[str, str], fields: dict[str, Any], notes: list[str]) -> None:
    """Denoising strength: the hires pass's (with hires fields), else an img2img picture's."""
    strength = values.get("Denoising strength")
    # A1111 before 1.0 wrote `First pass size` with Size the final one.
    hires = any(k in values for k in ("Hires upscale", "Hires resize", "First pass size"))
    if not hires:
        if strength is not None:
            notes.append(
                f"Denoising strength {strength}: an img2img picture; "
                f"add -I FILE -f {strength} to draw from its init image"
            )
        return
    width, height = fields.get("width"), fields.get("height")
    if "Hires resize" in values:
        width, height = _hires_resize(values["Hires resize"], width, height)
    elif width and height and "Hires upscale" in values:
        scale = number(values["Hires upscale"], float, "Hires upscale")
        width, height = int(width * scale), int(height * scale)
    fields.update(width=width, height=height, hires_fix=True)
    if strength is not None:
        fields["strength"] = number(strength, float, "Denoising strength")
    first = values.get("First pass size") or values.get("Size", "?")
    notes.append(f"hires first pass at {first} (here it is drawn at about the model's size)")
    # A1111 runs `Hires steps` exactly; 0 is -f's share of Steps, which ours runs too.
    hires_steps = values.get("Hires steps", "0").strip()
    share = int(fields.get("strength", 0.75) * fields.get("steps", 50))
    if hires_steps not in ("0", str(share)):
        notes.append(f"Hires steps: {hires_steps} (the second pass runs -f x -s = {share} here)")
    upscaler = values.get("Hires upscaler", "").strip()
    if upscaler and not _LATENT.match(upscaler):
        notes.append(f"Hires upscaler: {upscaler} (the second pass enlarges latents here)")


def read_a1111(text: str, notes: list[str]) -> str:
    """command_from_a1111 in the readers' shape: the command, its notes added to `notes`."""
    command, more = command_from_a1111(text)
    notes.extend(more)
    return command
