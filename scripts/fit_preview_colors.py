"""Fit a model's latent->RGB preview map on its own decoder, and measure it against a real decode.

    nice python scripts/fit_preview_colors.py [MODEL_FOLDER] [--pictures N] [--steps S]

A preview (`--intermediates preview`) is `rgb = latents @ factors + bias`, one latent cell at a
time: a matrix product instead of a VAE decode. This script fits those factors (4x3 and a bias,
least squares) on what the model's decoder makes of real latents: the latents of N pictures the
model draws from the procedural world's captions, from half-way through the steps to the end
(when a picture has formed), against the decoded pixels averaged over each latent cell. Then it
measures, on the latents of N other pictures (other captions and seeds), the mean absolute error
in 0-255 levels between each preview and the decode: SD 1.x's table, the factors the folder ships
(its training.json), the fit, and the best any linear map could do (fit on the held-out latents
themselves). It prints the fit as training.json's fields, and what to ship.

The default model (8 + 8 pictures of 10 steps: ~15 s on one busy CPU core), as measured:
                               final  half-way on
  SD 1.x table                  67.2         71.2
  the folder's factors          27.6         28.4
  fitted on its decoder         44.1         37.6
  best linear, fit on these     24.4         29.6
No linear map shows this VAE's colours (a yellow star on purple previews as an orange star on
grey): they are not a per-cell linear function of its latents. A decode of its 64 px pictures
costs 15-35 ms, so its training.json says "preview": "decode" and its previews are decodes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invoke.backend.job import Job, Noise
from invoke.backend.loading import load_model
from invoke.backend.model import SD1_LATENT_RGB, Model
from invoke.config.settings import EMBEDDED_MODEL_DIR
from invoke.line.prompt_syntax import parse_prompt
from tests.fixtures import world

# Above this many levels of mean error a preview does not show the picture's colours.
GOOD_ENOUGH = 8.0


def drawn_latents(model: Model, pictures: int, steps: int, seed: int) -> list[torch.Tensor]:
    """The latents of `pictures` world captions drawn with the model, per step from half-way on
    (last: the final latents), each (pictures, 4, h, w)."""
    rng = np.random.default_rng(seed)
    kept: dict[int, list[torch.Tensor]] = {}
    for i in range(pictures):
        caption = world.sample(rng)[1]
        job = Job(parse_prompt(caption), steps, 7.5, model.default_sampler, 64, 64,
                  (Noise(seed * 1000 + i),))  # fmt: skip

        def keep(info, kept=kept):
            if info.step >= steps // 2:
                kept.setdefault(info.step, []).append(info.latents.float().cpu().clone())

        model.generate(job, keep)
    return [torch.cat(kept[step]) for step in sorted(kept)]


@torch.no_grad()
def decoded(model: Model, latents: torch.Tensor) -> torch.Tensor:
    """The decoder's pixels in [-1, 1], averaged over each latent cell: (b, 3, h, w)."""
    vae = model.vae
    scaled = (latents / vae.config.scaling_factor).to(model.device, model.dtype)
    pixels = vae.decode(scaled).sample.float().cpu().clamp(-1, 1)
    return F.avg_pool2d(pixels, pixels.shape[-1] // latents.shape[-1])


def linear(latents: torch.Tensor, factors, bias) -> torch.Tensor:
    """The linear preview in [-1, 1] (what Model.preview draws, before it is upscaled)."""
    factors = torch.as_tensor(factors, dtype=torch.float32)
    bias = torch.as_tensor(bias, dtype=torch.float32)
    rgb = torch.einsum("bchw,cr->brhw", latents, factors) + bias[None, :, None, None]
    return rgb.clamp(-1, 1)


def fit(model: Model, latents: torch.Tensor) -> tuple[list[list[float]], list[float]]:
    """Least-squares factors (4x3) and bias from latents to their decoded cell colours."""
    target = decoded(model, latents).permute(0, 2, 3, 1).reshape(-1, 3)
    cells = latents.permute(0, 2, 3, 1).reshape(-1, 4)
    rows = torch.cat([cells, torch.ones(len(cells), 1)], 1)
    solution = torch.linalg.lstsq(rows, target).solution
    return (
        [[round(v, 4) for v in row] for row in solution[:4].tolist()],
        [round(v, 4) for v in solution[4].tolist()],
    )


def levels(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of two [-1, 1] pictures, in 0-255 levels."""
    return float((a - b).abs().mean() * 127.5)


def errors(model: Model, held_out: list[torch.Tensor], tables: dict) -> dict[str, list[float]]:
    """Each table's error on the final held-out latents and on all of them from half-way on,
    and (last) the least-squares best any linear map does when fit on those very latents."""
    found: dict[str, list[float]] = {name: [] for name in tables}
    found["best linear, fit on these"] = []
    for latents in (held_out[-1], torch.cat(held_out)):
        pixels = decoded(model, latents)
        for name, (factors, bias) in [*tables.items(), (None, fit(model, latents))]:
            found[name or "best linear, fit on these"].append(
                levels(linear(latents, factors, bias), pixels)
            )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=str(EMBEDDED_MODEL_DIR))
    parser.add_argument("--pictures", type=int, default=8, help="pictures to fit on, and held out")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared machine: one core is enough for a 64 px model
    started = time.perf_counter()
    model = load_model(args.model, device="cpu", precision="float32")
    factors, bias = fit(model, torch.cat(drawn_latents(model, args.pictures, args.steps, 1)))
    held_out = drawn_latents(model, args.pictures, args.steps, seed=2)
    found = errors(model, held_out, {
        "SD 1.x table": (SD1_LATENT_RGB, (0.0, 0.0, 0.0)),
        "the folder's factors": (model.latent_rgb_factors, model.latent_rgb_bias),
        "fitted on its decoder": (factors, bias),
    })  # fmt: skip
    rows = ",\n    ".join(json.dumps(row) for row in factors)
    print(f'"latent_rgb_factors": [\n    {rows}\n],\n"latent_rgb_bias": {json.dumps(bias)}')
    print(f"\nheld-out preview vs decode, mean absolute error in 0-255 levels "
          f"({args.pictures} pictures, {args.steps} steps):")  # fmt: skip
    print(f"  {'':26} {'final':>7} {'half-way on':>12}")
    for name, (final, later) in [*found.items(), ("a decode", (0.0, 0.0))]:
        print(f"  {name:26} {final:7.1f} {later:12.1f}")
    one = held_out[-1][:1].to(model.device, model.dtype)
    model.preview_decodes = False  # time the linear map itself
    print(f"\none picture: linear map {_ms(model.preview, one):.1f} ms, "
          f"decode {_ms(model.decode, one):.1f} ms")  # fmt: skip
    best = min(found["fitted on its decoder"][0], found["the folder's factors"][0])
    if best > GOOD_ENOUGH:
        print(f'previews: a linear map misses by {best:.0f} levels; ship "preview": "decode"')
    else:
        print("previews: ship the better factors above as latent_rgb_factors/latent_rgb_bias")
    print(f"({time.perf_counter() - started:.0f} s)")


def _ms(show, latents: torch.Tensor) -> float:
    """Milliseconds `show` takes on `latents`, after a first call."""
    show(latents)
    t = time.perf_counter()
    for _ in range(5):
        show(latents)
    return (time.perf_counter() - t) / 5 * 1000


if __name__ == "__main__":
    main()
