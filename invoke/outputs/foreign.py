"""Each metadata format -> our command: a `Dream` line (ours, or InvokeAI 2.x's, whose switches
differ) and `sd-metadata` (InvokeAI 2.x's JSON, which we write too); AUTOMATIC1111's
`parameters` is read in a1111.py.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from invoke.errors import InvokeError, MetadataError
from invoke.line.parse import parse_fix, quote_prompt
from invoke.line.request import ControlUnit
from invoke.line.samplers import from_invokeai
from invoke.line.switch_defaults import OUTCROP_STRENGTH
from invoke.line.switches import CONTROL_PROCESSORS, SEAMLESS_AXES, Variation, shorten
from invoke.line.table import SWITCHES
from invoke.outputs.canonical import (
    NUMBER,
    canonical,
    canonical_fix,
    check_text,
    number,
    request_to_canonical,
)
from invoke.outputs.metadata import UPSCALE_TYPE

# InvokeAI switches with no meaning here (post-processing, features not in this program) and how
# many values each takes; dropped from a foreign Dream line so the rest of it still works.
_FOREIGN_SWITCHES: dict[str, int] = {
    "-G": 1,
    "--gfpgan_strength": 1,
    "-ft": 1,
    "--facetool": 1,
    "-cf": 1,
    "--codeformer_fidelity": 1,
    "--perlin": 1,
    "--threshold": 1,
    "-embiggen": -1,
    "--embiggen": -1,
    "-embiggen_tiles": -1,
    "--embiggen_tiles": -1,
    "--upscale_strength": 1,
    "-F": 0,
    "--facetool_strength": 1,
    "--karras_max": 1,
    "--text_mask": -1,
    "-tm": -1,
    "--out_direction": -1,
    "-D": -1,
    "--new_prompt": 1,
    "--init_color": 1,
    "--h_symmetry_time_pct": 1,
    "--v_symmetry_time_pct": 1,
    "-r": 1,
    "--inpaint_replace": 1,
    "--seam_size": 1,
    "--seam_blur": 1,
    "--seam_strength": 1,
    "--seam_steps": 1,
    "--tile_size": 1,
    "--infill_method": 1,
    "--force_outpaint": 0,
    "-embiggen_strength": 1,
    "--embiggen_strength": 1,
    "-save_orig": 0,
    "--save_original": 0,
    "-p": 0,
    "--prompt_as_dir": 0,
    "-i": 0,
    "--individual": 0,
}
_OUR_SWITCHES = frozenset(name for switch in SWITCHES for name in switch.names)
_SWITCH_WORD = re.compile(r"-{1,2}[A-Za-z]")
# InvokeAI's legacy blend `dog:2,cat:1` (ours: `dog:2 cat:1`): a weight, then a comma.
_LEGACY_BLEND_COMMA = re.compile(r"(:[+-]?\d++(?:\.\d++)?+)\s*+,")
_LEGACY_BLEND_END = re.compile(r":[+-]?\d++(?:\.\d++)?+\s*+$")


def _command_from_dream(text: str, *, ours: bool, notes: list[str] | None = None) -> str:
    """A Dream line as our command; `notes` gets what was dropped from a foreign one."""
    text = check_text(text.strip(), "the Dream chunk")
    if not text:
        raise MetadataError("the Dream chunk is empty")
    if ours:
        return canonical_fix(text) if text.startswith("!fix ") else canonical(text)
    if text.startswith("!fix "):  # ours, its sd-metadata lost: a !fix line is no InvokeAI prompt
        return canonical_fix(text)
    if text[0] == "!" or (text[0] == "<" and text[-1] == ">"):  # `!mask ..`, `<free text>`
        raise MetadataError(
            f"the Dream chunk holds {shorten(text, 40)!r}, not a generation command"
        )
    # InvokeAI: prompts quoted with `\'` inside (their #842), switches this program lacks.
    dropped: list[str] = []
    try:
        command = canonical(_clean_foreign_dream(text, dropped))
    except (ValueError, InvokeError):
        return canonical(text)
    if dropped and notes is not None:
        notes.append(f"dropped InvokeAI's {', '.join(dropped)} (not in this program)")
    return command


def legacy_blend(prompt: str) -> str:
    """InvokeAI's legacy blend `dog:2,cat:1` as ours, `dog:2 cat:1`; other prompts unchanged."""
    if _LEGACY_BLEND_END.search(prompt) is None:
        return prompt
    return _LEGACY_BLEND_COMMA.sub(r"\1 ", prompt)


def _clean_foreign_dream(text: str, dropped: list[str] | None = None) -> str:
    if text[0] in "\"'":
        # A quoted prompt: find its closing quote, honouring backslash escapes. InvokeAI wrote
        # `\'` for apostrophes inside double quotes (their #842); unescape every `\x` here.
        quote, i, chars = text[0], 1, []
        while i < len(text) and text[i] != quote:
            if text[i] == "\\" and i + 1 < len(text):
                i += 1
            chars.append(text[i])
            i += 1
        if i >= len(text):
            raise MetadataError("the Dream chunk has an unterminated quote")
        prompt, rest = "".join(chars), text[i + 1 :]
    else:
        m = re.search(r"\s-{1,2}[A-Za-z]", text)
        prompt, rest = (text[: m.start()], text[m.start() :]) if m else (text, "")
        prompt = prompt.replace("\\'", "'")
    switches = _without_foreign_switches(rest, dropped)
    return f"{quote_prompt(legacy_blend(prompt.strip()))} {switches}".rstrip()


def _without_foreign_switches(switches: str, dropped: list[str] | None = None) -> str:
    """An InvokeAI line's switches, shell-quoted, less the ones this program lacks (named in
    `dropped`) and the trailing comment (2.3 ended each line with `# model_id=NAME`); the old
    `-V seed,weight;seed,weight` spelled as ours."""
    tokens = shlex.split(switches)
    comment = next((i for i, tok in enumerate(tokens) if tok.startswith("#")), len(tokens))
    tokens = tokens[:comment]
    kept: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        name = tok.split("=", 1)[0]
        known = name in _OUR_SWITCHES or name[:2] in _OUR_SWITCHES
        if name in _FOREIGN_SWITCHES or (_SWITCH_WORD.match(tok) and not known):
            if dropped is not None and name not in dropped:
                dropped.append(name)
            n = _FOREIGN_SWITCHES.get(name, -2)
            i += 1
            if "=" in tok:
                continue
            if n == -1:  # any number of numeric values
                while i < len(tokens) and (NUMBER.match(tokens[i]) or tokens[i].isalpha()):
                    i += 1
            elif n == -2:  # not InvokeAI 2.3's: its words up to the next switch
                while i < len(tokens) and not _SWITCH_WORD.match(tokens[i]):
                    i += 1
            else:
                i += n
            continue
        if name in ("-V", "--with_variations") and i + 1 < len(tokens) and "=" not in tok:
            kept += [tok, _old_variations(tokens[i + 1])]
            i += 2
            continue
        if name in ("-A", "-m", "--sampler") and i + 1 < len(tokens) and "=" not in tok:
            sampler = from_invokeai(tokens[i + 1])  # InvokeAI's name for one of ours, or None
            if sampler is None and dropped is not None:
                dropped.append(f"{tok} {tokens[i + 1]}")
            kept += [tok, sampler] if sampler else []
            i += 2
            continue
        kept.append(tok)
        i += 1
    return " ".join(shlex.quote(t) for t in kept)


def _old_variations(text: str) -> str:
    """InvokeAI 1.x's `-V seed,weight;seed,weight` as `seed:weight,seed:weight`."""
    if ";" not in text and ":" in text:
        return text
    pairs = [pair.split(",") for pair in text.split(";")]
    if not all(len(pair) == 2 for pair in pairs):
        return text
    return ",".join(f"{seed.strip()}:{weight.strip()}" for seed, weight in pairs)


def _prompt_from_parts(prompt: Any) -> str:
    if isinstance(prompt, str):
        return legacy_blend(prompt)
    if not isinstance(prompt, list) or not prompt:
        raise MetadataError(f"image.prompt is {type(prompt).__name__}, not text or a list")
    parts: list[tuple[str, float]] = []
    for item in prompt:
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise MetadataError("image.prompt items must be {prompt, weight} objects")
        weight = number(item.get("weight", 1.0), float, "image.prompt weight")
        parts.append((item["prompt"], weight))
    if len(parts) == 1:
        return parts[0][0]
    return " ".join(f"{t.strip().replace(':', chr(92) + ':')}:{w:g}" for t, w in parts)


def _command_from_sd_metadata(meta: dict[str, Any], notes: list[str] | None = None) -> str:
    """sd-metadata (ours, or InvokeAI 2.x's) -> the command: the prompt and numbers, variations,
    seamless, ControlNet, the image prompt, then -U (a !fix line recorded with it wins) and what
    it started from; `notes` gets what has no switch here."""
    image = _image_object(meta)
    outcrop = _last_outcrop(image.get("postprocessing"))
    if outcrop is not None and "outcrop" not in outcrop:
        return _command_from_invokeai_outcrop(image, outcrop, notes)
    fields = _core_fields(image)
    sampler = image.get("sampler")
    if notes is not None and isinstance(sampler, str) and "sampler" not in fields:
        notes.append(f"dropped sampler {shorten(sampler, 40)!r} (no such sampler here)")
    fields["with_variations"] = _variations(image.get("variations") or [])
    fields.update(_seamless_fields(image))
    fields.update(_control_fields(image.get("controlnet")))
    more = image.get("more_controlnets")
    if fields.get("controlnet") is not None and isinstance(more, list):
        units = [_control_fields(record) for record in more]
        fields["more_controls"] = tuple(ControlUnit(**unit) for unit in units if unit)
    fields.update(_image_prompt_fields(image.get("ip_adapter")))
    fields.update(_refiner_fields(image))
    upscale = _last_upscale(image.get("postprocessing"))
    if upscale is not None and isinstance(upscale.get("dream_command"), str):
        return canonical_fix(check_text(upscale["dream_command"], "image.postprocessing"))
    if upscale is not None:
        fields.update(_upscale_fields(upscale))
    fields.update(_source_fields(image, outcrop))
    return request_to_canonical(fields, "sd-metadata")


def _image_object(meta: dict[str, Any]) -> dict[str, Any]:
    """The `image` object of one picture (a grid's: its first image's)."""
    image = meta.get("image")
    if image is None and isinstance(meta.get("images"), list) and meta["images"]:
        image = meta["images"][0]  # a grid: its first image
    if not isinstance(image, dict):
        raise MetadataError("has no image object")
    if "prompt" not in image and "prompt" in meta:
        # InvokeAI 2.3's !fix of a picture without sd-metadata wrote the line's fields at the
        # top level, beside an `image` that holds only `postprocessing`.
        image = {**meta, **image}
    return image


def _core_fields(image: dict[str, Any]) -> dict[str, Any]:
    """The prompt, the numbers every picture has, and the sampler when it is one of ours."""
    fields: dict[str, Any] = {"prompt": _prompt_from_parts(image.get("prompt"))}
    for key, kind in (
        ("steps", int),
        ("seed", int),
        ("width", int),
        ("height", int),
        ("cfg_scale", float),
    ):
        if image.get(key) is not None:
            fields[key] = number(image[key], kind, f"image.{key}")
    sampler = image.get("sampler")
    if isinstance(sampler, str) and from_invokeai(sampler) is not None:
        fields["sampler"] = from_invokeai(sampler)
    return fields


def _variations(variations: Any) -> tuple[Variation, ...]:
    if not isinstance(variations, list):
        raise MetadataError("image.variations is not a list")
    chain = []
    for v in variations:
        # InvokeAI 2.x wrote {seed, weight}; some versions wrote [seed, weight] pairs.
        seed, weight = (v.get("seed"), v.get("weight")) if isinstance(v, dict) else (v, None)
        if isinstance(v, list | tuple) and len(v) == 2:
            seed, weight = v
        chain.append(
            Variation(
                number(seed, int, "variation seed"), number(weight, float, "variation weight")
            )
        )
    return tuple(chain)


def _seamless_fields(image: dict[str, Any]) -> dict[str, Any]:
    if image.get("seamless") is not True:
        return {}
    fields: dict[str, Any] = {"seamless": True}
    axes = image.get("seamless_axes")
    if axes is not None:
        fields["seamless_axes"] = _seamless_axes(axes)
    return fields


def _refiner_fields(image: dict[str, Any]) -> dict[str, Any]:
    """Our `refiner` and `refiner_start` keys as --refiner NAME --refiner_start F."""
    if not isinstance(image.get("refiner"), str):
        return {}
    fields: dict[str, Any] = {"refiner": check_text(image["refiner"], "image.refiner")}
    if image.get("refiner_start") is not None:
        fields["refiner_start"] = number(image["refiner_start"], float, "image.refiner_start")
    return fields


def _image_prompt_fields(record: Any) -> dict[str, Any]:
    """Our `ip_adapter` record as --ip_adapter NAME --ip_image FILE [--ip_weight W]."""
    if not (
        isinstance(record, dict)
        and isinstance(record.get("model"), str)
        and isinstance(record.get("image"), str)
    ):
        return {}
    fields: dict[str, Any] = {
        "ip_adapter": check_text(record["model"], "image.ip_adapter.model"),
        "ip_image": check_text(record["image"], "image.ip_adapter.image"),
    }
    if record.get("weight") is not None:
        weight = number(record["weight"], float, "image.ip_adapter.weight")
        if weight != 1.0:  # the record is complete; the line names what differs
            fields["ip_weight"] = weight
    return fields


def _control_fields(control: Any) -> dict[str, Any]:
    """Our `controlnet` record (complete) as the switches that differ from the defaults."""
    if not (
        isinstance(control, dict)
        and isinstance(control.get("model"), str)
        and isinstance(control.get("image"), str)
    ):
        return {}
    fields: dict[str, Any] = {
        "controlnet": check_text(control["model"], "image.controlnet.model"),
        "control_image": check_text(control["image"], "image.controlnet.image"),
    }
    if control.get("processor") in CONTROL_PROCESSORS:
        fields["control_processor"] = control["processor"]
    # The record is complete; the line names only what differs from the defaults.
    for key, default in (("weight", 1.0), ("start", 0.0), ("end", 1.0)):
        if control.get(key) is not None:
            value = number(control[key], float, f"image.controlnet.{key}")
            if value != default:
                fields[f"control_{key}"] = value
    return fields


def _upscale_fields(upscale: dict[str, Any]) -> dict[str, Any]:
    """Our -U entry of `postprocessing` (one without a !fix dream_command) as -U/--upscaler."""
    factor = number(upscale.get("scale"), int, "image.postprocessing scale")
    strength = number(upscale.get("strength"), float, "image.postprocessing strength")
    fields: dict[str, Any] = {
        "upscale": next(s for s in SWITCHES if s.field == "upscale").read(f"{factor} {strength!r}")
    }
    model = upscale.get("model")
    if isinstance(model, str) and model:
        fields["upscaler"] = check_text(model, "image.postprocessing model")
    return fields


def _source_fields(image: dict[str, Any], outcrop: dict[str, Any] | None) -> dict[str, Any]:
    """What the picture started from: an init image (with its mask and our outcrop), or the
    first pass of --hires_fix."""
    fields: dict[str, Any] = {}
    # InvokeAI 2.x's web UI wrote init_image_path/mask_image_path, and its img2img pictures
    # keep the strength as `strength_steps`.
    init_img = image.get("init_img") or image.get("init_image_path")
    if isinstance(init_img, str) and init_img:
        fields["init_img"] = check_text(init_img, "image.init_img")
        for key in ("strength", "strength_steps"):
            if image.get(key) is not None:
                fields["strength"] = number(image[key], float, f"image.{key}")
                break
        init_mask = image.get("init_mask") or image.get("mask_image_path")
        if isinstance(init_mask, str) and init_mask:
            fields["init_mask"] = check_text(init_mask, "image.init_mask")
        if outcrop is not None:
            fields["outcrop"] = _outcrop_from(outcrop)
    elif image.get("hires_fix") is True:
        # (InvokeAI 2.3 let --hires_fix override -I; here the two exclude each other, and the
        # init image, above, is what such an image's metadata is more likely to mean.)
        fields["hires_fix"] = True
        if image.get("strength") is not None:
            fields["strength"] = number(image["strength"], float, "image.strength")
    return fields


def _outcrop_from(entry: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    """The extension our own `outcrop` entry records in its `outcrop` words."""
    words = entry.get("outcrop")
    if not isinstance(words, list) or not all(isinstance(w, str | int) for w in words):
        raise MetadataError("image.postprocessing outcrop is not a list of sides and pixels")
    switch = next(s for s in SWITCHES if s.field == "outcrop")
    return switch.read(check_text(" ".join(str(w) for w in words), "image.postprocessing"))


def _last_upscale(postprocessing: Any) -> dict[str, Any] | None:
    """Our own -U entry of `postprocessing`, if there is one."""
    if not isinstance(postprocessing, list):
        return None
    found = [e for e in postprocessing if isinstance(e, dict) and e.get("type") == UPSCALE_TYPE]
    return found[-1] if found else None


def _last_outcrop(postprocessing: Any) -> dict[str, Any] | None:
    """The newest `outcrop` entry of `postprocessing`: InvokeAI appended one entry per !fix to
    the source's list, so a later face fix keeps the outcrop that set the picture's size."""
    if not isinstance(postprocessing, list):
        return None
    found = [e for e in postprocessing if isinstance(e, dict) and e.get("tool") == "outcrop"]
    return found[-1] if found else None


# InvokeAI 2.3's `!fix` dream_command: `!fix FILE -s N ...`, FILE unquoted (it may hold spaces)
# and always followed by -s. FILE ends at the first run of spaces that `-s ` follows: the run is
# taken whole, from its first space only (so a long run is crossed once, not once per space).
_INVOKEAI_FIX = re.compile(r"!fix\s++")
_INVOKEAI_FIX_STEPS = re.compile(r"(?<!\s)\s++(?=-s\s)")
INVOKEAI_OUTCROP_CELL = 64  # InvokeAI's outcrop rounded each side's pixels up to 64


def _command_from_invokeai_outcrop(
    image: dict[str, Any], entry: dict[str, Any], notes: list[str] | None = None
) -> str:
    """A picture InvokeAI 2.3 outcropped (`!fix FILE -c top 64`), as an img2img line on FILE.

    InvokeAI copied FILE's sd-metadata into the new picture (its prompt, seed and size are
    FILE's) and appended {tool: outcrop, dream_command: "!fix FILE -s .. -S .. -W .. -H .. -C ..
    -A .. -c SIDE PIXELS # model_id=.."}. The outcrop ran with FILE's prompt, the command's
    steps, seed, scale and sampler, at strength 0.9, on a canvas each side grown by its pixels
    rounded up to 64; the command's -W/-H are the model's default size, not the picture's, so
    the line leaves the size to --outcrop, which takes it from FILE. InvokeAI left two things
    unrecorded: a --new_prompt (FILE's prompt is all there is), and a -S typed on the !fix line
    (its command names FILE's seed).
    """
    command = entry.get("dream_command")
    found = _invokeai_fix(command.strip()) if isinstance(command, str) else None
    shown = repr(shorten(command, 60)) if isinstance(command, str) else repr(command)
    if found is None:
        raise MetadataError(
            f"image.postprocessing outcrop: dream_command {shown} is not InvokeAI's "
            "!fix FILE -s STEPS ... -c SIDE PIXELS"
        )
    what = "image.postprocessing dream_command"
    file = check_text(found[0], what)
    if len(file) > 1 and file[0] == file[-1] and file[0] in "\"'":  # `!fix "a b.png" -s ..`
        file = file[1:-1]
    dropped: list[str] = []
    try:
        switches = _without_foreign_switches(check_text(found[1], what), dropped)
    except ValueError as err:  # shlex: an unbalanced quote
        raise MetadataError(f"{what} {shown} cannot be split into words ({err})") from None
    line = parse_fix(f"{shlex.quote(file)} {switches}").line
    if not line.outcrop:
        raise MetadataError(f"{what} {shown} has no -c SIDE PIXELS")
    cell = INVOKEAI_OUTCROP_CELL
    seed = line.seed if line.seed is not None else image.get("seed")
    fields: dict[str, Any] = {
        "prompt": _prompt_from_parts(image.get("prompt")),
        "steps": line.steps,
        "seed": None if seed is None else number(seed, int, "image.seed"),
        "cfg_scale": line.cfg_scale,
        "sampler": line.sampler,
        "init_img": file,
        "strength": OUTCROP_STRENGTH,
        "outcrop": tuple((side, -(-pixels // cell) * cell) for side, pixels in line.outcrop),
    }
    if dropped and notes is not None:
        notes.append(f"dropped InvokeAI's {', '.join(dropped)} from its !fix (not in this program)")
    return request_to_canonical(fields, "sd-metadata")


def _invokeai_fix(command: str) -> tuple[str, str] | None:
    """`!fix FILE -s 50 ...` -> (FILE, "-s 50 ..."), or None when the command is not that."""
    head = _INVOKEAI_FIX.match(command)
    if head is None:
        return None
    rest = command[head.end() :]
    steps = _INVOKEAI_FIX_STEPS.search(rest, 1)  # FILE is one character or more
    if steps is None:
        return None
    return rest[: steps.start()], rest[steps.end() :]


def _seamless_axes(axes: Any) -> tuple[str, ...]:
    """sd-metadata's `seamless_axes` (["x"] as we write it, or "x,y") as the switch reads it."""
    if isinstance(axes, list) and all(isinstance(axis, str) for axis in axes):
        axes = ",".join(axes)
    if not isinstance(axes, str):
        raise MetadataError(f"image.seamless_axes is {axes!r}, not a list of x and y")
    switch = next(s for s in SWITCHES if s.field == "seamless_axes")
    read = switch.read(check_text(axes, "image.seamless_axes"))
    return () if read == SEAMLESS_AXES else read  # both: the line says --seamless alone
