"""Benchmark our backend against plain diffusers on the same weights, in the same process.

The weights are random (no downloads here; speed does not depend on their values, see
../shared/BENCH.md): `--arch sd15` builds Stable Diffusion 1.5's architecture (cached under
$XDG_CACHE_HOME/invoke/bench-sd15, about 2 GB in fp16), `--arch tiny` the test model (a CPU
smoke run). Both sides load the same diffusers folder from disk: diffusers through
StableDiffusionPipeline.from_pretrained, ours through invoke.backend.loading.load_model.

Measured, each for diffusers and ours: s/image and it/s of batch-1 txt2img; img2img at -f 0.75;
`-n 16` per image (ours batches as the session does: plan.CUDA_BATCH per UNet batch on CUDA,
one at a time elsewhere; diffusers takes num_images_per_prompt=16); model load time; and, in a
fresh process per side (after this process has warmed inductor's cache): the first image,
compile included, and peak GPU memory (CUDA only) at batch 1 and at -n 16. One warm-up, then
the median of --runs, the sides taking turns run by run, with the GPU synchronized around each
run. The last line is exactly `speedup_vs_diffusers=X.XX` (batch-1 txt2img, diffusers' time
over ours).

    python scripts/bench.py --arch tiny --device cpu     # smoke run, under a minute on 2 cores
    python scripts/bench.py                              # SD 1.5, 512x512, 50 steps, on CUDA
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invoke.backend.device import pick_device, pick_dtype
from invoke.backend.job import Job, Noise
from invoke.backend.loading import load_model
from invoke.backend.schedulers import make_scheduler
from invoke.line.prompt_syntax import parse_prompt
from invoke.plan import CUDA_BATCH  # imported by both sides' fresh processes alike

PROMPT = "a photo of a red house with a tree"
SEED = 42
STRENGTH = 0.75
CFG = 7.5
N_IMAGES = 16
BENCH_FORMAT = 1  # bump when the sd15 folder's contents change, so caches are rebuilt
DEFAULTS = {"sd15": {"size": 512, "steps": 50}, "tiny": {"size": 64, "steps": 10}}


# -- the model folder -----------------------------------------------------------------------------


def model_folder(arch: str, where: Path | None, device: torch.device) -> tuple[Path, bool]:
    """(the folder, whether it is a temporary one to delete afterwards)."""
    if arch == "tiny":
        from tests.fixtures.tiny_models import build_test_model

        folder = Path(tempfile.mkdtemp(prefix="invoke-bench-")) / "tiny"
        return build_test_model(folder), True
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = where or base / "invoke" / "bench-sd15"
    marker = folder / "bench.json"
    if not (marker.is_file() and json.loads(marker.read_text()).get("format") == BENCH_FORMAT):
        print(f">> building SD 1.5 with random weights in {folder}", file=sys.stderr)
        build_sd15(folder, device)
        marker.write_text(json.dumps({"arch": "sd15", "format": BENCH_FORMAT}))
    return folder, False


def build_sd15(out: Path, device: torch.device) -> None:
    """SD 1.5's UNet, VAE and CLIP text encoder (BENCH.md's configs), random, saved in fp16.

    Every weight is halved: random SD-sized weights overflow fp16 into NaN pictures; halved ones
    stay finite. Values do not change the timing.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.fixtures.clip_vocab import BOS, EOS, MAX_LENGTH, build_clip_tokenizer
    from tests.fixtures.tiny_models import WORDS, write_pipeline_files

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    build_clip_tokenizer(out / "tokenizer", [*WORDS, *PROMPT.split()])
    vocab = json.loads((out / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    # Random init runs where the model will (16 CPU cores or a GPU beat 2 shared cores).
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            cross_attention_dim=768,
            attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=512,
            scaling_factor=0.18215,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=MAX_LENGTH,
                projection_dim=768,
                hidden_act="quick_gelu",
                bos_token_id=vocab[BOS],
                eos_token_id=vocab[EOS],
                pad_token_id=vocab[EOS],
            )
        )
    with torch.no_grad():
        for module in (unet, vae, text_encoder):
            for tensor in module.state_dict().values():
                if tensor.is_floating_point():
                    tensor.mul_(0.5)
            module.half()
    unet.save_pretrained(out / "unet", safe_serialization=True)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    (out / "text_encoder").mkdir()
    text_encoder.config.save_pretrained(out / "text_encoder")
    state = {k: v.contiguous().cpu() for k, v in text_encoder.state_dict().items()}
    save_file(state, out / "text_encoder" / "model.safetensors", {"format": "pt"})
    write_pipeline_files(out)


# -- the two sides --------------------------------------------------------------------------------


class Diffusers:
    """Plain diffusers as its docs show it: fp16, SDPA (its default), no other tuning."""

    def __init__(self, folder: Path, device: torch.device, dtype: torch.dtype, sampler: str):
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

        self.pipe = StableDiffusionPipeline.from_pretrained(
            folder, dtype=dtype, safety_checker=None, local_files_only=True
        ).to(device)
        # The folder's own scheduler file, as our loader reads it: a loaded config carries the
        # first class's defaults, which are not every sampler's.
        config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        self.pipe.scheduler = make_scheduler(sampler, config)
        self.pipe.set_progress_bar_config(disable=True)
        self.img2img = StableDiffusionImg2ImgPipeline(**self.pipe.components)
        self.img2img.set_progress_bar_config(disable=True)

    def txt2img(self, size: int, steps: int, count: int = 1) -> list[Image.Image]:
        return self.pipe(
            prompt=PROMPT,
            num_inference_steps=steps,
            guidance_scale=CFG,
            height=size,
            width=size,
            num_images_per_prompt=count,
            generator=[torch.Generator().manual_seed(SEED + k) for k in range(count)],
        ).images

    def img2img_run(self, init: Image.Image, steps: int) -> list[Image.Image]:
        return self.img2img(
            prompt=PROMPT,
            image=init,
            strength=STRENGTH,
            num_inference_steps=steps,
            guidance_scale=CFG,
            generator=torch.Generator().manual_seed(SEED),
        ).images


class Ours:
    def __init__(
        self, folder: Path, device: str, precision: str, sampler: str, compile: bool | None
    ):
        self.model = load_model(folder, device=device, precision=precision, compile=compile)
        self.sampler = sampler

    def job(self, size: int, steps: int, noises: tuple[Noise, ...], **extra: Any) -> Job:
        return Job(
            prompt=parse_prompt(PROMPT),
            steps=steps,
            cfg_scale=CFG,
            sampler=self.sampler,
            width=size,
            height=size,
            noises=noises,
            **extra,
        )

    def txt2img(self, size: int, steps: int, count: int = 1) -> list[Image.Image]:
        # As the session runs `-n`: CUDA_BATCH images per UNet batch on CUDA, else one at a time.
        per_batch = CUDA_BATCH if self.model.device.type == "cuda" else 1
        images: list[Image.Image] = []
        for start in range(0, count, per_batch):
            noises = tuple(Noise(SEED + k) for k in range(start, min(count, start + per_batch)))
            images += self.model.generate(self.job(size, steps, noises))
        return images

    def img2img_run(self, init: Image.Image, steps: int) -> list[Image.Image]:
        job = self.job(size=init.width, steps=steps, noises=(Noise(SEED),))
        from dataclasses import replace

        return self.model.generate(replace(job, init_image=init, strength=STRENGTH))


# -- measuring ------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    runs: int, device: torch.device, sides: dict[str, Callable[[], object]]
) -> dict[str, float]:
    """side -> median seconds of `runs` after one warm-up.

    The sides take turns run by run, so a machine that gets busier or quieter (shared CPUs, GPU
    clocks) moves both alike.
    """
    for run in sides.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(runs):
        for name, run in sides.items():
            synchronize(device)
            started = time.perf_counter()
            run()
            synchronize(device)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def fresh_process(args: argparse.Namespace, folder: Path, side: str) -> dict[str, float]:
    """One side alone in a new Python process: its first image (seconds from the process's start,
    compile included) and, on CUDA, its peak GPU memory at batch 1 and at `-n 16`."""
    command = [
        sys.executable,
        __file__,
        "--fresh-process",
        side,
        "--model-dir",
        str(folder),
        "--arch",
        args.arch,
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--size",
        str(args.size),
        "--steps",
        str(args.steps),
        "--sampler",
        args.sampler,
        "--compile" if args.compile else "--no-compile",
        "--threads",
        str(args.threads),
        "--t0",
        repr(time.time()),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    figures = {}
    for line in done.stdout.splitlines():
        key, equals, value = line.partition("=")
        if equals and key in ("first_image_s", "peak1_mib", "peak16_mib"):
            figures[key] = float(value)
    if done.returncode != 0 or "first_image_s" not in figures:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"bench: the fresh-process run for {side} failed ({done.returncode})")
    return figures


def child_fresh_process(args: argparse.Namespace) -> None:
    """The subprocess side of fresh_process; prints key=value lines.

    Peak memory is measured here, one side per process, as the most memory the caching allocator
    held (max_memory_reserved): it counts what CUDA graph pools keep, which allocated-bytes
    statistics miss, and nothing of the other side.
    """
    folder = Path(args.model_dir)
    device = pick_device(args.device)
    if args.fresh_process == "ours":
        side: Any = Ours(folder, args.device, args.precision, args.sampler, args.compile)
    else:
        side = Diffusers(folder, device, pick_dtype(args.precision, device), args.sampler)
    side.txt2img(args.size, args.steps)
    synchronize(device)
    print(f"first_image_s={time.time() - args.t0:.3f}", flush=True)
    if device.type != "cuda":
        return
    for key, count in (("peak1_mib", 1), ("peak16_mib", N_IMAGES)):
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(2):  # the first run of a new shape may compile; the second is steady
            side.txt2img(args.size, args.steps, count)
        synchronize(device)
        print(f"{key}={torch.cuda.max_memory_reserved(device) / 2**20:.1f}", flush=True)


def quiet_libraries() -> None:
    """No loading bars or safety-checker notices between the figures."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


def init_picture(size: int) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size] * (255 / max(size - 1, 1))
    return Image.fromarray(np.stack([x, y, (x + y) / 2], axis=-1).astype(np.uint8))


def table(rows: list[tuple[str, float | None, float | None, bool]], device: str) -> str:
    """rows: (what, diffusers, ours, higher_is_better); ratio > 1 means ours is better."""
    lines = [
        f"{'':34} {'diffusers':>10} {'ours':>10} {'ours vs diffusers':>18}",
    ]
    for what, theirs, ours, higher in rows:
        if theirs is None or ours is None:
            lines.append(f"{what:34} {'n/a':>10} {'n/a':>10} {'n/a':>18}")
            continue
        ratio = ours / theirs if higher else theirs / ours
        lines.append(f"{what:34} {theirs:10.3f} {ours:10.3f} {ratio:17.2f}x")
    lines.append(f"(device: {device}; ratio > 1: ours is better)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    parser.add_argument("--precision", default="auto", help="auto (fp16 on GPUs), fp16, bf16, fp32")
    parser.add_argument("--size", type=int, help="image side (default: 512 sd15, 64 tiny)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: 50 sd15, 10 tiny)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--sampler", default="plms", help="both sides (plms = diffusers' default)")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile our UNet (default: on CUDA, where this many runs pay for it)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--model-dir", help="where the sd15 folder is cached")
    parser.add_argument("--fresh-process", choices=("ours", "diffusers"), help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = args.size or DEFAULTS[args.arch]["size"]
    args.steps = args.steps or DEFAULTS[args.arch]["steps"]
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if int(STRENGTH * args.steps) < 1:
        parser.error(
            f"--steps {args.steps}: img2img at -f {STRENGTH} would take no step; use 2 or more"
        )
    # The tiny model's tensors are too small for threads: on 2 shared cores they only spin.
    threads = args.threads or (1 if args.arch == "tiny" else 0)
    args.threads = threads
    if threads:
        torch.set_num_threads(threads)
    device = pick_device(args.device)
    if args.compile is None:
        # The benchmark runs each shape many times: compiling pays wherever CUDA graphs exist.
        args.compile = device.type == "cuda"
    if args.fresh_process:
        quiet_libraries()
        child_fresh_process(args)
        return

    quiet_libraries()
    dtype = pick_dtype(args.precision, device)
    folder, temporary = model_folder(
        args.arch, Path(args.model_dir) if args.model_dir else None, device
    )
    args.model_dir = str(folder)
    try:
        run_bench(args, folder, device, dtype)
    finally:
        if temporary:
            shutil.rmtree(folder.parent, ignore_errors=True)


def run_bench(args: argparse.Namespace, folder: Path, device: torch.device, dtype: Any) -> None:
    size, steps, runs = args.size, args.steps, args.runs
    # Loads alternate and each side keeps its faster one: the first read of the folder also
    # fills the page cache, which must not count against whichever side went first.
    load_times: dict[str, list[float]] = {"diffusers": [], "ours": []}
    theirs = ours = None
    for _ in range(2):
        del theirs, ours
        started = time.perf_counter()
        theirs = Diffusers(folder, device, dtype, args.sampler)
        synchronize(device)
        load_times["diffusers"].append(time.perf_counter() - started)
        started = time.perf_counter()
        ours = Ours(folder, args.device, args.precision, args.sampler, args.compile)
        synchronize(device)
        load_times["ours"].append(time.perf_counter() - started)

    init = init_picture(size)
    taken = int(STRENGTH * steps)
    figures: dict[str, dict[str, float | None]] = {"diffusers": {}, "ours": {}}
    sides = {"diffusers": theirs, "ours": ours}

    def both(work: Callable[[Any], object]) -> dict[str, float]:
        return measure(runs, device, {n: (lambda s=s: work(s)) for n, s in sides.items()})

    batch1 = both(lambda side: side.txt2img(size, steps))
    img2img = both(lambda side: side.img2img_run(init, steps))
    many = both(lambda side: side.txt2img(size, steps, N_IMAGES))
    for name, fig in figures.items():
        fig["t2i"] = batch1[name]
        fig["i2i"] = img2img[name]
        fig["n16"] = many[name] / N_IMAGES
        fig["load"] = min(load_times[name])
    # The two sides' batch-1 pictures (same seed, sampler and weights) agree up to rounding.
    difference = np.abs(
        np.asarray(theirs.txt2img(size, steps)[0], dtype=np.int16)
        - np.asarray(ours.txt2img(size, steps)[0], dtype=np.int16)
    ).max()
    sides.clear()
    del theirs, ours
    if device.type == "cuda":
        torch.cuda.empty_cache()
    for name in ("diffusers", "ours"):
        fresh = fresh_process(args, folder, name)
        figures[name]["first"] = fresh["first_image_s"]
        figures[name]["peak1"] = fresh.get("peak1_mib")
        figures[name]["peak16"] = fresh.get("peak16_mib")

    d, o = figures["diffusers"], figures["ours"]
    cache = " (warm cache)" if args.compile else ""
    rows: list[tuple[str, float | None, float | None, bool]] = [
        ("txt2img batch 1, s/image", d["t2i"], o["t2i"], False),
        ("txt2img batch 1, it/s", steps / d["t2i"], steps / o["t2i"], True),  # type: ignore[operator]
        (f"img2img -f {STRENGTH}, s/image", d["i2i"], o["i2i"], False),
        (f"-n {N_IMAGES}, s/image", d["n16"], o["n16"], False),
        ("peak GPU MiB, batch 1", d["peak1"], o["peak1"], False),
        (f"peak GPU MiB, -n {N_IMAGES}", d["peak16"], o["peak16"], False),
        (f"first image, fresh process{cache}, s", d["first"], o["first"], False),
        ("model load, s", d["load"], o["load"], False),
    ]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(
        f"{args.arch} {size}x{size}, {steps} steps ({taken} for img2img), sampler {args.sampler}, "
        f"{str(dtype).removeprefix('torch.')}, compile {'on' if args.compile else 'off'}, "
        f"median of {runs}; torch {torch.__version__}"
    )
    print(table(rows, name))
    print(f"largest pixel difference, ours vs diffusers (batch 1): {difference}")
    print(f"speedup_vs_diffusers={d['t2i'] / o['t2i']:.2f}")  # type: ignore[operator]


if __name__ == "__main__":
    main()
