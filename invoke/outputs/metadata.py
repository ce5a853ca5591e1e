"""PNG metadata written with every picture: `Dream` (the canonical command), `sd-metadata`
(InvokeAI 2.x's JSON) and `parameters` (AUTOMATIC1111's text), so other tools show our settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from invoke import __version__
from invoke.errors import OutputError
from invoke.line.prompt import Parts, Prompt, SubPrompt
from invoke.line.prompt import Sequence as Fragments
from invoke.line.request import ControlUnit, Request
from invoke.line.samplers import SAMPLER_TABLE, a1111_label
from invoke.line.switch_defaults import REFINER_START, UPSCALER_REPOS
from invoke.line.switches import SEAMLESS_AXES

APP_ID = "invoke-dream"
APP_VERSION = __version__

# Our sampler names <-> the names AUTOMATIC1111 writes into `parameters`.
A1111_SAMPLERS: dict[str, str] = {name: row.a1111 for name, row in SAMPLER_TABLE.items()}


def _split_prompt(request: Request) -> tuple[tuple[tuple[str, float], ...], str]:
    words = request.parsed_prompt
    return tuple((p.text, p.weight) for p in words.positive), words.negative.text


# -- prompts as the other tools read them -------------------------------------------------------

# AUTOMATIC1111 reads `(`, `)`, `[`, `]` and `\` as emphasis syntax; escaped, they are text.
_A1111_SPECIAL = re.compile(r"([\\()\[\]])")
# Words A1111 splits a prompt at (`AND`: composable diffusion; `BREAK`: a new 75-token chunk).
# CLIP's tokenizer lowercases, so the lowercase word encodes the same.
_A1111_KEYWORDS = re.compile(r"\b(AND|BREAK)\b")


def _a1111_words(text: str) -> str:
    text = _A1111_SPECIAL.sub(r"\\\1", text)
    return _A1111_KEYWORDS.sub(lambda m: m.group(1).lower(), text)


def _a1111_sequence(fragments: Fragments, factor: float = 1.0) -> str:
    """Weighted fragments in A1111's syntax: `(words:1.3)` for each weighted run, the rest as
    text with A1111's special characters escaped. A1111 multiplies nested weights as we do, so
    one flat group per run says the same."""
    return "".join(
        _weighted(_a1111_words(f.text), round(f.weight * factor, 6), "({words}:{weight:g})")
        for f in fragments
    )


def _weighted(words: str, weight: float, group: str) -> str:
    """One run of words at `weight` in another tool's syntax (`group` spells the group, e.g.
    "({words}:{weight:g})"); its leading and trailing spaces stay outside the group."""
    if weight == 1.0 or not words.strip():
        return words
    lead = words[: len(words) - len(words.lstrip())]
    tail = words[len(words.rstrip()) :]
    return lead + group.format(words=words.strip(), weight=weight) + tail


def _a1111_part(fragments: Fragments | Parts) -> str | None:
    """One sub-prompt in A1111's syntax, or None when A1111 has nothing that means the same
    (`.blend()`: A1111 does not mix embeddings). `.and()` puts each prompt in its own 77-token
    chunk, which is what A1111's BREAK does; its weights scale the words, as a group's do."""
    if not isinstance(fragments, Parts):
        return _a1111_sequence(fragments)
    if fragments.combine != "and":
        return None
    return " BREAK ".join(_a1111_sequence(seq, weight).strip() for seq, weight in fragments.parts)


def a1111_prompts(prompt: Prompt) -> tuple[str, str, bool]:
    """(positive, negative, exact) in AUTOMATIC1111's prompt syntax. `exact` is False when the
    prompt mixes sub-prompts (`a cat:0.7 a dog:0.3`, `.blend()`): A1111 has no embedding mix,
    so the words are written one after the other (what A1111 would draw from them) and the
    caller names the mix in a field of its own, never as a weight A1111 would misread."""
    parts = [_a1111_part(sub.fragments) for sub in prompt.positive]
    exact = len(parts) == 1 and parts[0] is not None
    words = ", ".join(_a1111_words(sub.plain) for sub in prompt.positive)
    positive = parts[0] if exact and parts[0] is not None else words
    negative = _a1111_part(prompt.negative.fragments)
    if negative is None:
        exact = False
        negative = _a1111_words(prompt.negative.plain)
    return " ".join(positive.split()), " ".join(negative.split()), exact


_INVOKEAI_SIGNS = re.compile(r"(?<=\S)([+-]+)(?=\s|$)")


def _invokeai_sequence(fragments: Fragments) -> str:
    """Weighted fragments in InvokeAI 2.3's syntax, every colon escaped (InvokeAI 2.3 reads
    any `:` as a sub-prompt weight, so `a photo: city` would be two prompts mixed): `(words)1.3`
    for each weighted run. Our parser reads the text back to the same fragments."""
    out = []
    for fragment in fragments:
        words = re.sub(r"([():])", r"\\\1", fragment.text)
        words = _INVOKEAI_SIGNS.sub(lambda m: "".join("\\" + c for c in m.group(1)), words)
        out.append(_weighted(words, fragment.weight, "({words}){weight:g}"))
    return "".join(out)


def _invokeai_text(sub: SubPrompt) -> str:
    """A sub-prompt's text as InvokeAI 2.3 reads it: its colons escaped."""
    if ":" not in sub.text:
        return sub.text
    if isinstance(sub.fragments, Parts):
        return sub.text.replace(":", "\\:")
    return _invokeai_sequence(sub.fragments)


def _invokeai_prompt(request: Request) -> str:
    """The whole prompt for sd-metadata, as InvokeAI 2.3 reads it: unchanged unless it holds a
    colon (a `<lora:...>` reference or words with a colon); then the words are escaped and each
    LoRA is InvokeAI 2.3's `withLora(name, weight)`."""
    if ":" not in request.prompt:
        return request.prompt
    parsed = request.parsed_prompt
    text = _invokeai_text(parsed.positive[0])
    if parsed.negative.text:
        text += f" [{_invokeai_text(parsed.negative)}]"
    for use in parsed.loras:
        text += f" withLora({use.name}, {use.weight:g})"
    return text


def image_hash(image: Image.Image) -> str:
    """sha256 of the pixels (not the file), so re-saving with other metadata keeps the hash."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def image_metadata(
    request: Request, *, orig_hash: str = "", lora_hashes: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The `image` object of `sd-metadata` (InvokeAI 2.x shape) for one resolved request.

    lora_hashes: each LoRA's hash by name (lora_hash), recorded beside its name and weight."""
    positive, negative = _split_prompt(request)
    if len(positive) <= 1:
        # InvokeAI kept an unweighted prompt whole, `[negative]` included: same here.
        prompt = [{"prompt": _invokeai_prompt(request), "weight": 1.0}]
    else:
        parsed = request.parsed_prompt
        prompt = [{"prompt": _invokeai_text(sub), "weight": sub.weight} for sub in parsed.positive]
        if negative:
            prompt[-1]["prompt"] = f"{prompt[-1]['prompt']} [{_invokeai_text(parsed.negative)}]"
        # the sub-prompts leave LoRA references out; they hold for the whole line, so they go
        # with the last part, as the negative prompt does, and a fetched line keeps them.
        for use in request.parsed_prompt.loras:
            prompt[-1]["prompt"] += f" withLora({use.name}, {use.weight:g})"
    img2img = request.init_img is not None
    meta: dict[str, Any] = {
        "type": "img2img" if img2img else "txt2img",
        "prompt": prompt,
        "seed": request.seed,
        "variations": [{"seed": v.seed, "weight": v.weight} for v in request.with_variations],
        "sampler": request.sampler,
        "steps": request.steps,
        "cfg_scale": request.cfg_scale,
        "threshold": 0,
        "perlin": 0,
        "width": request.width,
        "height": request.height,
        "seamless": request.seamless,
        # InvokeAI 2.3 wrote this flag (type stays txt2img). The strength is kept with it: it
        # sets the second pass, which InvokeAI left unrecorded (its default, 0.75, is ours too).
        "hires_fix": request.hires_fix,
        "postprocessing": _postprocessing(request),
        "init_img": request.init_img,
        "init_mask": request.init_mask,
        "strength": request.strength if img2img or request.hires_fix else None,
        "orig_hash": orig_hash,
    }
    if img2img:
        # InvokeAI 2.3's web UI wrote these beside init_img/init_mask, and reads them back
        meta["fit"] = request.fit
        meta["init_image_path"] = request.init_img
        if request.init_mask is not None:
            meta["mask_image_path"] = request.init_mask
    if request.skip_normalize:
        # -x by the name InvokeAI 2.3's metadata_loads gives it (every key becomes a switch)
        meta["skip_normalize"] = True
    loras = request.parsed_prompt.loras
    if loras:
        hashes = lora_hashes or {}
        meta["loras"] = [
            {"name": u.name, "weight": u.weight, "hash": hashes.get(u.name, "")} for u in loras
        ]
    if request.seamless:
        # InvokeAI 2.x wrote only the flag (both axes); the axes say which, for one-axis tiles.
        meta["seamless_axes"] = list(request.seamless_axes or SEAMLESS_AXES)
    if request.controlnet is not None:
        # the first unit; a line's second and later --controlnet units follow in a list
        meta["controlnet"] = _control_record(request.controls[0])
        if request.more_controls:
            meta["more_controlnets"] = [_control_record(u) for u in request.more_controls]
    if request.ip_adapter is not None:
        # ours, beside the controlnet record: an image prompt and its adapter (InvokeAI 2.x had
        # none; its 3.x+ ipAdapters name gallery images, not files)
        meta["ip_adapter"] = {
            "model": request.ip_adapter,
            "image": request.ip_image,
            "weight": _or(request.ip_weight, 1.0),
        }
    if request.refiner is not None:
        meta["refiner"] = request.refiner
        meta["refiner_start"] = _or(request.refiner_start, REFINER_START)
    return meta


def _control_record(unit: ControlUnit) -> dict[str, Any]:
    """One ControlNet unit, every value written (the defaults too)."""
    return {
        "model": unit.controlnet,
        "image": unit.control_image,
        "processor": unit.control_processor,
        "weight": _or(unit.control_weight, 1.0),
        "start": _or(unit.control_start, 0.0),
        "end": _or(unit.control_end, 1.0),
    }


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _postprocessing(request: Request) -> list[dict[str, Any]] | None:
    """InvokeAI 2.x recorded a `!fix` in `postprocessing` as {tool, dream_command}; an outcrop
    is recorded the same way, with its sides and pixels (as InvokeAI's -c took them) so that
    sd-metadata alone can bring the extension back. -U comes last, as InvokeAI's {type: esrgan,
    scale, strength} did, with the upscaler that made it."""
    steps: list[dict[str, Any]] = []
    if request.outcrop and request.init_img is not None:
        steps.append(
            {
                "tool": "outcrop",
                "outcrop": [str(word) for pair in request.outcrop for word in pair],
                "dream_command": request.to_fix_command(),
            }
        )
    if request.upscale:
        factor, strength = request.upscale
        entry: dict[str, Any] = {
            "type": UPSCALE_TYPE,
            "scale": factor,
            "strength": strength,
            "model": request.upscaler or UPSCALER_REPOS[factor],
        }
        if is_file_upscale(request):
            entry["dream_command"] = request.to_fix_command()
        steps.append(entry)
    return steps or None


def is_file_upscale(request: Request) -> bool:
    """`!fix FILE -U`'s request: the init image enlarged, nothing drawn (so no steps)."""
    return bool(request.upscale) and request.init_img is not None and request.steps is None


UPSCALE_TYPE = "sd-upscale"  # ours; InvokeAI's "esrgan" was Real-ESRGAN, which this is not


def sd_metadata(
    request: Request,
    *,
    model_id: str,
    model_hash: str,
    orig_hash: str = "",
    lora_hashes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The whole `sd-metadata` object for one image."""
    return {
        "model": "stable diffusion",
        "model_id": model_id,
        "model_hash": model_hash,
        "app_id": APP_ID,
        "app_version": APP_VERSION,
        "image": image_metadata(request, orig_hash=orig_hash, lora_hashes=lora_hashes),
    }


def _a1111_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _a1111_sampler(name: str) -> list[tuple[str, str]]:
    """`Sampler` and `Schedule type` as A1111 1.9+ writes them (the sampler table's pair):
    without a Schedule type A1111 fills one in, which need not be the schedule that ran."""
    if name not in SAMPLER_TABLE:
        return [("Sampler", name)]
    label, schedule = a1111_label(name)
    return [("Sampler", label), ("Schedule type", schedule)]


def _a1111_hires(request: Request, first_pass: tuple[int, int] | None) -> list[tuple[str, str]]:
    """--hires_fix as A1111's txt2img writes its hires fix: the second pass's strength, the
    factor (or the size, when no one factor gives both sides), its steps and upscaler. Ours
    upscales the latents bilinearly: A1111's "Latent". A1111 runs exactly `Hires steps` in the
    second pass; ours takes int(strength * steps), so that count is what is written."""
    if first_pass is None or not request.hires_fix or request.steps is None:
        return []
    width, height = request.width or 0, request.height or 0
    strength = _or(request.strength, 0.75)
    fields = [("Denoising strength", _a1111_number(strength))]
    scale = width / first_pass[0]
    if int(first_pass[0] * scale) == width and int(first_pass[1] * scale) == height:
        fields.append(("Hires upscale", _a1111_number(round(scale, 6))))
    else:
        fields.append(("Hires resize", f"{width}x{height}"))
    second = int(strength * request.steps)
    if second:
        fields.append(("Hires steps", str(second)))
    fields.append(("Hires upscaler", "Latent"))
    return fields


def _a1111_controlnet(request: Request) -> list[tuple[str, str]]:
    """As the sd-webui-controlnet extension writes a unit: the preprocessor ("none" when the
    image is used as it is), and the image scaled to cover the picture ("Crop and Resize")."""
    fields = []
    for number, control in enumerate(request.controls):  # one `ControlNet N` per unit
        unit = [
            ("Module", control.control_processor or "none"),
            ("Model", control.controlnet),
            ("Weight", _a1111_number(_or(control.control_weight, 1.0))),
            ("Resize Mode", "Crop and Resize"),
            ("Guidance Start", _a1111_number(_or(control.control_start, 0.0))),
            ("Guidance End", _a1111_number(_or(control.control_end, 1.0))),
        ]
        fields.append((f"ControlNet {number}", ", ".join(f"{k}: {v}" for k, v in unit)))
    return fields


def a1111_parameters(
    request: Request,
    *,
    model_id: str,
    model_hash: str = "",
    lora_hashes: Mapping[str, str] | None = None,
    first_pass: tuple[int, int] | None = None,
) -> str:
    """AUTOMATIC1111's `parameters` text, its fields in the order A1111 writes them, so that
    A1111 (and the sites that read its text) read back our settings.

    first_pass: --hires_fix's first-pass size (None: one pass); A1111's `Size` is that size."""
    positive, negative, exact = a1111_prompts(request.parsed_prompt)
    # AUTOMATIC1111 names LoRAs in the prompt as <lora:name:weight>.
    uses = request.parsed_prompt.loras
    lines = [" ".join([positive, *(f"<lora:{u.name}:{u.weight:g}>" for u in uses)]).strip()]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    hires = _a1111_hires(request, first_pass)
    fields: list[tuple[str, str]] = []
    if request.steps is not None:
        fields.append(("Steps", str(request.steps)))
    if request.sampler is not None:
        fields += _a1111_sampler(request.sampler)
    if request.cfg_scale is not None:
        fields.append(("CFG scale", _a1111_number(request.cfg_scale)))
    if request.seed is not None:
        fields.append(("Seed", str(request.seed)))
    size = first_pass if hires and first_pass else (request.width, request.height)
    if size[0] is not None and size[1] is not None:
        fields.append(("Size", f"{size[0]}x{size[1]}"))
    if model_hash:
        fields.append(("Model hash", model_hash[:10]))
    fields.append(("Model", model_id))
    if len(request.with_variations) == 1:
        v = request.with_variations[0]
        fields.append(("Variation seed", str(v.seed)))
        fields.append(("Variation seed strength", _a1111_number(v.weight)))
    if request.init_img is not None and request.strength is not None:
        fields.append(("Denoising strength", _a1111_number(request.strength)))
    fields += hires[:1]  # Denoising strength stands here in A1111's order
    if request.seamless and set(request.seamless_axes or SEAMLESS_AXES) == set(SEAMLESS_AXES):
        # AUTOMATIC1111's tiling is both axes or none: a one-axis picture has no honest way to
        # say it here (Dream and sd-metadata do).
        fields.append(("Tiling", "True"))
    fields += hires[1:]
    if not exact:
        # A1111 has no embedding mix: the prompt above is the words; this is the mix itself.
        fields.append(("Invoke prompt", request.parsed_prompt.text))
    if request.refiner is not None:
        # As A1111 writes its refiner: the model's name (a path's last part) and the switch point.
        fields.append(("Refiner", Path(request.refiner).name))
        fields.append(
            ("Refiner switch at", _a1111_number(_or(request.refiner_start, REFINER_START)))
        )
    fields += _a1111_controlnet(request)
    if request.upscale:
        # the keys AUTOMATIC1111's Extras tab writes for an upscale
        fields.append(("Postprocess upscale by", str(request.upscale[0])))
        upscaler = request.upscaler or UPSCALER_REPOS[request.upscale[0]]
        fields.append(("Postprocess upscaler", upscaler))
    known = lora_hashes or {}
    hashes = [f"{u.name}: {known[u.name]}" for u in uses if known.get(u.name)]
    if hashes:
        fields.append(("Lora hashes", ", ".join(hashes)))  # as AUTOMATIC1111 writes them
    fields.append(("Version", f"{APP_ID} {APP_VERSION}"))
    lines.append(", ".join(f"{k}: {_a1111_quoted(v)}" for k, v in fields))
    return "\n".join(lines)


def _a1111_quoted(value: str) -> str:
    # A1111 quotes a value that holds its separators (a comma, a colon, a line break) as JSON.
    if any(c in value for c in ',:"\n'):
        return json.dumps(value, ensure_ascii=False)
    return value


def png_chunks(
    request: Request,
    *,
    model_id: str,
    model_hash: str,
    image: Image.Image | None = None,
    command: str | None = None,
    lora_hashes: Mapping[str, str] | None = None,
    first_pass: tuple[int, int] | None = None,
) -> dict[str, str]:
    """`Dream`, `sd-metadata` and `parameters` texts for one image made from `request`
    (first_pass: --hires_fix's first-pass size, None for one pass)."""
    dream = command if command is not None else request.to_command()
    meta = sd_metadata(
        request,
        model_id=model_id,
        model_hash=model_hash,
        orig_hash=image_hash(image) if image is not None else "",
        lora_hashes=lora_hashes,
    )
    parameters = a1111_parameters(
        request,
        model_id=model_id,
        model_hash=model_hash,
        lora_hashes=lora_hashes,
        first_pass=first_pass,
    )
    return {
        "Dream": dream,
        "sd-metadata": json.dumps(meta, ensure_ascii=False),
        "parameters": parameters,
    }


def grid_chunks(
    requests: Sequence[Request],
    *,
    model_id: str,
    model_hash: str,
    images: Sequence[Image.Image] = (),
    command: str | None = None,
    lora_hashes: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Chunks for a grid: `sd-metadata` with `images: [...]`, `Dream` the command line."""
    if not requests:
        raise OutputError("grid: no images to put in it")
    hashes = [image_hash(im) for im in images] if images else [""] * len(requests)
    meta = {
        "model": "stable diffusion",
        "model_id": model_id,
        "model_hash": model_hash,
        "app_id": APP_ID,
        "app_version": APP_VERSION,
        "images": [
            image_metadata(r, orig_hash=h, lora_hashes=lora_hashes)
            for r, h in zip(requests, hashes, strict=False)
        ],
    }
    first = requests[0]
    parameters = a1111_parameters(
        first, model_id=model_id, model_hash=model_hash, lora_hashes=lora_hashes
    )
    return {
        "Dream": command if command is not None else first.to_command(),
        "sd-metadata": json.dumps(meta, ensure_ascii=False),
        "parameters": parameters,
    }
