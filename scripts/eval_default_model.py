"""Score the shipped default model with the world's pixel checker (tests/fixtures/world.py).

Loads the model through the project's own loader and sampling loop (`invoke.backend.loading`),
exactly as `invoke` does, then:

  txt2img    --n prompts `a <fg> <shape> on a <bg> background` (random labels), one image each,
             noise seeds that training never used; scored per label (fg_color, bg_color, shape).
  img2img    --n-img2img world pictures (picture seeds training never used) as init images, each
             with a prompt whose fg colour, bg colour and shape all differ from the picture's:
             img2img_keep   = share of outputs at strength 0.3 whose three labels are the init's;
             img2img_follow = share of outputs at strength 0.9 whose three labels are the prompt's.
  speed      one native-size image, 20 steps, batch 1: median wall time of 5 after a warm-up.

The last line is exactly
`fg_color=0.NN bg_color=0.NN shape=0.NN img2img_keep=0.NN img2img_follow=0.NN`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invoke.backend.job import Job, Noise
from invoke.backend.loading import load_model
from invoke.line.prompt_syntax import parse_prompt
from tests.fixtures import world

# Far from TRAIN_SEED (20260401) and from the small seeds people type: never seen in training.
EVAL_SEED = 777_000_000


def different_labels(rng: np.random.Generator, lab: world.Labels) -> world.Labels:
    """Random labels with every field changed: the prompt must move all three to count."""
    while True:
        new = world.sample_labels(rng)
        if new.fg_color != lab.fg_color and new.bg_color != lab.bg_color and new.shape != lab.shape:
            return new


def contact_sheet(rows: list[list[Image.Image]], path: Path) -> None:
    w = max(len(r) for r in rows)
    s = world.SIZE
    sheet = Image.new("RGB", (w * s, len(rows) * s), (128, 128, 128))
    for y, row in enumerate(rows):
        for x, img in enumerate(row):
            sheet.paste(img.resize((s, s)), (x * s, y * s))
    sheet.save(path)


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=root / "invoke" / "default_model")
    p.add_argument("--n", type=int, default=240, help="txt2img prompts (one image each)")
    p.add_argument("--n-img2img", type=int, default=100, help="init pictures for keep/follow")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=7.5)
    p.add_argument("--sampler", default=None, help="[the model's default, as invoke uses it]")
    p.add_argument("--outdir", type=Path, default=root / "runs" / "eval", help="contact sheets")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    args.sampler = args.sampler or model.default_sampler
    size = model.native_size
    args.outdir.mkdir(parents=True, exist_ok=True)
    print(f"model {args.model} on {model.device} ({model.dtype}), native {size}x{size}", flush=True)

    def job(prompt: str, seed: int, init: Image.Image | None = None, strength: float = 0.75) -> Job:
        return Job(parse_prompt(prompt), args.steps, args.cfg, args.sampler, size, size,
                   (Noise(seed),), init_image=init, strength=strength)  # fmt: skip

    # Speed first, on a quiet process: one image, native size, 20 steps, batch 1.
    timed = Job(parse_prompt("a red circle on a blue background"), 20, args.cfg, args.sampler,
                size, size, (Noise(1),))  # fmt: skip
    model.generate(timed)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        model.generate(timed)
        times.append(time.perf_counter() - t)
    sec = statistics.median(times)
    print(f"speed: {sec:.2f} s/image ({size}x{size}, 20 steps, {args.sampler}, batch 1, "
          f"{torch.get_num_threads()} threads)", flush=True)  # fmt: skip

    rng = np.random.default_rng(EVAL_SEED)
    hits = np.zeros(3)
    sheet: list[list[Image.Image]] = []
    confusions: dict[str, int] = {}
    t0 = time.time()
    for i in range(args.n):
        want = world.sample_labels(rng)
        img = model.generate(job(world.caption(want), EVAL_SEED + i))[0]
        got = world.check(img)
        hits += [got.fg_color == want.fg_color, got.bg_color == want.bg_color,
                 got.shape == want.shape]  # fmt: skip
        if got.shape != want.shape:
            key = f"{want.shape}->{got.shape}"
            confusions[key] = confusions.get(key, 0) + 1
        if i < 96:
            if i % 12 == 0:
                sheet.append([])
            sheet[-1].append(img)
        if (i + 1) % 40 == 0:
            acc = hits / (i + 1)
            print(f"txt2img {i + 1}/{args.n}: fg {acc[0]:.2f} bg {acc[1]:.2f} shape {acc[2]:.2f} "
                  f"({time.time() - t0:.0f}s)", flush=True)  # fmt: skip
    fg, bg, shape = hits / args.n
    contact_sheet(sheet, args.outdir / "txt2img.png")
    worst = sorted(confusions.items(), key=lambda kv: -kv[1])[:6]
    print(f"shape confusions (wanted->read): {worst}", flush=True)

    keep = follow = keep_same = 0
    sheet = []
    for i in range(args.n_img2img):
        init, _, lab = world.sample(rng)
        new = different_labels(rng, lab)
        seed = EVAL_SEED + 100_000 + i
        low = model.generate(job(world.caption(new), seed, init, 0.3))[0]
        high = model.generate(job(world.caption(new), seed, init, 0.9))[0]
        same = model.generate(job(world.caption(lab), seed, init, 0.3))[0]
        keep += world.check(low) == lab
        follow += world.check(high) == new
        keep_same += world.check(same) == lab
        if i < 16:
            sheet.append([init, low, high, same])
    n2 = args.n_img2img
    contact_sheet(sheet, args.outdir / "img2img.png")
    print(f"img2img (init | 0.3 other prompt | 0.9 other prompt | 0.3 same prompt): keep "
          f"{keep / n2:.2f}, follow {follow / n2:.2f}, keep with its own caption "
          f"{keep_same / n2:.2f}; sheets in {args.outdir}", flush=True)  # fmt: skip
    print(
        f"fg_color={fg:.2f} bg_color={bg:.2f} shape={shape:.2f} "
        f"img2img_keep={keep / n2:.2f} img2img_follow={follow / n2:.2f}"
    )


if __name__ == "__main__":
    main()
