"""PNG metadata written with every picture: `Dream` (the canonical command), `sd-metadata`
(InvokeAI 2.x's JSON) and `parameters` (AUTOMATIC1111's text), so other tools show our settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from invoke import __version__
from invoke.errors import OutputError
from invoke.line.request import Request
from invoke.line.samplers import SAMPLER_TABLE
from invoke.line.switch_defaults import UPSCALER_REPOS
from invoke.line.switches import SEAMLESS_AXES

APP_ID = "invoke-dream"
APP_VERSION = __version__

# Our sampler names <-> the names AUTOMATIC1111 writes into `parameters`.
A1111_SAMPLERS: dict[str, str] = {name: row.a1111 for name, row in SAMPLER_TABLE.items()}


def _split_prompt(request: Request) -> tuple[tuple[tuple[str, float], ...], str]:
    words = request.parsed_prompt
    return tuple((p.text, p.weight) for p in words.positive), words.negative.text


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
        prompt = [{"prompt": request.prompt, "weight": 1.0}]
    else:
        prompt = [{"prompt": text, "weight": weight} for text, weight in positive]
        if negative:
            prompt[-1]["prompt"] = f"{prompt[-1]['prompt']} [{negative}]"
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
        meta["controlnet"] = {
            "model": request.controlnet,
            "image": request.control_image,
            "processor": request.control_processor,
            "weight": _or(request.control_weight, 1.0),
            "start": _or(request.control_start, 0.0),
            "end": _or(request.control_end, 1.0),
        }
    return meta


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


def a1111_parameters(
    request: Request,
    *,
    model_id: str,
    model_hash: str = "",
    lora_hashes: Mapping[str, str] | None = None,
) -> str:
    """AUTOMATIC1111's `parameters` text, so other tools show our settings."""
    positive, negative = _split_prompt(request)
    if len(positive) == 1:
        prompt_text = positive[0][0]
    else:
        prompt_text = " ".join(f"{t.replace(':', chr(92) + ':')}:{w:g}" for t, w in positive)
    # AUTOMATIC1111 names LoRAs in the prompt as <lora:name:weight>.
    uses = request.parsed_prompt.loras
    lines = [" ".join([prompt_text, *(f"<lora:{u.name}:{u.weight:g}>" for u in uses)])]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    fields: list[tuple[str, str]] = []
    if request.steps is not None:
        fields.append(("Steps", str(request.steps)))
    if request.sampler is not None:
        fields.append(("Sampler", A1111_SAMPLERS.get(request.sampler, request.sampler)))
    if request.cfg_scale is not None:
        fields.append(("CFG scale", _a1111_number(request.cfg_scale)))
    if request.seed is not None:
        fields.append(("Seed", str(request.seed)))
    if request.width is not None and request.height is not None:
        fields.append(("Size", f"{request.width}x{request.height}"))
    if model_hash:
        fields.append(("Model hash", model_hash[:10]))
    fields.append(("Model", model_id))
    if request.init_img is not None and request.strength is not None:
        fields.append(("Denoising strength", _a1111_number(request.strength)))
    if len(request.with_variations) == 1:
        v = request.with_variations[0]
        fields.append(("Variation seed", str(v.seed)))
        fields.append(("Variation seed strength", _a1111_number(v.weight)))
    if request.seamless and set(request.seamless_axes or SEAMLESS_AXES) == set(SEAMLESS_AXES):
        # AUTOMATIC1111's tiling is both axes or none: a one-axis picture has no honest way to
        # say it here (Dream and sd-metadata do).
        fields.append(("Tiling", "True"))
    if request.controlnet is not None:
        # As the sd-webui-controlnet extension writes a unit: the preprocessor ("none" when the
        # image is used as it is), and the image scaled to cover the picture ("Crop and Resize").
        unit = [
            ("Module", request.control_processor or "none"),
            ("Model", request.controlnet),
            ("Weight", _a1111_number(_or(request.control_weight, 1.0))),
            ("Resize Mode", "Crop and Resize"),
            ("Guidance Start", _a1111_number(_or(request.control_start, 0.0))),
            ("Guidance End", _a1111_number(_or(request.control_end, 1.0))),
        ]
        fields.append(("ControlNet 0", ", ".join(f"{k}: {v}" for k, v in unit)))
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

    def quoted(value: str) -> str:
        # A1111 quotes values that contain its separators.
        return json.dumps(value) if ("," in value or ":" in value or '"' in value) else value

    lines.append(", ".join(f"{k}: {quoted(v)}" for k, v in fields))
    return "\n".join(lines)


def png_chunks(
    request: Request,
    *,
    model_id: str,
    model_hash: str,
    image: Image.Image | None = None,
    command: str | None = None,
    lora_hashes: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """`Dream`, `sd-metadata` and `parameters` texts for one image made from `request`."""
    dream = command if command is not None else request.to_command()
    meta = sd_metadata(
        request,
        model_id=model_id,
        model_hash=model_hash,
        orig_hash=image_hash(image) if image is not None else "",
        lora_hashes=lora_hashes,
    )
    parameters = a1111_parameters(
        request, model_id=model_id, model_hash=model_hash, lora_hashes=lora_hashes
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
