"""The kinds of upscaler -U runs, and what a picture's sides must be for each: read from an
upscaler's VAE and UNet configs, whether loaded (backend/upscale.py) or still on disk
(config.libraries.describe_upscaler, which refuses a line before anything is drawn). No torch.

Adding an upscaler kind is a row here and its run settings in upscale.SETTINGS.

`latent_space` names the latents a VAE reads: the x2 latent upscaler takes a model's final
latents directly (no decode-encode) when its VAE reads the same ones as the model's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The diffusers pipelines that upscale: 2x in latent space, 4x conditioned on the pixels.
LATENT_X2 = "StableDiffusionLatentUpscalePipeline"
PIXEL_X4 = "StableDiffusionUpscalePipeline"
KINDS = (LATENT_X2, PIXEL_X4)


def sides(kind: str, vae: Mapping[str, Any], unet: Mapping[str, Any]) -> tuple[int, int]:
    """(factor, the multiple a picture's sides must be) of an upscaler of `kind` whose VAE and
    UNet have these configs."""
    cell = 2 ** (len(vae.get("block_out_channels", [0])) - 1)  # pixels per latent cell
    halvings = 2 ** (len(unet.get("down_block_types", [0])) - 1)  # the UNet's own sides
    if kind == LATENT_X2:
        # Encoded to latents (cell), doubled, then the UNet: sides of cell * halvings / 2.
        return 2, max(cell, cell * halvings // 2)
    # The x4 UNet runs on latents the size of the picture; its VAE decodes them `cell` times larger.
    return cell, halvings


def latent_space(vae_class: object, vae: Mapping[str, Any]) -> str:
    """The latents a VAE of this class and config reads, in words: two VAEs with the same read
    each other's latents (every SD 1.x/2.x VAE, the x2 latent upscaler's included: 4 channels,
    8 pixels a cell, scaling factor 0.18215). SDXL's (0.13025) and Kandinsky's MoVQ differ."""
    cell = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
    words = [
        str(vae_class),
        f"{vae.get('latent_channels')} channels",
        f"{cell} px a cell",
        f"scaling factor {vae.get('scaling_factor')}",
    ]
    if vae.get("shift_factor") is not None:
        words.append(f"shift {vae.get('shift_factor')}")
    return ", ".join(words)
