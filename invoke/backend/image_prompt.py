"""IP-Adapter: a picture as a prompt. A CLIP image encoder reads the picture; the adapter's
projection turns its embedding into a few extra tokens, and each cross-attention layer of the
UNet attends to them with its own key and value weights, beside the text, times the weight.

As diffusers' pipelines do it with `load_ip_adapter` (they are the test oracle), with diffusers'
own converters for the weights (`_convert_ip_adapter_attn_to_diffusers`,
`_convert_ip_adapter_image_proj_to_diffusers`): the image goes through CLIPImageProcessor at the
encoder's size; classifier-free guidance's unconditional half gets zeros for the plain adapter's
embedding (the encoder's reading of a black picture for the "plus" adapters, which read its
hidden states). The embeddings reach the UNet as `added_cond_kwargs["image_embeds"]`, one of
the loop's contributions (`ImageEmbeds`, denoise.Contribution).

The adapter's attention processors are the UNet's only while a job that names it runs
(`attached`): the next job without one runs the UNet exactly as before. A model keeps the last
adapter it loaded (its weights and image encoder), so the next line that names it loads nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from invoke.backend.components import first_line, load_network
from invoke.backend.control import FAMILY_OF_WIDTH
from invoke.backend.finite import check_weights
from invoke.errors import InvokeError

if TYPE_CHECKING:
    from invoke.backend.job import ImagePrompt, Job
    from invoke.backend.model import Model

# The families whose UNet an IP-Adapter's cross-attention weights fit (the refiner and Kandinsky
# run no such UNet; diffusers' IP-Adapters are made for these).
FAMILIES = ("sd-1", "sd-2", "sd-2-v", "sdxl")


@dataclass
class Adapter:
    """An IP-Adapter made ready for a model: its attention processors (by the UNet's processor
    names), its image projection, its image encoder and that encoder's image processor."""

    processors: dict[str, Any]
    projection: Any  # diffusers' ImageProjection (or a "plus" resampler)
    encoder: Any  # transformers.CLIPVisionModelWithProjection
    reader: Any  # transformers.CLIPImageProcessor
    plain: bool  # the plain adapter reads the encoder's image_embeds, not its hidden states


def use_adapter(model: Model, prompt: ImagePrompt) -> tuple[Adapter, bool]:
    """The adapter `prompt` names, ready for `model`, and whether it was loaded now. Refuses, in
    one line, a family it cannot act on, a file that is no IP-Adapter or one made for another
    kind of model, and an image encoder that does not fit it."""
    what = f"IP-Adapter {prompt.name}"
    if "/" not in prompt.name:
        what += f" ({prompt.path})"
    if model.family not in FAMILIES:
        raise InvokeError(
            f"--ip_adapter: model {model.name} ({model.family}) takes no IP-Adapter; they act on "
            "SD 1.x, SD 2.x and SDXL base models"
        )
    key = (prompt.path, prompt.stamp, prompt.encoder)
    if model.ip_adapter is not None and model.ip_adapter[0] == key:
        return model.ip_adapter[1], False
    model.ip_adapter = None
    state = _read(what, Path(prompt.path))
    _check_fits(what, state, model)
    encoder = _encoder(what, Path(prompt.encoder), model)
    adapter = _convert(what, state, encoder, model)
    model.ip_adapter = (key, adapter)
    return adapter, True


def _read(what: str, path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The file's weights split as diffusers' load_ip_adapter splits them."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        flat = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise InvokeError(f"{what}: cannot be read ({first_line(exc)}); download it again") from exc
    state: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        part, _, rest = key.partition(".")
        if part in state:
            state[part][rest] = value
    if not state["image_proj"] or not state["ip_adapter"]:
        raise InvokeError(
            f"{what}: holds no IP-Adapter (no image_proj.* and ip_adapter.* weights); give an "
            "IP-Adapter .safetensors file such as h94/IP-Adapter's ip-adapter_sd15.safetensors"
        )
    proj = state["image_proj"]
    if not {"proj.weight", "proj.3.weight", "latents"} & proj.keys():  # plain, full face, plus
        raise InvokeError(
            f"{what}: is a kind of IP-Adapter read here only from face embeddings (FaceID); "
            "give an adapter that reads a picture (ip-adapter_sd15, ip-adapter-plus_sd15...)"
        )
    return state


def _cross_attention(model: Model) -> list[str]:
    """The UNet's cross-attention processors' names, in the order the adapter's weights are."""
    return [n for n in model.unet.attn_processors if not n.endswith("attn1.processor")]


def _check_fits(what: str, state: dict[str, dict[str, torch.Tensor]], model: Model) -> None:
    """The adapter's key/value weights read the UNet's text width, one pair per cross-attention
    layer (keys 1, 3, 5...: diffusers counts every attention layer, self and cross)."""
    layers = state["ip_adapter"]
    widths = {int(v.shape[-1]) for k, v in layers.items() if k.endswith("to_k_ip.weight")}
    model_width = int(model.unet.config.cross_attention_dim)
    wants = f"model {model.name} ({model.family}) needs one made for it"
    if widths != {model_width}:
        width = next(iter(widths)) if len(widths) == 1 else "?"
        made = FAMILY_OF_WIDTH.get(width, f"text width {width}") if isinstance(width, int) else "?"
        raise InvokeError(
            f"{what}: made for {made} models (text width {width}), not for {model.name}'s "
            f"{model_width}; {wants}"
        )
    count = len(_cross_attention(model))
    pairs = sum(1 for k in layers if k.endswith("to_k_ip.weight"))
    if pairs != count:
        raise InvokeError(
            f"{what}: has {pairs} cross-attention layers where {model.name}'s UNet has {count}; "
            f"{wants}"
        )


def _encoder(what: str, folder: Path, model: Model) -> Any:
    """The adapter's CLIP image encoder, from its diffusers/transformers folder."""
    from transformers import CLIPVisionModelWithProjection

    if not (folder / "config.json").is_file():
        raise InvokeError(
            f"{what}: its image encoder {folder} has no config.json; copy h94/IP-Adapter's "
            "image_encoder folder beside the adapter file"
        )
    encoder = load_network(
        CLIPVisionModelWithProjection,
        folder,
        lambda why: (
            f"{what}: its image encoder {folder} cannot be loaded ({why}); copy "
            "h94/IP-Adapter's image_encoder folder again"
        ),
        dtype=model.dtype,
    )
    check_weights(f"{what}'s image encoder", encoder, again="copy it again", dtype=model.dtype)
    return encoder.to(model.device).eval()


def _convert(
    what: str, state: dict[str, dict[str, torch.Tensor]], encoder: Any, model: Model
) -> Adapter:
    """diffusers' own converters make the attention processors and the image projection."""
    from diffusers.models.embeddings import ImageProjection
    from transformers import CLIPImageProcessor

    unet = model.unet
    proj = state["image_proj"]
    takes = proj["proj.weight"].shape[-1] if "proj.weight" in proj else None
    gives = int(encoder.config.projection_dim)
    if takes is not None and takes != gives:
        raise InvokeError(
            f"{what}: reads image embeddings {takes} wide, and its image encoder gives {gives}; "
            "the image_encoder folder beside it belongs to another adapter"
        )
    try:
        processors = unet._convert_ip_adapter_attn_to_diffusers([state], low_cpu_mem_usage=False)
        projection = unet._convert_ip_adapter_image_proj_to_diffusers(proj, low_cpu_mem_usage=False)
    except (KeyError, IndexError, ValueError, RuntimeError) as exc:
        raise InvokeError(
            f"{what}: its layers cannot be read ({type(exc).__name__}: {first_line(exc)}); the "
            "file is damaged or made for another kind of model: download it again"
        ) from exc
    crossing = set(_cross_attention(model))
    processors = {
        n: p.to(model.device, model.dtype) for n, p in processors.items() if n in crossing
    }
    projection = projection.to(model.device, model.dtype).eval()
    layers = torch.nn.ModuleList([projection, *processors.values()])
    check_weights(what, layers, again="download it again", dtype=model.dtype)
    size = int(encoder.config.image_size)
    return Adapter(
        processors,
        projection,
        encoder,
        CLIPImageProcessor(size=size, crop_size=size),
        isinstance(projection, ImageProjection),
    )


@contextmanager
def attached(model: Model, job: Job) -> Iterator[None]:
    """The job's IP-Adapter in the UNet for the block, taken out again however it ends: its
    processors on the cross-attention layers, its projection as the UNet's encoder_hid_proj."""
    if job.image_prompt is None:
        yield
        return
    from diffusers.models.embeddings import MultiIPAdapterImageProjection

    adapter, _ = use_adapter(model, job.image_prompt)
    unet = model.unet
    before = unet.attn_processors
    kept = (unet.encoder_hid_proj, unet.config.encoder_hid_dim_type)
    for processor in adapter.processors.values():
        processor.scale = [job.image_prompt.weight]  # diffusers' set_ip_adapter_scale
    try:
        unet.set_attn_processor({**before, **adapter.processors})
        unet.encoder_hid_proj = MultiIPAdapterImageProjection([adapter.projection])
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        yield
    finally:
        unet.encoder_hid_proj, unet.config.encoder_hid_dim_type = kept
        unet.set_attn_processor(before)


class ImageEmbeds:
    """The image prompt's embeddings for each UNet call (a denoise.Contribution): beside the
    added conditions a family gives (SDXL's), as diffusers' pipelines pass them."""

    def __init__(self, embeds: torch.Tensor) -> None:
        self.embeds = embeds

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        added = {**extra.get("added_cond_kwargs", {}), "image_embeds": [self.embeds]}
        return {"added_cond_kwargs": added}


@torch.no_grad()
def embeds(model: Model, job: Job) -> torch.Tensor:
    """The image prompt's embeddings for a batch of the job's images: (batch, 1, width), or
    (batch, 1, tokens, width) for a "plus" adapter; with classifier-free guidance the
    unconditional half first, as diffusers' prepare_ip_adapter_image_embeds orders them."""
    assert job.image_prompt is not None
    adapter, _ = use_adapter(model, job.image_prompt)
    encoder = adapter.encoder
    pixels = adapter.reader(job.image_prompt.image, return_tensors="pt").pixel_values
    pixels = pixels.to(model.device, encoder.dtype)
    if adapter.plain:
        positive = encoder(pixels).image_embeds
        negative = torch.zeros_like(positive)
    else:
        positive = encoder(pixels, output_hidden_states=True).hidden_states[-2]
        negative = encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
    batch = len(job.noises)
    halves = [negative, positive] if job.cfg_scale > 1 else [positive]
    return torch.cat([half[None] for half in halves for _ in range(batch)]).to(model.dtype)


def contribution(model: Model, job: Job, calls: int) -> ImageEmbeds | None:
    """The job's image prompt for a pass; None when the job has none."""
    if job.image_prompt is None:
        return None
    return ImageEmbeds(embeds(model, job))
