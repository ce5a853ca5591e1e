"""ControlNet: a second network reads a conditioning image (edges, depth, a pose) and adds its
residuals to the UNet's, so the picture follows the image's shapes.

As diffusers' StableDiffusion(XL)ControlNet pipelines do it (they are the test oracle): the image
is scaled to the picture's size as [0, 1] RGB; at each step the ControlNet reads the same latents,
timestep and text embeddings as the UNet (both halves of classifier-free guidance) and its
residuals, times the weight, go into the UNet's skip connections; outside the start..end part of
the steps it is not run at all (diffusers runs it at weight 0, which adds exact zeros).

It is one of the loop's contributions (`ControlNet`, denoise.Contribution): only the UNet's
arguments change, so txt2img, img2img, masks, an inpainting UNet (the ControlNet reads the 4
latent channels of its 9), --hires_fix, variations, every sampler and SDXL's added conditions (it
reads them as the UNet does) all work unchanged. A model keeps the last ControlNet it loaded.

A line may name several (each --controlnet a unit): each acts with its own image, weight and
steps, and their residuals add up (`ControlNets`), as diffusers' MultiControlNetModel adds them.
The model keeps the second and later ones until a line with fewer units runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from invoke.backend import speed
from invoke.backend.components import first_line, load_network
from invoke.backend.finite import check_weights
from invoke.errors import InvokeError

if TYPE_CHECKING:
    from invoke.backend.job import Control, Job
    from invoke.backend.model import Model

# Widths of the text embeddings each family's UNet reads: a ControlNet is made for one of them.
FAMILY_OF_WIDTH = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


def use_controlnet(model: Model, control: Control, slot: int = 0) -> tuple[Any, bool]:
    """The loaded ControlNet for `control`, the line's unit `slot` (0 = the first), loaded now
    unless the model holds it already (in that slot, or another when units trade places), and
    whether it was loaded now. Refuses, before loading weights, a file or folder that is not a
    ControlNet or one made for another kind of model."""
    key = (control.path, control.stamp)
    held = [model.controlnet, *model.more_controlnets.values()]
    same = next((pair for pair in held if pair is not None and pair[0] == key), None)
    if same is not None:
        _hold(model, slot, same)
        return same[1], False
    _hold(model, slot, None)  # two at once may not fit where one does
    weights = Path(control.path)  # the session found it: a folder's weights or a single file
    in_folder = weights.name in FOLDER_WEIGHTS and (weights.parent / "config.json").is_file()
    where = weights.parent if in_folder else weights
    # "ControlNet canny (~/.config/invoke-dream/controlnets/canny)"; a path is said once.
    what = f"ControlNet {control.name}"
    if "/" not in control.name:
        what += f" ({where})"
    net = _load_folder(what, weights, model) if in_folder else _load_file(what, weights, model)
    check_weights(what, net, again="download it again", dtype=model.dtype)
    net.to(model.device).eval()  # in the model's dtype already (ModelMixin.to(dtype) warns)
    if model.device.type == "cuda":  # the UNet's fast path (speed.prepare), for the same reasons
        if model.offloader is None:
            speed.fuse_qkv(net)
        net.to(memory_format=torch.channels_last)
    _hold(model, slot, (key, net))
    return net, True


def _hold(model: Model, slot: int, pair: tuple[Any, Any] | None) -> None:
    """Keep `pair` (key, ControlNet) as the model's unit `slot`."""
    if slot == 0:
        model.controlnet = pair
    elif pair is None:
        model.more_controlnets.pop(slot, None)
    else:
        model.more_controlnets[slot] = pair


FOLDER_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")


def _load_folder(what: str, weights: Path, model: Model) -> Any:
    """A diffusers ControlNet folder, as the hub's repos hold them."""
    from diffusers import ControlNetModel

    folder = weights.parent
    config = _config(what, folder)
    problem = _config_problem(config, model.unet.config)
    if problem is not None:
        raise InvokeError(f"{what}: its config.json {problem}; download it again")
    _check_fits(what, config, model)
    return load_network(
        ControlNetModel,
        folder,
        lambda why: f"{what}: cannot be loaded ({why}); download it again",
        torch_dtype=model.dtype,
        variant="fp16" if ".fp16." in weights.name else None,
    )


def _load_file(what: str, path: Path, model: Model) -> Any:
    """A single .safetensors ControlNet: the original layout (`control_model.input_blocks...`,
    lllyasviel's and AUTOMATIC1111's files) or a diffusers state dict saved as one file. Its
    shape is the model's UNet's (a ControlNet copies the encoder of the UNet it was made for),
    so the model's UNet config, with the file's conditioning layers, describes it."""
    from diffusers import ControlNetModel
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise InvokeError(f"{what}: cannot be read ({first_line(exc)}); download it again") from exc
    if "controlnet_cond_embedding.conv_in.weight" not in state and not any(
        "input_hint_block." in k for k in state
    ):
        raise InvokeError(
            f"{what}: holds no ControlNet (no input_hint_block or controlnet_cond_embedding "
            "layers); give a ControlNet file or folder"
        )
    try:
        state, config = _diffusers_state(state, model)
    except (KeyError, IndexError, ValueError, RuntimeError) as exc:
        # A layer missing or of the wrong rank: the converter and the shape readers fail alike.
        raise InvokeError(
            f"{what}: its layers cannot be read ({type(exc).__name__}: {first_line(exc)}); "
            "the file is damaged or not a ControlNet: download it again"
        ) from exc
    channels = config["conditioning_embedding_out_channels"]
    _check_fits(what, config, model)
    with torch.device("meta"):  # no memory for weights that are replaced at once
        net = ControlNetModel.from_unet(
            model.unet, conditioning_embedding_out_channels=channels, load_weights_from_unet=False
        )
    try:
        state = {k: v.to(model.dtype) for k, v in state.items()}
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise InvokeError(
            f"{what}: its layers do not match model {model.name}'s UNet ({first_line(exc)}); "
            "it was made for another kind of model"
        ) from exc
    return net


def _diffusers_state(
    state: dict[str, torch.Tensor], model: Model
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A single file's state dict in diffusers' names (converted from the original layout when it
    is in it), and what _check_fits reads of it."""
    if "controlnet_cond_embedding.conv_in.weight" not in state:
        from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

        config = {"layers_per_block": model.unet.config.layers_per_block}
        converted = convert_controlnet_checkpoint(state, config)
        # diffusers' converter leaves out SDXL's added embedding (label_emb.0.0 and .0.2)
        layers = {"0": "linear_1", "2": "linear_2"}
        for key, value in state.items():
            parts = key.removeprefix("control_model.").split(".")
            if parts[:2] == ["label_emb", "0"] and parts[2] in layers:
                converted[f"add_embedding.{layers[parts[2]]}.{parts[-1]}"] = value
        state = {k: v for k, v in converted.items() if v is not None}
    return state, _config_of(state, _conditioning_channels(state))


def _conditioning_channels(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """The conditioning image encoder's widths: its first convolution's, then each stride-2
    block's (diffusers' conditioning_embedding_out_channels)."""
    prefix = "controlnet_cond_embedding."
    channels = [state[f"{prefix}conv_in.weight"].shape[0]]
    block = 1
    while f"{prefix}blocks.{block}.weight" in state:
        channels.append(state[f"{prefix}blocks.{block}.weight"].shape[0])
        block += 2
    return tuple(channels)


def _config_of(state: dict[str, torch.Tensor], channels: tuple[int, ...]) -> dict[str, Any]:
    """What _check_fits reads, from a state dict's shapes."""
    cross = next((v for k, v in state.items() if k.endswith("attn2.to_k.weight")), None)
    widths = []
    while f"down_blocks.{len(widths)}.resnets.0.conv1.weight" in state:
        widths.append(state[f"down_blocks.{len(widths)}.resnets.0.conv1.weight"].shape[0])
    return {
        "cross_attention_dim": None if cross is None else int(cross.shape[1]),
        "addition_embed_type": "text_time" if "add_embedding.linear_1.weight" in state else None,
        "block_out_channels": widths,
        "conditioning_embedding_out_channels": channels,
    }


def _config(what: str, folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvokeError(
            f"{what}: has no config.json; a ControlNet is a diffusers folder (config.json and "
            "diffusion_pytorch_model.safetensors)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvokeError(f"{what}: cannot read its config.json ({exc})") from None
    kind = config.get("_class_name") if isinstance(config, dict) else None
    if kind != "ControlNetModel":
        raise InvokeError(
            f"{what}: holds a {kind or 'model of unknown kind'}, not a ControlNetModel; give the "
            "folder of a ControlNet (diffusers format)"
        )
    return config


def _check_fits(what: str, config: dict[str, Any], model: Model) -> None:
    """A ControlNet's residuals must have the UNet's shapes and read the same text embeddings."""
    unet = model.unet.config
    width, model_width = config.get("cross_attention_dim"), unet.cross_attention_dim
    made = FAMILY_OF_WIDTH.get(width, f"text width {width}") if isinstance(width, int) else "?"
    what = f"{what}: made for {made} models"
    wants = f"model {model.name} ({model.family}) needs one made for it"
    if width != model_width:
        raise InvokeError(
            f"{what} (text width {width}), not for {model.name}'s {model_width}; {wants}"
        )
    if config.get("addition_embed_type") != unet.addition_embed_type or tuple(
        config.get("block_out_channels", ())
    ) != tuple(unet.block_out_channels):
        raise InvokeError(f"{what}, but its blocks differ from {model.name}'s UNet; {wants}")
    steps = len(config.get("conditioning_embedding_out_channels") or (16, 32, 96, 256)) - 1
    if 2**steps != model.size_multiple:
        raise InvokeError(
            f"{what}, but it reads its image at 1/{2**steps} of the size where {model.name}'s "
            f"latents are 1/{model.size_multiple}; {wants}"
        )


def _config_problem(config: dict[str, Any], unet: Any) -> str | None:
    """A config value of the wrong kind (or a copy of another UNet's encoder), in words: what
    _check_fits and diffusers would otherwise fail on with a TypeError or IndexError."""
    for key in ("block_out_channels", "conditioning_embedding_out_channels"):
        value = config.get(key)
        if value is None and key == "conditioning_embedding_out_channels":
            continue  # diffusers' default
        if not (isinstance(value, list | tuple) and value and all(_count(v) for v in value)):
            return f"has {key} {value!r}, not a list of whole numbers above 0"
    width = config.get("cross_attention_dim")
    if not _count(width):
        return f"has cross_attention_dim {width!r}, not a whole number above 0"
    layers = config.get("layers_per_block", unet.layers_per_block)
    if layers != unet.layers_per_block:
        return (
            f"has layers_per_block {layers!r} where the UNet it copies has {unet.layers_per_block}"
        )
    return None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def control_pixels(image: Image.Image, width: int, height: int, model: Model) -> torch.Tensor:
    """(1, 3, height, width) in [0, 1] on the model's device, as diffusers prepares a control
    image: RGB, resized (Lanczos) only when its size differs."""
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].to(model.device, model.dtype)


def keep_schedule(calls: int, start: float, end: float) -> list[bool]:
    """For each UNet call of a pass, whether the ControlNet acts: call i of n is inside when
    i/n >= start and (i+1)/n <= end (diffusers' control_guidance_start/end)."""
    return [not (i / calls < start or (i + 1) / calls > end) for i in range(calls)]


class ControlNet:
    """The ControlNet's residuals for each UNet call of a pass (a denoise.Contribution)."""

    def __init__(self, net: Any, image: torch.Tensor, weight: float, keep: list[bool]) -> None:
        self.net, self.image, self.weight, self.keep = net, image, weight, keep
        self.calls = 0
        self.channels = int(net.config.in_channels)

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        acts = self.calls < len(self.keep) and self.keep[self.calls]
        self.calls += 1
        if not acts or self.weight == 0:
            return {}
        added = {k: v for k, v in extra.items() if k == "added_cond_kwargs"}  # SDXL's
        down, mid = self.net(
            sample[:, : self.channels],  # an inpainting UNet's mask channels are its own
            timestep,
            encoder_hidden_states=context,
            controlnet_cond=self.image.expand(sample.shape[0], -1, -1, -1),
            conditioning_scale=self.weight,
            return_dict=False,
            **added,
        )
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


class ControlNets:
    """Several ControlNets' residuals added up, as diffusers' MultiControlNetModel adds them:
    each with its own image, weight and part of the steps (a denoise.Contribution)."""

    def __init__(self, units: list[ControlNet]) -> None:
        self.units = units

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        total: dict[str, Any] = {}
        for unit in self.units:
            given = unit(sample, timestep, context, extra)
            if not given:
                continue
            if not total:
                total = given
                continue
            down = total["down_block_additional_residuals"]
            more = given["down_block_additional_residuals"]
            total = {
                "down_block_additional_residuals": [a + b for a, b in zip(down, more, strict=True)],
                "mid_block_additional_residual": total["mid_block_additional_residual"]
                + given["mid_block_additional_residual"],
            }
        return total


def contribution(model: Model, job: Job, calls: int) -> ControlNet | ControlNets | None:
    """The job's ControlNets for a pass of `calls` UNet calls; None when the job has none."""
    for slot in [s for s in model.more_controlnets if s >= len(job.controls)]:
        del model.more_controlnets[slot]  # a later unit of an earlier line: not kept for long
    units = []
    for slot, control in enumerate(job.controls):
        net, _ = use_controlnet(model, control, slot)
        image = control_pixels(control.image, job.width, job.height, model)
        keep = keep_schedule(calls, control.start, control.end)
        units.append(ControlNet(net, image, control.weight, keep))
    if not units:
        return None
    return units[0] if len(units) == 1 else ControlNets(units)
