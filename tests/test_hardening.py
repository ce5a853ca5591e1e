"""Hardening: a catalogue of bad input, Ctrl-C in batches, and names that must stay in the outdir.

Everything goes through the real front end (`invoke.__main__.cli` with the tiny model): each bad
line is followed by a good one in the same batch, so every case also checks that the batch goes
on after it. `CATALOGUE` below is the table docs/bad-input.md is generated from:

    .venv/bin/python tests/test_hardening.py > docs/bad-input.md

In expected messages `{d}` is the folder of test files and `…` stands for any text (a library's
own words, which we quote but do not own).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GOOD_LINE = "a good line -s 1 -S 7"  # follows every bad line: the batch must still make it


# -- the catalogue --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input and what the user sees.

    outcome "error": `line 1: <message>` on stderr, the next line still runs, exit status 1.
    outcome "note":  the input is odd but usable: a `>> <message>` note, its image is made, exit 0.
    outcome "shown": the line succeeds and prints <message> (a command fetched, never executed).
    """

    id: str
    group: str
    line: str | bytes
    message: str
    outcome: str = "error"
    xfail: str = ""  # why it fails today and what must change (strict: fixing it shows up)


D = "{d}"  # the folder of test files, filled in at run time

CATALOGUE: tuple[Case, ...] = (
    # -- the line parser ------------------------------------------------------------------------
    Case(
        "unknown switch",
        "parser",
        "a cat -s 1 --bogus 3",
        "--bogus: unknown switch; if it is part of the prompt, put the prompt in quotes",
    ),
    Case(
        "unknown short switch",
        "parser",
        "a cat -s 1 -Q",
        "-Q: unknown switch; if it is part of the prompt, put the prompt in quotes",
    ),
    Case(
        "missing value",
        "parser",
        "a cat -s",
        "-s/--steps: needs a value: a whole number in 1..1000",
    ),
    Case(
        "not a number",
        "parser",
        "a cat -s ten",
        "-s/--steps: ten is not a whole number; use 1..1000",
    ),
    Case(
        "fraction for a count",
        "parser",
        "a cat -n 2.5",
        "-n/--iterations: 2.5 is not a whole number; use 1..1000",
    ),
    Case(
        "not a float",
        "parser",
        "a cat -C high",
        "-C/--cfg_scale: high is not a number; use [0, 100]",
    ),
    Case(
        "NaN", "parser", "a cat -C nan", "-C/--cfg_scale: nan is not a finite number; use [0, 100]"
    ),
    Case(
        "infinity",
        "parser",
        "a cat -f inf",
        "-f/--strength: inf is not a finite number; use (0, 1]",
    ),
    Case("negative steps", "parser", "a cat -s -3", "-s/--steps: -3 is not in 1..1000"),
    Case("zero steps", "parser", "a cat -s 0", "-s/--steps: 0 is not in 1..1000"),
    Case("huge steps", "parser", "a cat -s 100000000", "-s/--steps: 100000000 is not in 1..1000"),
    Case("zero width", "parser", "a cat -W 0", "-W/--width: 0 is not in 16..4096"),
    Case("negative height", "parser", "a cat -H -64", "-H/--height: -64 is not in 16..4096"),
    Case("huge width", "parser", "a cat -W 100000", "-W/--width: 100000 is not in 16..4096"),
    Case("zero iterations", "parser", "a cat -n 0", "-n/--iterations: 0 is not in 1..1000"),
    Case(
        "huge iterations",
        "parser",
        "a cat -n 1000000",
        "-n/--iterations: 1000000 is not in 1..1000",
    ),
    Case(
        "seed 2^32",
        "parser",
        "a cat -S 4294967296",
        "-S/--seed: 4294967296 is not in 0..4294967295 (or -1000000..-1 to reuse an earlier seed)",
    ),
    Case(
        "seed of 40 digits",
        "parser",
        "a cat -S " + "9" * 40,
        "-S/--seed: "
        + "9" * 40
        + " is not in 0..4294967295 (or -1000000..-1 to reuse an earlier seed)",
    ),
    Case(
        "earlier seed that does not exist",
        "parser",
        "a cat -s 1 -S -5",
        "-S/--seed: -5 means the seed of the image 5 back, but this session has made 0; "
        "give a seed 0..4294967295",
    ),
    Case("strength above 1", "parser", "a cat -f 1.5", "-f/--strength: 1.5 is not in (0, 1]"),
    Case(
        "unknown sampler",
        "parser",
        "a cat -A k_bogus",
        "-A/--sampler: k_bogus is not one of ddim, plms, k_lms, k_euler, k_euler_a, k_heun, "
        "k_dpm_2, k_dpm_2_a, k_dpmpp_2, k_dpmpp_2_a, ddpm, deis[_k], lms[_k], pndm, heun[_k], "
        "euler[_k], euler_a, kdpm_2[_k], kdpm_2_a[_k], dpmpp_2s[_k], dpmpp_2m[_k], "
        "dpmpp_2m_sde[_k], dpmpp_3m[_k], dpmpp_sde[_k], unipc[_k], lcm, tcd, dpmpp_2m_sde_exp",
    ),
    Case(
        "variation seed not a number",
        "parser",
        "a cat -V 12:x",
        "-V/--with_variations: 12:x is not seed:weight; use seed:weight[,seed:weight...], "
        "e.g. 12:0.1,34:0.2",
    ),
    Case(
        "unterminated double quote",
        "parser",
        '"a cat -s 1',
        'line: has a " at column 1 that is never closed; close it, or escape it as \\"',
    ),
    Case(
        "unterminated single quote",
        "parser",
        "a cat -s 1 'x",
        "line: has a ' at column 12 that is never closed; close it, or escape it as \\'",
    ),
    Case(
        "escape sequence",
        "parser",
        "a cat\x1b[2J -s 1",
        "line: has a control character U+001B at column 6",
    ),
    Case("NUL", "parser", "a\x00cat -s 1", "line: has a control character U+0000 at column 2"),
    Case(
        "100 kB line",
        "parser",
        "x" * 100_000,
        "line: is 100000 characters long; the limit is 20000",
    ),
    Case(
        "no prompt",
        "parser",
        "-s 1 -S 3",
        'no prompt: type what to draw first, e.g. "a red circle -s 20"',
    ),
    Case(
        "unknown ! command",
        "parser",
        "!bogus",
        "!bogus: unknown command; the commands are … (see !help)",
    ),
    Case(
        "img2img that would take 0 steps",
        "parser",
        f"a cat -s 1 -I {D}/good.png",
        "-f/--strength: 0.75 with -s 1 takes int(0.75 x 1) = 0 steps; "
        "use -f 1.00 or more, or -s 2 or more",
    ),
    # -- init images and masks ------------------------------------------------------------------
    Case(
        "missing init image",
        "image",
        f"a cat -s 2 -I {D}/missing.png",
        f"{D}/missing.png: no such image (looked at {D}/missing.png); give an existing path or "
        "the name of a file in the output folder",
    ),
    Case(
        "init image is a folder",
        "image",
        f"a cat -s 2 -I {D}/folder.png",
        f"init image {D}/folder.png: is a folder; give the path of a PNG, JPEG, WebP or GIF file",
    ),
    Case(
        "init image not an image",
        "image",
        f"a cat -s 2 -I {D}/text.png",
        f"init image {D}/text.png: not an image PIL can read; use a PNG, JPEG, WebP or GIF file",
    ),
    Case(
        "truncated PNG",
        "image",
        f"a cat -s 2 -I {D}/truncated.png",
        f"init image {D}/truncated.png: the image data is truncated or corrupt (…); save it again",
    ),
    Case(
        "1×1 image",
        "image",
        f"a cat -s 2 -I {D}/1x1.png",
        f"init image {D}/1x1.png: 1×1 is too small; use an image of at least 8×8",
    ),
    Case(
        "4×4 image",
        "image",
        f"a cat -s 2 -I {D}/4x4.png",
        f"init image {D}/4x4.png: 0×0 is too small (after rounding down to a multiple of 8); "
        "each side must be at least 8 pixels",
    ),
    Case(
        "20000×20000 decompression bomb",
        "image",
        f"a cat -s 2 -I {D}/bomb.png",
        f"init image {D}/bomb.png: far more than the 67 Mpixels allowed; scale it down first",
    ),
    Case(
        "bomb as a mask",
        "image",
        f"a cat -s 2 -f 0.5 -I {D}/good.png -M {D}/bomb.png",
        f"mask {D}/bomb.png: far more than the 67 Mpixels allowed; scale it down first",
    ),
    Case(
        "missing mask",
        "image",
        f"a cat -s 2 -f 0.5 -I {D}/good.png -M {D}/missing.png",
        f"{D}/missing.png: no such image (looked at {D}/missing.png); give an existing path or "
        "the name of a file in the output folder",
    ),
    Case(
        "mask not an image",
        "image",
        f"a cat -s 2 -f 0.5 -I {D}/good.png -M {D}/text.png",
        f"mask {D}/text.png: not an image PIL can read; use a PNG, JPEG, WebP or GIF file",
    ),
    Case(
        "mask without an init image",
        "image",
        f"a cat -s 2 -M {D}/mask-32x48.png",
        "-M/--init_mask: a mask needs an init image; add -I FILE",
    ),
    Case(
        "animated GIF",
        "image",
        f"a cat -s 2 -f 0.5 -I {D}/animated.gif",
        "animated.gif: animated: using its first frame",
        outcome="note",
    ),
    Case(
        "16-bit PNG",
        "image",
        f"a cat -s 2 -f 0.5 -I {D}/16bit.png",
        "16bit.png: I;16 (16-bit) image scaled to 8 bits",
        outcome="note",
    ),
    Case(
        "CMYK JPEG",
        "image",
        f"a cat -s 2 -f 0.5 -I {D}/cmyk.jpg",
        "cmyk.jpg: CMYK image converted to RGB",
        outcome="note",
    ),
    Case(
        "mask of another size",
        "image",
        f"a cat -s 2 -f 0.5 -I {D}/good.png -M {D}/mask-32x48.png",
        "mask-32x48.png: mask mask-32x48.png is 32×48: resized to the init image's 64×64",
        outcome="note",
    ),
    # -- PNG metadata for !fetch ----------------------------------------------------------------
    Case(
        "PNG without chunks",
        "fetch",
        f"!fetch {D}/plain.png",
        f"{D}/plain.png: has no Dream, sd-metadata or parameters text; it was not made by "
        "invoke, InvokeAI or AUTOMATIC1111",
    ),
    Case(
        "malformed JSON",
        "fetch",
        f"!fetch {D}/bad-json.png",
        f"{D}/bad-json.png: no usable command in its metadata (sd-metadata is not valid JSON (…))",
    ),
    Case(
        "JSON of the wrong shape",
        "fetch",
        f"!fetch {D}/json-shape.png",
        f"{D}/json-shape.png: no usable command in its metadata (sd-metadata: has no image object)",
    ),
    Case(
        "huge chunk",
        "fetch",
        f"!fetch {D}/huge-chunk.png",
        f"{D}/huge-chunk.png: the 'Dream' chunk is 200006 bytes, more than the 64 KiB allowed; "
        "not metadata invoke can use",
    ),
    Case(
        "shell metacharacters after the prompt",
        "fetch",
        f"!fetch {D}/shell-tail.png",
        f"{D}/shell-tail.png: no usable command in its metadata (Dream: touch: is not a switch or "
        "a switch's value; prompt text goes inside the quotes)",
    ),
    Case(
        "shell metacharacters in the prompt",
        "fetch",
        f"!fetch {D}/shell-prompt.png",
        '"$(touch {d}/PWNED); `touch {d}/PWNED`" -s 1 -S 3',
        outcome="shown",
    ),
    Case(
        "control character in the chunk",
        "fetch",
        f"!fetch {D}/escape.png",
        f"{D}/escape.png: no usable command in its metadata (Dream: the Dream chunk holds a "
        "control character '\\x1b')",
    ),
    Case(
        "not a PNG",
        "fetch",
        f"!fetch {D}/cmyk.jpg",
        f"{D}/cmyk.jpg: not a PNG file; !fetch reads PNG metadata only",
    ),
    Case(
        "missing file",
        "fetch",
        f"!fetch {D}/missing.png",
        f"{D}/missing.png: no such file; give the path of a PNG made by invoke",
    ),
    Case(
        "a folder",
        "fetch",
        f"!fetch {D}/folder.png",
        f"{D}/folder.png: is a folder; give the path of a PNG file",
    ),
    # -- !fix FILE --outcrop ... ------------------------------------------------------------------
    Case(
        "no such image",
        "fix",
        f"!fix {D}/missing.png --outcrop right 64",
        f"!fix: {D}/missing.png: no such file (nor in …); give the path of an image",
    ),
    Case(
        "not an image",
        "fix",
        f"!fix {D}/text.png --outcrop right 64",
        f"!fix: init image {D}/text.png: not an image PIL can read; use a PNG, JPEG, WebP or GIF "
        "file",
    ),
    Case(
        "no metadata and no prompt (InvokeAI #1320)",
        "fix",
        f"!fix {D}/good.png --outcrop right 64",
        f"!fix: {D}/good.png has no metadata with its prompt and seed; type a prompt after the "
        f'file: !fix {D}/good.png "a red circle on a blue background" --outcrop right 64',
    ),
    Case(
        "no metadata, a prompt on the line",
        "fix",
        f"!fix {D}/good.png a red background -s 2 --outcrop right 8",
        "good.png has no metadata: using the line's prompt and a new seed",
        outcome="note",
    ),
    Case(
        "nothing to do",
        "fix",
        f"!fix {D}/good.png",
        f"!fix: say how to extend {D}/good.png, e.g. !fix {D}/good.png --outcrop right 64 "
        "(sides top, right, bottom, left); face restoration needs models this program does not "
        "ship",
    ),
    Case(
        "a side that is not one",
        "fix",
        f"!fix {D}/good.png --outcrop up 64",
        "-c/--outcrop: up is not a side; use SIDE PIXELS pairs, SIDE one of top, right, bottom, "
        "left, e.g. top 64",
    ),
    Case(
        "pixels not a positive number",
        "fix",
        f"!fix {D}/good.png --outcrop top -8",
        "-c/--outcrop: 'top -8' needs a whole number of pixels in 1..4096",
    ),
    Case(
        "upscaling a file with drawing switches",
        "fix",
        f"!fix {D}/good.png -U 2 -s 30",
        "!fix FILE -U enlarges FILE as it is and draws nothing: a prompt, -S, --latents, "
        "--upscaler, -o, -z and --fnformat go with it; to draw it again larger, !fetch FILE and "
        "add -U to its line",
    ),
    Case(
        "latents to upscale that are not there",
        "fix",
        f"!fix {D}/shell-prompt.png -U 2 --upscaler {D}/x2-upscaler --latents gone.safetensors",
        "--latents: gone.safetensors: no such file",
    ),
    Case(
        "face restoration (GFPGAN, CodeFormer)",
        "fix",
        f"!fix {D}/good.png -G 0.8 -ft gfpgan",
        "-G: face restoration needs GFPGAN or CodeFormer models, which this program does not "
        "ship and cannot download; !fix FILE --outcrop SIDE PIXELS is the post-processing it does",
    ),
    Case(
        "embiggen",
        "fix",
        f"!fix {D}/good.png --embiggen 2",
        "--embiggen: embiggen needs the Real-ESRGAN upscaler, which this program does not "
        "ship and cannot download; for a larger picture use -U 2 or -U 4, -W/-H --hires_fix, "
        "or !fix FILE --outcrop SIDE PIXELS",
    ),
    # -- LoRAs named in the prompt --------------------------------------------------------------
    Case(
        "LoRA not in the folder",
        "lora",
        "a cat withLora(ink, 0.8) -s 1",
        "LoRA ink: not found: …/loras does not exist; put LoRA files there, launch with "
        "--lora_dir DIR, or give the file's path",
    ),
    Case(
        "LoRA weight not a number",
        "lora",
        "a cat <lora:ink:strong> -s 1",
        "prompt: <lora:ink:strong> takes one number as its weight (1 = full strength), e.g. "
        "<lora:name:0.8>",
    ),
    Case(
        "LoRA without a name",
        "lora",
        "a cat withLora() -s 1",
        "prompt: withLora() names no LoRA; write withLora(name, 0.8)",
    ),
    Case(
        "LoRA file that does not exist",
        "lora",
        f"a cat withLora({D}/nowhere.safetensors) -s 1",
        "LoRA …/nowhere.safetensors: no such file; give a .safetensors file or a LoRA name",
    ),
    Case(
        "pickled LoRA",
        "lora",
        f"a cat withLora({D}/old-lora.pt) -s 1",
        "LoRA …/old-lora.pt: only .safetensors LoRA files are read (other "
        "formats are pickles, which can run code); convert it to .safetensors",
    ),
    Case(
        "LoRA for SDXL on an SD 1.x model",
        "lora",
        f"a cat withLora({D}/xl-lora.safetensors) -s 1",
        "LoRA …/xl-lora.safetensors: changes text_encoder_2, which model … (sd-1) does not "
        "have; it was made for another kind of model",
    ),
    Case(
        "LyCORIS LoHa file",
        "lora",
        f"a cat withLora({D}/loha.safetensors) -s 1",
        "LoRA …/loha.safetensors: is a LoHa network, not a LoRA; only LoRA files "
        "(lora_down/lora_up or lora_A/lora_B weights) can be merged",
    ),
    Case(
        "truncated LoRA file",
        "lora",
        f"a cat withLora({D}/cut-lora.safetensors) -s 1",
        "LoRA …/cut-lora.safetensors: cannot be read: …",
    ),
    # -- the SDXL refiner --------------------------------------------------------------------------
    Case(
        "refiner on a model that is not SDXL",
        "refiner",
        f"a cat --refiner {D} -s 1",
        "--refiner: model … is sd-1; a refiner takes over from an SDXL base model (!switch to one)",
    ),
    Case(
        "refiner start not inside 0 to 1",
        "refiner",
        f"a cat --refiner {D} --refiner_start 1 -s 1",
        "--refiner_start: 1 must be between 0 and 1 (not either): the base runs that fraction "
        "of the schedule, the refiner the rest; e.g. 0.8",
    ),
    # -- ControlNets ------------------------------------------------------------------------------
    Case(
        "ControlNet not in the folder",
        "controlnet",
        f"a cat --controlnet canny --control_image {D}/good.png -s 1",
        "--controlnet: canny: not found: …/controlnets does not exist; put ControlNets there, "
        "launch with --controlnet_dir DIR, or give a path or a hub id",
    ),
    Case(
        "ControlNet hub id not downloaded",
        "controlnet",
        f"a cat --controlnet lllyasviel/control_v11p_sd15_canny --control_image {D}/good.png -s 1",
        "--controlnet: lllyasviel/control_v11p_sd15_canny is not in the local Hugging Face cache "
        "(…); download it once with `hf download lllyasviel/control_v11p_sd15_canny` or launch "
        "with --allow-downloads",
    ),
    Case(
        "single file that is no ControlNet",
        "controlnet",
        f"a cat --controlnet {D}/xl-lora.safetensors --control_image {D}/good.png -s 1",
        "ControlNet …/xl-lora.safetensors: holds no ControlNet (no input_hint_block or "
        "controlnet_cond_embedding layers); give a ControlNet file or folder",
    ),
    Case(
        "pickled ControlNet file",
        "controlnet",
        f"a cat --controlnet {D}/old-lora.pt --control_image {D}/good.png -s 1",
        "--controlnet: …/old-lora.pt is a pickle, which can run code; give a .safetensors "
        "ControlNet (convert it) or a diffusers folder",
    ),
    Case(
        "ControlNet with pickled weights only",
        "controlnet",
        f"a cat --controlnet {D}/pickled-net --control_image {D}/good.png -s 1",
        "--controlnet: …/pickled-net has only diffusion_pytorch_model.bin (a pickle, which can "
        "run code); it needs diffusion_pytorch_model.safetensors (the hub's ControlNet repos "
        "have it)",
    ),
    Case(
        "folder that is no ControlNet",
        "controlnet",
        f"a cat --controlnet {D}/unet-folder --control_image {D}/good.png -s 1",
        "ControlNet …/unet-folder: holds a UNet2DConditionModel, not a ControlNetModel; give the "
        "folder of a ControlNet (diffusers format)",
    ),
    Case(
        "ControlNet for SD 2.x on an SD 1.x model",
        "controlnet",
        f"a cat --controlnet {D}/sd2-net --control_image {D}/good.png -s 1",
        "ControlNet …/sd2-net: made for SD 2.x models (text width 1024), not for …'s 32; model … "
        "(sd-1) needs one made for it",
    ),
    Case(
        "truncated ControlNet weights",
        "controlnet",
        f"a cat --controlnet {D}/cut-net --control_image {D}/good.png -s 1",
        "ControlNet …/cut-net: cannot be loaded (…); download it again",
    ),
    Case(
        "control image that is not an image",
        "controlnet",
        f"a cat --controlnet {D}/cut-net --control_image {D}/text.png -s 1",
        "control image …/text.png: not an image PIL can read; use a PNG, JPEG, WebP or GIF file",
    ),
    Case(
        "ControlNet acting on no step",
        "controlnet",
        f"a cat --controlnet {D}/cut-net --control_image {D}/good.png --control_start 0.5 "
        "--control_end 0.5 -s 1",
        "--control_start: 0.5 must be less than --control_end 0.5: the ControlNet would act on "
        "no step",
    ),
    Case(
        "second ControlNet unit without its image",
        "controlnet",
        f"a cat --controlnet {D}/cut-net --control_image {D}/good.png --controlnet canny -s 1",
        "--controlnet (unit 2: --controlnet canny): needs --control_image FILE: the image it "
        "follows (an edge map, a depth map...)",
    ),
    # -- image prompts (IP-Adapter) ---------------------------------------------------------------
    Case(
        "IP-Adapter not in the folder",
        "ip_adapter",
        f"a cat --ip_adapter ip-adapter_sd15 --ip_image {D}/good.png -s 1",
        "--ip_adapter: ip-adapter_sd15: not found: …/ip_adapters does not exist; put IP-Adapters "
        "there with their image_encoder folder (h94/IP-Adapter's models/ as it is), launch with "
        "--ip_adapter_dir DIR, or give the file's path",
    ),
    Case(
        "pickled IP-Adapter file",
        "ip_adapter",
        f"a cat --ip_adapter {D}/old-lora.pt --ip_image {D}/good.png -s 1",
        "--ip_adapter: …/old-lora.pt is a pickle, which can run code; give its .safetensors file "
        "(h94/IP-Adapter ships both)",
    ),
    Case(
        "IP-Adapter without its image encoder",
        "ip_adapter",
        f"a cat --ip_adapter {D}/xl-lora.safetensors --ip_image {D}/good.png -s 1",
        "--ip_adapter: …/xl-lora.safetensors has no image_encoder folder beside it; copy "
        "h94/IP-Adapter's models/image_encoder there (sdxl_models/image_encoder for "
        "ip-adapter_sdxl)",
    ),
    Case(
        "image prompt without an IP-Adapter",
        "ip_adapter",
        f"a cat --ip_image {D}/good.png -s 1",
        "--ip_image: needs --ip_adapter NAME: the IP-Adapter that reads it",
    ),
    Case(
        "image prompt weight out of range",
        "ip_adapter",
        f"a cat --ip_adapter ip-adapter_sd15 --ip_image {D}/good.png --ip_weight 2.5 -s 1",
        "--ip_weight: 2.5 is not in [0, 2]",
    ),
    # -- upscalers (-U) ---------------------------------------------------------------------------
    Case(
        "upscale factor that is not one",
        "upscale",
        "a cat -U 3 -s 1",
        "-U/--upscale: 3 is not an upscale factor; use 2, 4",
    ),
    Case(
        "hub upscaler not downloaded",
        "upscale",
        "a cat -U 4 -s 1",
        "-U 4: stabilityai/stable-diffusion-x4-upscaler is not in the local Hugging Face cache "
        "(…); download it once with `hf download stabilityai/stable-diffusion-x4-upscaler` or "
        "launch with --allow-downloads",
    ),
    Case(
        "upscaler not in the folder",
        "upscale",
        "a cat -U 2 --upscaler x2 -s 1",
        "--upscaler: x2: not found: …/upscalers does not exist; put upscaler folders there, "
        "launch with --upscaler_dir DIR, or give a path or a hub id",
    ),
    Case(
        "upscaler of the other factor",
        "upscale",
        f"a cat -U 4 --upscaler {D}/x2-upscaler -s 1",
        "--upscaler: …/x2-upscaler enlarges 2x, not 4x; use -U 2, or an upscaler that makes 4x",
    ),
    Case(
        "a model folder as the upscaler",
        "upscale",
        f"a cat -U 2 --upscaler {D}/sd-pipeline -s 1",
        "upscaler …/sd-pipeline: is a StableDiffusionPipeline, not an upscaler (a "
        "StableDiffusionLatentUpscalePipeline or StableDiffusionUpscalePipeline folder, as "
        "stabilityai/sd-x2-latent-upscaler and stabilityai/stable-diffusion-x4-upscaler)",
    ),
    Case(
        "a folder that is no pipeline",
        "upscale",
        f"a cat -U 2 --upscaler {D}/unet-folder -s 1",
        "upscaler …/unet-folder: has no model_index.json; give a diffusers folder (hf download "
        "stabilityai/sd-x2-latent-upscaler saves one)",
    ),
    Case(
        "--upscaler without -U",
        "upscale",
        "a cat --upscaler x2 -s 1",
        "--upscaler: only means something with -U FACTOR, e.g. -U 4 --upscaler NAME",
    ),
    # -- sweeps (invoke/line/sweep.py) ---------------------------------------------------------
    Case(
        "seed list with a bad seed",
        "parser",
        "a cat -S 1,-2",
        "-S/--seed: 1,-2 has -2, not a seed in 0..4294967295",
    ),
    Case(
        "sweep group never closed",
        "parser",
        "a {red|blue cat",
        "prompt: a '{' is never closed; close it with '}' (e.g. {red|blue}) "
        "or write \\{ for a literal brace",
    ),
    Case(
        "sweep past the bound",
        "parser",
        "a {red|blue} cat -S 1,2,3 -n 200",
        "this line expands to 1200 pictures, more than the 1000 one line may make; "
        "split it into several lines",
    ),
    Case(
        "glob matching nothing",
        "image",
        f"a cat -I '{D}/*.webp'",
        f"-I/--init_img: '{D}/*.webp' matches no file; check the folder and the pattern",
    ),
)


@dataclass(frozen=True)
class ModelCase:
    """`--model <folder>` that cannot be used; a batch of two lines. `status` is the exit status:
    2 when the launcher refuses it at once, 1 when every line fails on loading it."""

    id: str
    model: str  # a name made by the `models` fixture
    message: str
    status: int = 1
    xfail: str = ""


M = "{m}"  # the folder of broken models

MODEL_CASES: tuple[ModelCase, ...] = (
    ModelCase(
        "missing folder",
        "missing",
        f"invoke: --model: {M}/missing is neither a model in models.yaml (…) nor a path to a "
        "diffusers folder or a .safetensors/.ckpt file",
        status=2,
    ),
    ModelCase(
        "empty folder",
        "empty",
        f"model {M}/empty: not a diffusers model folder (no model_index.json); it needs "
        "model_index.json and unet, vae, text_encoder, tokenizer, scheduler/",
    ),
    ModelCase(
        "not a diffusers folder",
        "photos",
        f"model {M}/photos: not a diffusers model folder (no model_index.json); it needs "
        "model_index.json and unet, vae, text_encoder, tokenizer, scheduler/",
    ),
    ModelCase(
        "wrong family (Flux)",
        "flux",
        f"model {M}/flux: a FluxPipeline is not supported; only Stable Diffusion 1.x/2.x "
        "(StableDiffusionPipeline), … folders are",
    ),
    ModelCase(
        "unreadable model_index.json",
        "bad-index",
        f"model {M}/bad-index: model_index.json is unreadable (…)",
    ),
    ModelCase(
        "weights file missing",
        "no-weights",
        f"model {M}/no-weights: cannot load unet/ (…diffusion_pytorch_model.safetensors…)",
    ),
    ModelCase(
        "corrupt safetensors header",
        "corrupt",
        f"model {M}/corrupt: unet/diffusion_pytorch_model.safetensors is damaged (…); "
        "download or convert the model again",
    ),
    ModelCase(
        "pickle checkpoint",
        "model.ckpt",
        f"model {M}/model.ckpt: .ckpt is a pickle file, which can run code when loaded; pickle "
        "files need --allow-pickle (then only tensors are read), or convert it to .safetensors",
    ),
    ModelCase(
        "corrupt single-file checkpoint",
        "model.safetensors",
        f"model {M}/model.safetensors: is damaged (…); download or convert the model again",
    ),
)


# -- test files -----------------------------------------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _with_text(path: Path, **chunks: str) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    Image.new("RGB", (8, 8), "gray").save(path, pnginfo=info)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np
    from PIL import Image

    d = tmp_path_factory.mktemp("bad-input")
    Image.new("RGB", (64, 64), "red").save(d / "good.png")
    data = (d / "good.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "text.png").write_text("not an image\n")
    (d / "folder.png").mkdir()
    Image.new("RGB", (1, 1)).save(d / "1x1.png")
    Image.new("RGB", (4, 4)).save(d / "4x4.png")
    # A decompression bomb costs nothing to write: only its header claims 20000×20000.
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    (d / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "blue")]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(d / "16bit.png")
    Image.new("CMYK", (64, 64), (0, 100, 0, 0)).save(d / "cmyk.jpg")
    Image.new("L", (32, 48), 255).save(d / "mask-32x48.png")
    Image.new("RGB", (8, 8)).save(d / "plain.png")
    _with_text(d / "bad-json.png", **{"sd-metadata": "{not json"})
    _with_text(d / "json-shape.png", **{"sd-metadata": '{"image": 5}'})
    _with_text(d / "huge-chunk.png", Dream="a" * 200_000)
    _with_text(d / "shell-tail.png", Dream=f'"x"; touch {d}/PWNED; $(touch {d}/PWNED) -s 1')
    _with_text(d / "shell-prompt.png", Dream=f'"$(touch {d}/PWNED); `touch {d}/PWNED`" -s 1 -S 3')
    _with_text(d / "escape.png", Dream='"a\x1b[2Jcat" -s 1')
    import torch
    from safetensors.torch import save_file

    (d / "old-lora.pt").write_bytes(b"PK\x03\x04 a pickle, never unpickled")
    te2 = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
    pair = {
        f"{te2}.lora_down.weight": torch.zeros(4, 1280),
        f"{te2}.lora_up.weight": torch.zeros(1280, 4),
    }
    save_file(pair, str(d / "xl-lora.safetensors"))
    save_file({"lora_unet_x.hada_w1_a": torch.zeros(2, 2)}, str(d / "loha.safetensors"))
    data = (d / "xl-lora.safetensors").read_bytes()
    (d / "cut-lora.safetensors").write_bytes(data[: len(data) // 2])
    # ControlNet folders: what the config says is all that is read before each is refused.
    net = {
        "_class_name": "ControlNetModel",
        "cross_attention_dim": 32,
        "block_out_channels": [32, 64],
    }
    for name, config, weights, content in (
        ("pickled-net", net, "diffusion_pytorch_model.bin", b"PK\x03\x04 never unpickled"),
        ("unet-folder", {"_class_name": "UNet2DConditionModel"}, "", b""),
        ("sd2-net", {**net, "cross_attention_dim": 1024}, "", b""),
        ("cut-net", net, "", data[: len(data) // 2]),
    ):
        (d / name).mkdir()
        (d / name / "config.json").write_text(json.dumps(config))
        (d / name / (weights or "diffusion_pytorch_model.safetensors")).write_bytes(content)
    # Upscaler folders: their config files are all that is read before each is refused.
    for name, kind in (
        ("x2-upscaler", "StableDiffusionLatentUpscalePipeline"),
        ("sd-pipeline", "StableDiffusionPipeline"),
    ):
        for part, config in (("unet", {"down_block_types": ["KDownBlock2D"] * 4}),
                             ("vae", {"block_out_channels": [128] * 4})):  # fmt: skip
            (d / name / part).mkdir(parents=True)
            (d / name / part / "config.json").write_text(json.dumps(config))
        (d / name / "model_index.json").write_text(json.dumps({"_class_name": kind}))
    return d


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    m = tmp_path_factory.mktemp("models")
    (m / "empty").mkdir()
    (m / "photos").mkdir()
    (m / "photos" / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    for name in ("flux", "bad-index", "no-weights", "corrupt"):
        shutil.copytree(tiny_model_dir, m / name)
    index = json.loads((m / "flux" / "model_index.json").read_text())
    index["_class_name"] = "FluxPipeline"
    (m / "flux" / "model_index.json").write_text(json.dumps(index))
    (m / "bad-index" / "model_index.json").write_text("{not json")
    (m / "no-weights" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    # A safetensors file starts with an 8-byte header length: make it absurd.
    weights = m / "corrupt" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])
    (m / "model.ckpt").write_bytes(b"PK\x03\x04 a pickle, never unpickled")
    (m / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    return m


# -- running the front end ------------------------------------------------------------------------


@dataclass
class Ran:
    status: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        # Progress bars end in \r, not \n: what follows one is a line of its own on a terminal.
        return [line.strip() for line in re.split(r"[\r\n]", self.err) if line.strip()]


def run_cli(args: list[str], stdin: str | bytes | None = None) -> Ran:
    from click.testing import CliRunner

    from invoke.__main__ import cli

    result = CliRunner().invoke(cli, args, input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback would have reached the user
    return Ran(result.exit_code, result.stdout, result.stderr)


def pattern(message: str) -> re.Pattern[str]:
    """An expected message as a regex: literal text, `…` = anything."""
    return re.compile(".*".join(re.escape(part) for part in message.split("…")), re.DOTALL)


def assert_no_traceback(ran: Ran) -> None:
    for text in (ran.out, ran.err):
        assert "Traceback" not in text
        assert "unexpected error" not in text  # our own bug reached the user as one line


def _fill(value: str | bytes, **names: Path) -> str | bytes:
    if isinstance(value, bytes):
        return value
    for key, path in names.items():
        value = value.replace("{" + key + "}", str(path))
    return value


def _params(cases):
    return [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)])
        if c.xfail
        else pytest.param(c, id=c.id)
        for c in cases
    ]


@pytest.mark.parametrize("case", _params(CATALOGUE))
def test_bad_input_is_one_line_and_the_batch_goes_on(
    case: Case, files: Path, isolated: Path, tiny_model_dir: Path
) -> None:
    line = _fill(case.line, d=files)
    good = "\n" + GOOD_LINE + "\n"
    stdin = line + good.encode() if isinstance(line, bytes) else line + good
    outdir = isolated / "out"
    ran = run_cli(["--model", str(tiny_model_dir), "--outdir", str(outdir)], stdin)
    assert_no_traceback(ran)
    expected = pattern(_fill(case.message, d=files))
    lines = ran.err_lines
    if case.outcome == "error":
        assert ran.status == 1, ran.err
        reports = [line for line in lines if line.startswith("line 1:")]
        assert len(reports) == 1, lines
        assert expected.fullmatch(reports[0].removeprefix("line 1: ")), reports[0]
        assert lines[-1] == "2 lines run, 1 failed (line 1)"
    else:
        assert ran.status == 0, ran.err
        if case.outcome == "note":
            assert any(expected.fullmatch(line.removeprefix(">> ")) for line in lines), lines
            assert len(list(outdir.glob("000001.*.png"))) == 1
        else:
            assert any(expected.fullmatch(line) for line in ran.out.splitlines()), ran.out
        assert lines[-1] == "2 lines run, 0 failed"
    # The good line after it still made its image (no prefix used up by a failing line).
    assert len(list(outdir.glob("*.7.png"))) == 1
    assert not list(files.glob("PWNED*"))  # a fetched command is text, never run
    assert not list(outdir.glob(".tmp-*"))


@pytest.mark.parametrize("case", _params(MODEL_CASES))
def test_unusable_model_is_one_line(case: ModelCase, models: Path, isolated: Path) -> None:
    ran = run_cli(
        ["--model", str(models / case.model), "--outdir", str(isolated / "out")],
        "a cat -s 1\na dog -s 1\n",
    )
    assert_no_traceback(ran)
    assert ran.status == case.status, ran.err
    expected = pattern(_fill(case.message, m=models))
    lines = ran.err_lines
    if case.status == 2:  # refused at launch: nothing else said
        assert len(lines) == 1 and expected.fullmatch(lines[0]), lines
    else:  # each line says why it cannot run; the batch still ends with its summary
        for n in (1, 2):
            report = [line for line in lines if line.startswith(f"line {n}:")]
            assert len(report) == 1, lines
            assert expected.fullmatch(report[0].removeprefix(f"line {n}: ")), report[0]
        assert lines[-1] == "2 lines run, 2 failed (lines 1, 2)"
    assert not list((isolated / "out").glob("*.png"))


def test_the_shell_survives_the_catalogue(
    files: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The image and !fetch errors typed into one interactive shell, then a good line: each
    prints its one line and the shell goes on. (Parser errors never leave the edit buffer: the
    validator shows them inline; test_shell.py covers that.)"""
    from prompt_toolkit.document import Document
    from prompt_toolkit.validation import ValidationError

    from invoke.config.settings import Settings
    from invoke.session import Session
    from invoke.shell.report import TerminalReporter
    from invoke.shell.validator import LineValidator
    from tests.helpers import type_into_shell

    def typed_through(case: Case) -> bool:
        # a parse error in a `!fix` line stays in the edit buffer too (flagged inline)
        try:
            LineValidator().validate(Document(str(_fill(case.line, d=files))))
        except ValidationError:
            return False
        return True

    cases = [
        c
        for c in CATALOGUE
        if c.group != "parser" and c.outcome == "error" and not c.xfail and typed_through(c)
    ]
    groups = {"image", "fetch", "fix", "lora", "controlnet", "ip_adapter", "refiner", "upscale"}
    assert {c.group for c in cases} == groups
    keys = "".join(_fill(c.line, d=files) + "\r" for c in cases) + GOOD_LINE + "\r\x04"
    outdir = tmp_path / "out"
    session = Session(
        Settings(outdir=outdir, model=str(tiny_model_dir)),
        reporter=TerminalReporter(out=sys.stdout),
    )
    printed = type_into_shell(session, keys)
    assert len(printed) == len(cases), printed
    for case, line in zip(cases, printed, strict=True):
        assert pattern(_fill(case.message, d=files)).fullmatch(line), (case.id, line)
    assert len(list(outdir.glob("000001.7.png"))) == 1


def test_own_catalogue_tables_have_40_cases_every_group_and_unique_ids() -> None:
    assert len(CATALOGUE) + len(MODEL_CASES) >= 40
    groups = {
        "parser", "image", "fetch", "fix", "lora", "controlnet", "ip_adapter", "refiner", "upscale"
    }  # fmt: skip
    assert {c.group for c in CATALOGUE} == groups
    assert len({c.id for c in CATALOGUE} | {c.id for c in MODEL_CASES}) == len(CATALOGUE) + len(
        MODEL_CASES
    )


def test_docs_table_is_the_catalogue() -> None:
    assert (REPO / "docs" / "bad-input.md").read_text(encoding="utf-8") == markdown()


# -- a batch of 10 good and 10 bad lines ----------------------------------------------------------


def test_ten_good_and_ten_bad_lines(isolated: Path, tiny_model_dir: Path) -> None:
    bad = [
        "a cat -s 0",
        "a cat --bogus",
        '"a cat',
        "a cat -C nan",
        "a cat -W 99999",
        "a cat -S 4294967296",
        "a cat -f 1.5",
        "a cat -I missing.png",
        "!fetch missing.png",
        "a cat -n 0",
    ]
    lines, bad_numbers = ["# ten good, ten bad, in turn"], []
    for n in range(10):
        lines.append(f"good {n} -s 1 -S {n}")
        lines.append(bad[n])
        bad_numbers.append(len(lines))
    ran = run_cli(["--model", str(tiny_model_dir), "--outdir", "out"], "\n".join(lines) + "\n")
    assert_no_traceback(ran)
    assert ran.status == 1
    assert len(list((isolated / "out").glob("*.png"))) == 10
    numbers = ", ".join(map(str, bad_numbers))
    assert ran.err_lines[-1] == f"20 lines run, 10 failed (lines {numbers})"
    for n in bad_numbers:
        assert sum(line.startswith(f"line {n}: ") for line in ran.err_lines) == 1


# -- untrusted names ------------------------------------------------------------------------------


def _files_outside(root: Path, outdir: Path) -> list[Path]:
    skip = (outdir, root / "config", root / "cache")
    return [
        p for p in root.rglob("*") if p.is_file() and not any(p.is_relative_to(s) for s in skip)
    ]


@pytest.mark.parametrize(
    ("launch", "line", "status", "message"),
    [
        (
            ["--fnformat", "../x{seed}.png"],
            "a -s 1 -S 1",
            2,
            "…--fnformat: ../x{seed}.png contains a /…",
        ),
        (
            ["--fnformat", "/tmp/x{seed}.png"],
            "a -s 1 -S 1",
            2,
            "…--fnformat: /tmp/x{seed}.png contains a /…",
        ),
        (["--fnformat", "x\0.png"], "a -s 1 -S 1", 2, "…--fnformat: x\\x00.png contains a NUL…"),
        (
            [],
            "a -s 1 -S 1 --fnformat ..{seed}.png",
            1,
            "line 1: --fnformat: ..{seed}.png contains '..'…",
        ),
        (
            [],
            "a -s 1 -S 1 --fnformat '..\\x.png'",
            1,
            "line 1: --fnformat: ..\\x.png contains a \\…",
        ),
        (
            [],
            "a -s 1 -S 1 --fnformat '{prefix:/>9}.png'",
            1,
            "line 1: --fnformat: {prefix:/>9}.png contains a /…",
        ),
        (
            [],
            "a -s 1 -S 1 -o 'x\0y'",
            1,
            "line 1: line: has a control character U+0000 at column 18",
        ),
    ],
    ids=[
        "launch ../",
        "launch absolute",
        "launch NUL",
        "line ..",
        "line backslash",
        "line format spec /",
        "-o NUL",
    ],
)
def test_names_that_would_escape_are_refused(
    isolated: Path, tiny_model_dir: Path, launch: list[str], line: str, status: int, message: str
) -> None:
    ran = run_cli(["--model", str(tiny_model_dir), "--outdir", "out", *launch], line + "\n")
    assert_no_traceback(ran)
    assert ran.status == status
    assert any(pattern(message).fullmatch(text) for text in ran.err_lines), ran.err_lines
    assert _files_outside(isolated, isolated / "out") == []
    assert not list(Path("/tmp").glob("x1.png"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--fnformat", "CON.png"], "_CON.png"),
        (["--fnformat", "nul.{seed}.png"], "_nul.1.png"),
        (["--fnformat", "LPT1.png"], "_LPT1.png"),
        (["--fnformat", ".{seed}.png"], "1.png"),  # no hidden files
        (["--fnformat", "x\u202egnp.{seed}.png"], "x_gnp.1.png"),  # no right-to-left override
        ([], "000001.1.png"),  # the prompt never names the file
    ],
)
def test_reserved_and_hidden_names_become_plain_files(
    isolated: Path, tiny_model_dir: Path, args: list[str], expected: str
) -> None:
    ran = run_cli(
        ["--model", str(tiny_model_dir), "--outdir", "out", *args],
        '"../../etc/passwd /tmp/x CON" -s 1 -S 1\n',
    )
    assert ran.status == 0, ran.err
    assert [p.name for p in (isolated / "out").glob("*.png")] == [expected]
    assert _files_outside(isolated, isolated / "out") == []


# -- Ctrl-C in a batch, with a real process -------------------------------------------------------

# Line 2 is slow enough (hundreds of ms a step at 256×256 on the shared CPU) to be interrupted
# mid-image; line 3 must never run.
SLOW_BATCH = "first -s 1 -S 1\nsecond -s 30 -S 2 -W 256 -H 256 -n 2\nthird -s 1 -S 3\n"


def _start_batch(
    tmp_path: Path, model: Path, *, terminal: bool = False
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """The slow batch started; its stderr goes to the file it returns, through a pseudo-terminal
    when `terminal` (a bar shows only on a terminal; read the file with _stderr_text)."""
    batch = tmp_path / "batch.txt"
    batch.write_text(SLOW_BATCH)
    outdir = tmp_path / "out"
    err = tmp_path / "stderr.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["XDG_CACHE_HOME"] = env["XDG_CONFIG_HOME"] = str(tmp_path / "home")
    command = [sys.executable, "-m", "invoke", "--model", str(model), "--outdir", str(outdir)]
    stderr = _terminal_into(err) if terminal else err.open("wb")
    process = subprocess.Popen(
        [*command, "--from_file", str(batch)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=tmp_path,
        env=env,
    )
    if terminal:
        os.close(stderr)  # the process holds it: its exit ends the copy
    # Line 1's file means the model is loaded and line 2 has begun; give it a moment to be
    # inside the sampling loop.
    deadline = time.monotonic() + 60
    while not list(outdir.glob("000001.*.png")):
        assert process.poll() is None, err.read_text()
        assert time.monotonic() < deadline, "the first image never appeared"
        time.sleep(0.05)
    time.sleep(0.5)
    return process, outdir, err


_COPIES: dict[Path, threading.Thread] = {}


def _terminal_into(path: Path) -> int:
    """A pseudo-terminal whose output a thread copies into `path`; its fd for the process."""
    import fcntl
    import pty
    import termios

    reader, writer = pty.openpty()
    # 24 rows of 200 columns: a new one has none, and a bar 0 columns wide prints nothing
    fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))

    def copy() -> None:
        with path.open("wb") as file:
            while True:
                try:
                    data = os.read(reader, 65536)
                except OSError:  # EIO: the process has closed its end
                    break
                if not data:
                    break
                file.write(data)
                file.flush()
        os.close(reader)

    _COPIES[path] = threading.Thread(target=copy, daemon=True)
    _COPIES[path].start()
    return writer


def _stderr_text(path: Path) -> str:
    """What the process wrote to stderr, all of it once it has ended."""
    if path in _COPIES:
        _COPIES[path].join(timeout=30)
    return path.read_text()


def _assert_every_file_complete(outdir: Path) -> list[str]:
    from PIL import Image

    assert not list(outdir.glob(".tmp-*"))
    names = sorted(p.name for p in outdir.glob("*.png"))
    for name in names:
        with Image.open(outdir / name) as image:
            image.load()  # raises on a truncated file
            assert "Dream" in image.text
    return names


@pytest.mark.e2e
def test_first_ctrl_c_finishes_the_image_then_stops_with_a_summary(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    process, outdir, err = _start_batch(tmp_path, tiny_model_dir)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    text = err.read_text()
    assert process.returncode == 130, text
    assert "stopping after the current image (Ctrl-C again to stop now)" in text
    summary = [line for line in re.split(r"[\r\n]", text) if line.strip()][-1]
    assert (
        summary
        == "2 lines run, 0 failed; stopped by Ctrl-C after line 2; finished images were kept"
    )
    # Line 2's first image was finished and saved; its second image and line 3 were not made.
    assert _assert_every_file_complete(outdir) == ["000001.1.png", "000002.2.png"]
    assert "Traceback" not in text
    assert len((outdir / "invoke_log.txt").read_text().splitlines()) == 2


@pytest.mark.e2e
def test_second_ctrl_c_stops_at_once(tmp_path: Path, tiny_model_dir: Path) -> None:
    process, outdir, err = _start_batch(tmp_path, tiny_model_dir, terminal=True)
    deadline = time.monotonic() + 60
    while not re.search(r" [1-9]\d*/30 \[", err.read_text()):  # line 2's bar has a pace
        assert process.poll() is None, err.read_text()
        assert time.monotonic() < deadline, "line 2 never finished a step"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    process.communicate(timeout=120)
    stopped_in = time.monotonic() - sent
    text = _stderr_text(err)
    assert process.returncode == 130, text
    summary = [line for line in re.split(r"[\r\n]", text) if line.strip()][-1]
    assert summary == "1 line run, 0 failed; stopped by Ctrl-C at line 2; finished images were kept"
    assert _assert_every_file_complete(outdir) == ["000001.1.png"]
    # "At once" means without drawing on to the end of the image: measured against the time the
    # rest of it would have taken at the process's own pace (its progress bar), so that a loaded
    # machine slows both alike. Half of it leaves room for the interpreter's exit.
    left = _seconds_left_in_image(text)
    assert stopped_in < left / 2, f"took {stopped_in:.1f}s to stop; the image had {left:.1f}s left"
    assert "Traceback" not in text


def _seconds_left_in_image(stderr: str) -> float:
    """The time line 2's image still needed when the process stopped, from the last state of its
    tqdm bar ("7/30 [00:02<00:06,  3.19step/s]", or "s/step" when slower than a step a second)."""
    bars = re.findall(r" (\d+)/30 \[[^\]]*?([\d.]+)(step/s|s/step)\]", stderr)
    assert bars, stderr
    done, pace, unit = bars[-1]
    step = 1 / float(pace) if unit == "step/s" else float(pace)
    return (30 - int(done)) * step


# -- the docs table -------------------------------------------------------------------------------


def _cell(value: str | bytes) -> str:
    if isinstance(value, bytes):
        text = "bytes " + repr(value)
    else:
        text = value if len(value) < 200 else f"{value[:12]}… ({len(value)} characters)"
        text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    text = text.replace("{d}/", "").replace("{m}/", "").replace("{d}", "DIR")
    return "`" + text.replace("|", "\\|").replace("`", "ˋ") + "`"


def markdown() -> str:
    """docs/bad-input.md: the catalogue as tables."""
    out = [
        "# Bad input: what the user sees",
        "",
        "Generated from `CATALOGUE` and `MODEL_CASES` in `tests/test_hardening.py` "
        "(`.venv/bin/python tests/test_hardening.py > docs/bad-input.md`); a test checks that "
        "this file matches. Each bad line runs in a batch followed by a good line: the message is "
        "printed as `line N: <message>`, the good line still makes its image, and the batch "
        "exits with status 1. `…` stands for text quoted from a library (e.g. PIL's or JSON's "
        "own words). File names are relative to the test's folder.",
        "",
        "Outcomes: **error** = one line on stderr, the line is skipped; **note** = usable with a "
        "`>>` note, the image is made; **shown** = the line succeeds and prints this (a fetched "
        "command is printed, never executed). Cases marked *xfail* fail today; the reason says "
        "what must change.",
        "",
    ]
    titles = {
        "parser": "The line parser",
        "image": "Init images and masks",
        "fetch": "`!fetch`",
        "fix": "`!fix`",
        "lora": "LoRAs in the prompt",
        "controlnet": "ControlNets",
        "ip_adapter": "Image prompts (`--ip_adapter`)",
        "refiner": "The SDXL refiner (`--refiner`)",
        "upscale": "Upscalers (`-U`)",
    }
    number = 0
    for group, title in titles.items():
        out += [
            f"## {title}",
            "",
            "| # | case | input line | outcome | message |",
            "|---|---|---|---|---|",
        ]
        for case in CATALOGUE:
            if case.group != group:
                continue
            number += 1
            outcome = case.outcome + (" (*xfail*: " + case.xfail + ")" if case.xfail else "")
            out.append(
                f"| {number} | {case.id} | {_cell(case.line)} | {outcome} | {_cell(case.message)} |"
            )
        out.append("")
    out += [
        "## Models (`--model FOLDER`)",
        "",
        "Status 2: refused at launch. Status 1: each line of the batch reports the message.",
        "",
        "| # | case | model | status | message |",
        "|---|---|---|---|---|",
    ]
    for case in MODEL_CASES:
        number += 1
        status = str(case.status) + (" (*xfail*: " + case.xfail + ")" if case.xfail else "")
        out.append(
            f"| {number} | {case.id} | {_cell(case.model)} | {status} | {_cell(case.message)} |"
        )
    out.append("")
    out += _hostile_markdown(number)
    return "\n".join(out)


def _hostile_markdown(number: int) -> list[str]:
    """The round-two cases (tests/hostile/), one table per kind."""
    from tests.hostile import KINDS
    from tests.test_hostile import HOSTILE

    out = [
        "# Round two: hostile input beyond one line",
        "",
        "Generated from `tests/hostile/` (run by `tests/test_hostile.py`). Each case builds its "
        "files in a fresh folder `DIR` (the outdir is `DIR/out`) and runs `invoke --model TINY "
        "--outdir DIR/out ...`; the message is one line (a `line N: ` or `>> ` prefix left off), "
        "and `status` is the exit status.",
        "",
    ]
    for kind, title in KINDS.items():
        out += [f"## {title}", "", "| # | case | what the user does | status | message |"]
        out.append("|---|---|---|---|---|")
        for case in HOSTILE:
            if case.kind != kind:
                continue
            number += 1
            status = f"{case.status} ({case.outcome})"
            status += " (*xfail*: " + case.xfail + ")" if case.xfail else ""
            message = _cell(case.message).replace("{d}", "DIR")
            out.append(f"| {number} | {case.id} | {case.does} | {status} | {message} |")
        out.append("")
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # run as a script: `tests` is a package of the checkout
    sys.stdout.write(markdown())


def test_a_broken_model_is_tried_once_until_its_files_change(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 100-line batch on a model with a missing weights file: every line says why, but the
    # model is not loaded again (and fails again) for each line; once the file is back, it loads.
    import invoke.backend.loading as models_module
    from invoke.config.settings import Settings
    from invoke.errors import ModelError
    from invoke.line.parse import parse_line
    from invoke.session import Session
    from invoke.shell.report import TerminalReporter

    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    kept = tmp_path / "weights.safetensors"
    weights.rename(kept)
    tries: list[Path] = []
    real_load = models_module.load_model

    def counting_load(path: Path, *args: object, **kwargs: object) -> object:
        tries.append(Path(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(models_module, "load_model", counting_load)
    session = Session(
        Settings(outdir=tmp_path / "out", model=str(broken)),
        reporter=TerminalReporter(progress=False),
    )
    request = parse_line("a cat -s 1 -S 3")
    errors = []
    for _ in range(3):
        with pytest.raises(ModelError) as caught:
            session.generate(request)
        errors.append(str(caught.value))
    assert len(tries) == 1 and len(set(errors)) == 1
    assert "cannot load unet/" in errors[0]
    kept.rename(weights)  # the user puts the file back: the next line loads and draws
    assert len(session.generate(request)) == 1 and len(tries) == 2
