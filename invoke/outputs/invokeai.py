"""InvokeAI 3.x-5.x pictures -> our command: their `invokeai_metadata` chunk (the fields of
InvokeAI's core_metadata node), or, without it, that node inside their `invokeai_graph`.

What the fields hold that no switch here has (ControlNets, IP adapters, a refiner, a VAE...) is
named in one note; a chunk with no prompt is refused.
"""

from __future__ import annotations

import re
from typing import Any

from invoke.errors import MetadataError
from invoke.line.samplers import from_invokeai
from invoke.line.switches import shorten
from invoke.outputs.canonical import check_text, number, one_line, request_to_canonical

# InvokeAI's core_metadata / metadata_accumulator node: the graph node that holds these fields.
_METADATA_NODES = ("core_metadata", "metadata_accumulator")
# A LoRA's name as our prompt's `<lora:NAME:W>` takes it: no spaces, colons or brackets.
_LORA_NAME = re.compile(r"[^\s:<>()\[\]]++")
# Lists of units with no equivalent here, by InvokeAI's key, and what one is called.
_UNITS = {
    "controlnets": "ControlNet unit",
    "ipAdapters": "IP-Adapter unit",
    "t2iAdapters": "T2I-Adapter unit",
}
# Settings with no switch here, named when set.
_UNMATCHED = {
    "vae": "VAE",
    "clip_skip": "CLIP skip",
    "cfg_rescale_multiplier": "CFG rescale",
    "refiner_model": "SDXL refiner",
}


def metadata_from_graph(graph: Any) -> dict[str, Any]:
    """The core_metadata node's fields in an `invokeai_graph` chunk."""
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    if isinstance(nodes, dict):
        nodes = list(nodes.values())
    for node in nodes if isinstance(nodes, list) else []:
        if isinstance(node, dict) and node.get("type") in _METADATA_NODES:
            return node
    raise MetadataError("invokeai_graph holds no metadata node (no generation command in it)")


def command_from_invokeai(meta: Any, notes: list[str]) -> str:
    """InvokeAI 3.x-5.x metadata (a JSON object) -> our command; what has no switch goes to
    `notes`, one line."""
    if not isinstance(meta, dict) or not isinstance(meta.get("positive_prompt"), str):
        raise MetadataError("invokeai_metadata holds no positive_prompt (no generation command)")
    prompt = _literal(one_line(check_text(meta["positive_prompt"], "positive_prompt")))
    dropped: list[str] = []
    prompt += _lora_words(meta.get("loras"), dropped)
    negative = meta.get("negative_prompt")
    if isinstance(negative, str) and negative.strip():
        neg = _literal(one_line(check_text(negative, "negative_prompt")))
        prompt = f"{prompt} [{neg.replace('[', '(').replace(']', ')')}]"
    fields: dict[str, Any] = {"prompt": prompt}
    for key, field, kind in (
        ("steps", "steps", int),
        ("seed", "seed", int),
        ("width", "width", int),
        ("height", "height", int),
        ("cfg_scale", "cfg_scale", float),
    ):
        value = meta.get(key)
        if isinstance(value, list):  # a CFG scale per step
            dropped.append(f"the {key} per step (one {key} here)")
        elif value is not None:
            fields[field] = number(value, kind, key)
    scheduler = meta.get("scheduler")
    if isinstance(scheduler, str):
        sampler = from_invokeai(scheduler)
        if sampler is None:
            dropped.append(f"scheduler {shorten(scheduler, 30)!r} (no such sampler here)")
        else:
            fields["sampler"] = sampler
    fields.update(_seamless(meta))
    fields.update(_start(meta, dropped))
    _unmatched(meta, dropped)
    model = _name(meta.get("model"))
    if model:
        notes.append(f"made with model {shorten(model, 60)!r} (choose it with !switch)")
    if dropped:
        notes.append(f"dropped {'; '.join(dropped)}")
    return request_to_canonical(fields, "invokeai_metadata")


def _name(model: Any) -> str:
    """A model's name: 3.x wrote {model_name, base_model}, 4.x+ {key, name, base, ...}."""
    if isinstance(model, str):
        return model
    if isinstance(model, dict):
        for key in ("name", "model_name", "key"):
            if isinstance(model.get(key), str) and model[key]:
                return model[key]
    return ""


def _lora_words(loras: Any, dropped: list[str]) -> str:
    """` <lora:NAME:W>` for each LoRA (3.x: {lora, weight}; 4.x+: {model, weight})."""
    words = ""
    for i, item in enumerate(loras if isinstance(loras, list) else []):
        if not isinstance(item, dict):
            continue
        name = check_text(_name(item.get("model") or item.get("lora")), "loras")
        weight = number(item.get("weight", 1.0), float, "loras weight")
        if _LORA_NAME.fullmatch(name):
            words += f" <lora:{name}:{weight:g}>"
        else:
            dropped.append(f"LoRA {i} ({shorten(name, 30)!r} is no name a prompt can hold)")
    return words


def _seamless(meta: dict[str, Any]) -> dict[str, Any]:
    axes = tuple(axis for axis in ("x", "y") if meta.get(f"seamless_{axis}") is True)
    if not axes:
        return {}
    return {"seamless": True} if len(axes) == 2 else {"seamless": True, "seamless_axes": axes}


def _start(meta: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    """img2img (an init image and its strength, or 1 - denoising_start) or the hires fix."""
    strength = meta.get("strength")
    if strength is None and meta.get("denoising_start") is not None:
        strength = 1 - number(meta["denoising_start"], float, "denoising_start")
    init = _name(meta.get("init_image")) or _image_name(meta.get("init_image"))
    if init:
        fields: dict[str, Any] = {"init_img": check_text(init, "init_image")}
        if strength is not None:
            fields["strength"] = number(strength, float, "strength")
        return fields
    if meta.get("hrf_enabled") is True:
        fields = {"hires_fix": True}
        if meta.get("hrf_strength") is not None:
            fields["strength"] = number(meta["hrf_strength"], float, "hrf_strength")
        return fields
    if strength is not None and "txt2img" not in str(meta.get("generation_mode", "txt2img")):
        dropped.append("the canvas image it started from (not stored in the picture)")
    return {}


def _image_name(image: Any) -> str:
    return image.get("image_name", "") if isinstance(image, dict) else ""


def _unmatched(meta: dict[str, Any], dropped: list[str]) -> None:
    for key, what in _UNITS.items():
        units = meta.get(key)
        for i in range(len(units) if isinstance(units, list) else 0):
            dropped.append(f"{what} {i} (no such unit here)")
    for key in ("positive_style_prompt", "negative_style_prompt"):  # SDXL's second prompts
        style = meta.get(key)
        prompt = meta.get(key.replace("style_", ""))
        if isinstance(style, str) and style.strip() and style.strip() != str(prompt).strip():
            dropped.append(f"{key} {shorten(style, 30)!r} (one prompt here)")
    canvas = meta.get("canvas_v2_metadata")
    if isinstance(canvas, dict) and any(isinstance(v, list) and v for v in canvas.values()):
        dropped.append("the canvas layers (no canvas here)")
    for key, what in _UNMATCHED.items():
        value = meta.get(key)
        if value not in (None, "", [], {}, 0):  # 0: no CLIP skip, no rescale
            shown = _name(value) or str(value)
            dropped.append(f"{what} {shorten(shown, 30)!r} (no such setting here)")


def _literal(prompt: str) -> str:
    """InvokeAI stores a prompt after its dynamic prompts expanded `{a|b}`: braces and bars left
    in it are text, escaped so that here they are no sweep."""
    return "".join("\\" + ch if ch in "{|}" else ch for ch in prompt)
