"""Train the example LoRA that ships with the default model: shapes drawn as outlines.

The default model draws filled shapes (`a red circle on a blue background`). This LoRA is trained
on the same captions over pictures whose shape is only a thick outline, so

    invoke --lora_dir examples/loras "a red circle on a blue background <lora:outline:1>"

draws a red ring: a LoRA whose effect anyone can see, made without downloading anything. It is
written in kohya-ss's layout (lora_unet_..., lora_down/lora_up/alpha), the one most downloaded
LoRAs use, so it goes through the same reading code as theirs.

The low-rank matrices sit beside the UNet's attention projections and resnet convolutions (forward
hooks add up(down(x)) * alpha/rank); the base model, VAE and text encoder stay frozen. Training
is the usual epsilon objective on the default model's noise schedule.

    python scripts/train_example_lora.py --minutes 10 --out examples/loras/outline.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures import world

SEED = 20261123
RANK = 8
OUTLINE = 0.3  # the outline's width, as a share of the shape's radius


def make_lora(
    unet: nn.Module, rank: int
) -> dict[str, tuple[nn.Module, nn.Parameter, nn.Parameter]]:
    """Low-rank pairs beside every attention Linear and resnet 3x3 convolution, hooked in."""
    layers: dict[str, tuple[nn.Module, nn.Parameter, nn.Parameter]] = {}
    for name, module in unet.named_modules():
        linear = isinstance(module, nn.Linear) and ".attentions." in name
        conv = (
            isinstance(module, nn.Conv2d)
            and ".resnets." in name
            and name.endswith(("conv1", "conv2"))
        )
        if not (linear or conv):
            continue
        if linear:
            down = nn.Parameter(torch.randn(rank, module.in_features) / module.in_features**0.5)
            up = nn.Parameter(torch.zeros(module.out_features, rank))
        else:
            fan_in = module.in_channels * 9
            down = nn.Parameter(torch.randn(rank, module.in_channels, 3, 3) / fan_in**0.5)
            up = nn.Parameter(torch.zeros(module.out_channels, rank, 1, 1))
        layers[name] = (module, down, up)

        def hook(mod, inputs, output, down=down, up=up, conv=conv):
            x = inputs[0]
            if conv:
                return output + F.conv2d(F.conv2d(x, down, padding=1), up)
            return output + x @ down.T @ up.T

        module.register_forward_hook(hook)
    return layers


def outline_picture(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A world picture whose shape is drawn as an outline: the filled shape minus a smaller copy
    in the background colour."""
    labels = world.sample_labels(rng)
    center, radius = world.sample_place(rng)
    outer = np.asarray(world.render(labels, center, radius), dtype=np.float32)
    inner_radius = radius * (1 - OUTLINE * (1.4 if labels.shape in ("star", "cross") else 1))
    # The inner shape as coverage 0..1 (anti-aliased edge), from a white-on-black rendering.
    silhouette = world.render(world.Labels("white", "black", labels.shape), center, inner_radius)
    low, high = world.COLORS["black"][0], world.COLORS["white"][0]
    inside = (np.asarray(silhouette, dtype=np.float32)[..., :1] - low) / (high - low)
    background = np.array(world.COLORS[labels.bg_color], dtype=np.float32)
    picture = outer * (1 - inside) + background * inside
    return picture, world.caption(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--pictures", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--out", type=Path, default=Path("examples/loras/outline.safetensors"))
    args = parser.parse_args()

    from example_training import encode_pictures, frozen_default_model, train
    from safetensors.torch import save_file

    torch.manual_seed(SEED)
    model = frozen_default_model()
    rng = np.random.default_rng(SEED)
    pictures, captions = zip(*(outline_picture(rng) for _ in range(args.pictures)), strict=True)
    latents, embeddings = encode_pictures(model, pictures, captions)

    layers = make_lora(model.unet, RANK)
    params = [p for _, down, up in layers.values() for p in (down, up)]

    def predict(noisy: torch.Tensor, t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return model.unet(noisy, t, encoder_hidden_states=embeddings[index]).sample

    step, loss = train(model, latents, params, predict, args)

    tensors = {}
    for name, (_, down, up) in layers.items():
        key = "lora_unet_" + name.replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = down.detach().clone().half()
        tensors[f"{key}.lora_up.weight"] = up.detach().clone().half()
        tensors[f"{key}.alpha"] = torch.tensor(float(RANK))  # alpha = rank: scale 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"steps": str(step), "rank": str(RANK), "made_by": "scripts/train_example_lora.py"}
    save_file(tensors, str(args.out), metadata=metadata)
    print(f"wrote {args.out}: {len(layers)} layers, {step} steps, loss {loss:.4f}")


if __name__ == "__main__":
    main()
