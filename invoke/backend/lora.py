"""LoRA files merged into a model's weights for the jobs whose prompt names them.

A LoRA stores, for some of a model's Linear and Conv2d layers, two thin matrices `down` (rank x
in) and `up` (out x rank) and a scale `alpha`; the layer's weight becomes

    W + strength * (alpha / rank) * up @ down

Merging that into the weights (instead of running the two small matrices beside every layer, as
PEFT does) costs nothing per step, keeps a compiled UNet's graph valid (the weights change in
place, at the same addresses, so CUDA graphs stay right) and works on fused QKV projections,
whose q/k/v weights are views into the fused one (speed.fuse_qkv).

A model keeps its current set of LoRAs merged until a job asks for another set: a batch of lines
with the same LoRA merges it once. Before a different set is merged, every changed weight is put
back from a copy taken before the first merge, so a plain line after a LoRA line is bit for bit
what it was before (subtracting the product again would not be, in float16).

The files people have, and how their keys name a layer:
- kohya-ss / AUTOMATIC1111 (most files on model sites): `lora_unet_<path>.lora_down.weight`,
  `.lora_up.weight`, `.alpha`; `lora_te_` (`lora_te1_`, `lora_te2_` on SDXL) for the text
  encoders. `<path>` is the layer's dotted module path with `_` for `.`: diffusers' names for
  SD 1.x, the original Stable Diffusion names (input_blocks_4_1_...) for SDXL, mapped here.
- diffusers / PEFT: `unet.<path>.lora_A.weight` / `.lora_B.weight` (older: `.lora.down.weight`,
  `.lora_linear_layer.down.weight`, `.processor.to_q_lora.down.weight`), `text_encoder.`,
  `text_encoder_2.`; alpha from `.alpha` keys or the file's `lora_adapter_metadata`, else
  alpha = rank.
LyCORIS's other kinds (LoHa, LoKr, DoRA...) are refused by name.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from invoke.backend.finite import HALF, check_weights, nonfinite_count
from invoke.errors import InvokeError

if TYPE_CHECKING:
    from invoke.backend.job import Lora
    from invoke.backend.model import Model

# (suffix of a key, what it holds)
_PARTS = (
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"),
    (".lora_linear_layer.up.weight", "up"),
    ("_lora.down.weight", "down"),  # attention processors: attn1.processor.to_q_lora.down
    ("_lora.up.weight", "up"),
    (".alpha", "alpha"),
)
# Keys of network kinds that are not a plain low-rank product.
_OTHER_KINDS = (
    ("hada_w", "LoHa"),
    ("lokr_w", "LoKr"),
    ("dora_scale", "DoRA"),
    ("lora_mid", "LoCon with a Tucker middle"),
    ("oft_", "OFT"),
    (".diff", "full weight difference"),
)
_KOHYA = (("lora_unet_", "unet"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"))
_KOHYA += (("lora_te_", "text_encoder"),)
_DOTTED = (
    ("unet.", "unet"),
    ("text_encoder_2.", "text_encoder_2"),
    ("text_encoder.", "text_encoder"),
    ("base_model.model.", "unet"),
)


@dataclass
class _Layer:
    """One layer's low-rank update, read from a file and checked against the model."""

    module: nn.Module
    down: torch.Tensor
    up: torch.Tensor
    scale: float  # alpha / rank
    component: str  # unet, text_encoder or text_encoder_2


@dataclass(eq=False)
class _Merged:
    """What a model has merged now, and the original weights of every layer ever changed."""

    loras: tuple[Lora, ...] = ()
    originals: dict[nn.Module, torch.Tensor] = field(default_factory=dict)


def use_loras(model: Model, loras: tuple[Lora, ...]) -> list[str]:
    """Make the model's weights its own plus exactly these LoRAs (none: its own); return a line
    for each LoRA merged now (none when the model already had these).

    Every file is read and checked before any weight changes: a bad file leaves the model as it
    was and raises an InvokeError naming the file and what is wrong."""
    merged = _merged(model)
    if merged.loras == loras:
        return []
    layers = [(lora, read_lora(model, lora)) for lora in loras]
    _restore(merged)
    with torch.no_grad():
        for lora, lora_layers in layers:
            for layer in lora_layers:
                weight = layer.module.weight
                if layer.module not in merged.originals:
                    merged.originals[layer.module] = weight.detach().to("cpu", copy=True)
                weight.add_(_delta(layer, weight.shape, lora.weight).to(weight.dtype))
            _check_merged(model, merged, lora, lora_layers)
    merged.loras = loras
    return [
        f"LoRA {lora.name} merged at {lora.weight:g} ({_parts(found)})" for lora, found in layers
    ]


def _check_merged(model: Model, merged: _Merged, lora: Lora, layers: list[_Layer]) -> None:
    """Finite weights can still overflow once merged (float16 ends at 65504): the model is put
    back as it was and the line refused."""
    bad = nonfinite_count(layer.module.weight for layer in layers)
    if bad:
        _restore(merged)
        dtype = str(model.dtype).removeprefix("torch.")
        raise InvokeError(
            f"LoRA {lora.name}: merged at {lora.weight:g} it makes {bad} of model {model.name}'s "
            f"weights NaN or infinite in {dtype}; try a lower weight"
            + (", or --precision float32" if model.dtype in HALF else "")
        )


def _parts(layers: list[_Layer]) -> str:
    """How much of the model a LoRA changes, in words: "92 UNet layers, 24 text encoder"."""
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer.component] = counts.get(layer.component, 0) + 1
    names = {"unet": "UNet", "text_encoder": "text encoder", "text_encoder_2": "text encoder 2"}
    return ", ".join(f"{n} {names[c]} layers" for c, n in counts.items())


def _restore(merged: _Merged) -> None:
    with torch.no_grad():
        for module, original in merged.originals.items():
            module.weight.copy_(original)  # in place: fused QKV views stay views
    merged.originals.clear()
    merged.loras = ()


def _merged(model: Model) -> _Merged:
    if model.merged_loras is None:
        model.merged_loras = _Merged()
    return model.merged_loras


def _delta(layer: _Layer, shape: torch.Size, strength: float) -> torch.Tensor:
    down = layer.down.to(layer.module.weight.device, torch.float32)
    up = layer.up.to(layer.module.weight.device, torch.float32)
    product = up.flatten(1) @ down.flatten(1)  # (out, in * kh * kw)
    return (product * (layer.scale * strength)).reshape(shape)


# -- reading a file -------------------------------------------------------------------------------


def read_lora(model: Model, lora: Lora) -> list[_Layer]:
    """The file's layers, each matched to the model's module and checked for shape."""
    # A name that is a path is not said twice.
    what = f"LoRA {lora.name}" + ("" if lora.path == lora.name else f" ({lora.path})")
    path = Path(lora.path)
    if path.suffix.lower() != ".safetensors":
        raise InvokeError(
            f"{what}: only .safetensors LoRA files are read (other formats are pickles, which "
            "can run code); convert it to .safetensors"
        )
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
            metadata = handle.metadata() or {}
    except (OSError, SafetensorError) as err:
        raise InvokeError(f"{what}: cannot be read: {err}") from err
    for marker, kind in _OTHER_KINDS:
        if any(marker in key for key in tensors):
            raise InvokeError(
                f"{what}: is a {kind} network, not a LoRA; only LoRA files (lora_down/lora_up or "
                "lora_A/lora_B weights) can be merged"
            )
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        part = next(((key.removesuffix(s), p) for s, p in _PARTS if key.endswith(s)), None)
        if part is None:
            continue  # a file may carry extras (training info, an embedding): not layers
        component, name = _component(part[0])
        groups.setdefault((component, name), {})[part[1]] = tensor
    if not any("down" in g for g in groups.values()):
        raise InvokeError(f"{what}: holds no LoRA weights (no lora_down/lora_A keys)")
    check_weights(what, (t for g in groups.values() for t in g.values()), again="download it again")
    alphas = _metadata_alphas(metadata)
    resolver = _Resolver(model)
    layers = []
    for (component, name), parts in groups.items():
        if "down" not in parts or "up" not in parts:
            raise InvokeError(f"{what}: layer {name} has only half of its weights")
        problem = _layer_problem(parts)
        if problem is not None:
            raise InvokeError(f"{what}: layer {name} {problem}; the file is damaged")
        module = resolver.find(component, name, what)
        down, up = parts["down"], parts["up"]
        rank = down.shape[0]
        alpha = float(parts["alpha"]) if "alpha" in parts else alphas.get(component, rank)
        weight = module.weight
        fits = up.flatten(1).shape[1] == rank and up.shape[0] == weight.shape[0]
        if not fits or down[0].numel() != weight[0].numel():
            raise InvokeError(
                f"{what}: does not fit model {model.name} ({model.family}): its layer {name} is "
                f"{_shape(up, down)}, the model's is {tuple(weight.shape)}; it was made for "
                "another kind of model"
            )
        layers.append(_Layer(module, down, up, alpha / rank, component))
    return layers


def _layer_problem(parts: dict[str, torch.Tensor]) -> str | None:
    """What makes a layer's tensors no low-rank update (before any arithmetic on them)."""
    down, up = parts["down"], parts["up"]
    for tensor in (down, up):
        if not tensor.is_floating_point():
            kind = str(tensor.dtype).removeprefix("torch.")
            return f"has {kind} weights, not floating-point ones"
    if down.ndim not in (2, 4) or up.ndim != down.ndim:
        return (
            f"has weights shaped {tuple(down.shape)} and {tuple(up.shape)}, where a Linear "
            "layer's are 2-D and a convolution's 4-D"
        )
    if down.shape[0] == 0:
        return "has rank 0"
    if "alpha" in parts and parts["alpha"].numel() != 1:
        return f"has {parts['alpha'].numel()} numbers as its alpha, where it takes one"
    return None


def _shape(up: torch.Tensor, down: torch.Tensor) -> tuple[int, ...]:
    return (up.shape[0], *down.shape[1:])


def _component(stem: str) -> tuple[str, str]:
    """A key without its part suffix -> (the model part, the layer's name in that part).

    kohya names come back with `_` separators (resolved by _Resolver), others dotted."""
    for prefix, component in _KOHYA:
        if stem.startswith(prefix):
            return component, stem.removeprefix(prefix)
    for prefix, component in _DOTTED:
        if stem.startswith(prefix):
            stem = stem.removeprefix(prefix)
            return component, _attention_processor(stem)
    return "unet", _attention_processor(stem)  # diffusers' save_attn_procs: UNet layers only


def _attention_processor(name: str) -> str:
    """`attn1.processor.to_q` (diffusers' old attention processors) -> `attn1.to_q`."""
    name = name.replace(".processor.", ".")
    return name + ".0" if name.endswith(".to_out") else name


def _metadata_alphas(metadata: dict[str, str]) -> dict[str, float]:
    """diffusers' `lora_adapter_metadata`: {"unet.lora_alpha": 8, "unet.r": 4, ...}."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        values = json.loads(raw)
    except ValueError:
        return {}
    alphas = {}
    for component in ("unet", "text_encoder", "text_encoder_2"):
        alpha = values.get(f"{component}.lora_alpha") if isinstance(values, dict) else None
        if isinstance(alpha, int | float) and math.isfinite(alpha):
            alphas[component] = float(alpha)
    return alphas


class _Resolver:
    """Finds a model's Linear/Conv2d layer by a LoRA file's name for it."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self._dotted: dict[str, dict[str, nn.Module]] = {}
        self._underscored: dict[str, dict[str, nn.Module]] = {}

    def find(self, component: str, name: str, what: str) -> nn.Module:
        part = getattr(self.model, component, None)
        if part is None:
            raise InvokeError(
                f"{what}: changes {component}, which model {self.model.name} "
                f"({self.model.family}) does not have; it was made for another kind of model"
            )
        if component not in self._dotted:
            layers = {n: m for n, m in part.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)}
            self._dotted[component] = layers
            self._underscored[component] = {n.replace(".", "_"): m for n, m in layers.items()}
        module = self._dotted[component].get(name)
        if module is None:
            key = name.replace(".", "_")
            if component == "unet":
                key = original_to_diffusers(key, self.model.unet.config)
            module = self._underscored[component].get(key)
        if module is None:
            raise InvokeError(
                f"{what}: has a layer {name} that model {self.model.name} ({self.model.family}) "
                "does not have; it was made for another kind of model"
            )
        return module


# -- the original Stable Diffusion UNet's layer names (kohya's SDXL files) -------------------------

_RESNET = (
    ("in_layers_0", "norm1"),
    ("in_layers_2", "conv1"),
    ("emb_layers_1", "time_emb_proj"),
    ("out_layers_0", "norm2"),
    ("out_layers_3", "conv2"),
    ("skip_connection", "conv_shortcut"),
)
_TOP = {
    "input_blocks_0_0": "conv_in",
    "time_embed_0": "time_embedding_linear_1",
    "time_embed_2": "time_embedding_linear_2",
    "label_emb_0_0": "add_embedding_linear_1",
    "label_emb_0_2": "add_embedding_linear_2",
    "out_0": "conv_norm_out",
    "out_2": "conv_out",
}
_BLOCK = re.compile(r"(input_blocks|output_blocks|middle_block)_(?:(\d+)_)?(\d+)_?(.*)")


def original_to_diffusers(name: str, config: Any) -> str:
    """An original-SD UNet layer name (underscored) -> diffusers' (underscored); other names as
    they are. input_blocks_4_1_transformer_blocks_0_attn1_to_q -> down_blocks_1_attentions_0_...
    on SDXL (2 layers per block); the block layout comes from the UNet's config."""
    if name in _TOP:
        return _TOP[name]
    match = _BLOCK.fullmatch(name)
    if not match:
        return name
    kind, number, sub, rest = match.groups()
    per_block = config.layers_per_block
    per_block = per_block[0] if isinstance(per_block, list | tuple) else int(per_block)
    if kind == "middle_block":  # middle_block_1_rest: number is None, sub is the index
        where = ("resnets_0", "attentions_0", "resnets_1")[int(sub)]
        return _join("mid_block", where, _resnet(rest) if where.startswith("res") else rest)
    index, sub = int(number), int(sub)
    if kind == "input_blocks":
        block, layer = divmod(index - 1, per_block + 1)
        if layer == per_block:
            return _join(f"down_blocks_{block}", "downsamplers_0_conv")
        prefix = f"down_blocks_{block}"
    else:
        block, layer = divmod(index, per_block + 1)
        prefix = f"up_blocks_{block}"
        attention = "CrossAttn" in config.up_block_types[block]
        if sub == 2 or (sub == 1 and not attention):
            return _join(prefix, "upsamplers_0_conv")
    if sub == 0:
        return _join(prefix, f"resnets_{layer}", _resnet(rest))
    return _join(prefix, f"attentions_{layer}", rest)


def _resnet(rest: str) -> str:
    for old, new in _RESNET:
        if rest.startswith(old):
            return new + rest.removeprefix(old)
    return rest


def _join(*parts: str) -> str:
    return "_".join(p for p in parts if p)
