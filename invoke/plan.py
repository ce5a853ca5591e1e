"""One resolved command line -> the passes that make its pictures. Pure: no model, no files, no
printing; what it needs from the session (the seeds and files made so far) comes in as values.

A pass is one backend job: one or more pictures drawn together, each with its own noise and the
per-image request that remakes it alone. The rules that live here:
- `-n N`: picture k's seed is `derive_seed(base, k)`, picture 0's is the base seed itself;
- `-v AMOUNT`: every picture is the base seed's noise slerped toward its own seed by AMOUNT;
- `-V SEED:W,...`: a chain of such slerps, before any -v (on the first picture only, without -v);
- `-I FILE -v AMOUNT -n N`: InvokeAI's img2img feedback loop, where pass k+1 starts from the
  picture pass k made (`FromPass(k)`), so its passes run one after another;
- `-S -N` and `-I -1`: the seed of the picture N back and the last file made.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from invoke.backend.job import Noise, hires_first_pass, img2img_steps
from invoke.errors import InvokeError
from invoke.line.request import Request
from invoke.line.switches import Variation

# Images per UNet batch for `-n` on CUDA: big enough to pay, small enough to interrupt. Elsewhere
# batching buys little, and one image at a time keeps every printed command an exact remake (a
# batch's arithmetic differs from a single image's in the last bits).
CUDA_BATCH = 8
SEED_LIMIT = 2**32


@dataclass(frozen=True)
class FromPass:
    """An init image that does not exist yet: the picture made by pass `index` of this line."""

    index: int


@dataclass(frozen=True)
class Pass:
    """One backend job's pictures: their noises and, for each, the request that remakes it.

    When `init` is a FromPass, the requests' init_img is filled in once that picture is saved
    (`with_init`)."""

    noises: tuple[Noise, ...]
    requests: tuple[Request, ...]
    init: Path | FromPass | None

    def with_init(self, path: Path) -> Pass:
        """This pass with its init image known."""
        requests = tuple(replace(r, init_img=str(path)) for r in self.requests)
        return replace(self, requests=requests, init=path)


def derive_seed(base: int, k: int) -> int:
    """Image k's seed in a command: the base for k = 0, then a fixed function of (base, k),
    so `-S 42 -n 3` makes the same three images every time."""
    if k == 0:
        return base
    return random.Random(base * 1_000_003 + k).randrange(SEED_LIMIT)


def base_seed(request: Request, seeds: Sequence[int], fresh: int) -> int:
    """The line's seed: -S as given, -S -N the seed of the picture N back in `seeds` (this
    session's, oldest first), no -S the `fresh` random seed."""
    if request.seed is None:
        return fresh
    if request.seed >= 0:
        return request.seed
    back = -request.seed
    if back > len(seeds):
        raise InvokeError(
            f"-S/--seed: {request.seed} means the seed of the image {back} back, but this "
            f"session has made {len(seeds)}; give a seed 0..{SEED_LIMIT - 1}"
        )
    return seeds[-back]


def previous_file(switch: str, files: Sequence[Path]) -> Path:
    """An image switch's -1: the last picture this session wrote."""
    if not files:
        raise InvokeError(f"{switch}: -1 means the previous output, but none exists yet")
    return files[-1]


def batch_size(device_type: str) -> int:
    """Pictures per job for `-n`: CUDA_BATCH on CUDA, one elsewhere."""
    return CUDA_BATCH if device_type == "cuda" else 1


def plan(request: Request, init: Path | None, batch: int = 1) -> tuple[Pass, ...]:
    """The passes of a resolved line whose seed is set (base_seed) and whose init image, if any,
    is the file `init`."""
    count = request.iterations or 1
    base = request.seed
    assert base is not None, "plan() takes a request whose seed is resolved"
    chain = tuple((v.seed, v.weight) for v in request.with_variations)
    amount = request.variation_amount or 0.0
    if amount > 0 and init is not None:
        # The InvokeAI img2img guide's loop: output k is the init image of pass k+1, each
        # pass with variation noise around the base seed. Each file names its own init.
        passes = []
        for k in range(count):
            noise = Noise(base, (*chain, (derive_seed(base, k + 1), amount)))
            source = init if k == 0 else FromPass(k - 1)
            made = image_request(request, noise, init if k == 0 else None)
            passes.append(Pass((noise,), (made,), source))
        return tuple(passes)
    if amount > 0:
        noises = [Noise(base, (*chain, (derive_seed(base, k + 1), amount))) for k in range(count)]
    else:
        noises = [Noise(derive_seed(base, k), chain if k == 0 else ()) for k in range(count)]
    passes = []
    for start in range(0, count, batch):
        group = tuple(noises[start : start + batch])
        requests = tuple(image_request(request, n, init) for n in group)
        passes.append(Pass(group, requests, init))
    return tuple(passes)


def image_request(request: Request, noise: Noise, init: Path | None) -> Request:
    """The per-image request: exactly what remakes this one image, nothing about outputs."""
    return replace(
        request,
        seed=noise.seed,
        with_variations=tuple(Variation(s, w) for s, w in noise.variations),
        init_img=str(init) if init is not None else None,
        iterations=None,
        variation_amount=None,
        grid=False,
        outdir=None,
        log_tokenization=False,
        save_intermediates=None,
        intermediates=None,
        fnformat=None,
        png_compression=None,
    )


def first_pass(request: Request, native: tuple[int, int], multiple: int) -> tuple[int, int] | None:
    """--hires_fix's first-pass size against the model's native size (models.yaml's
    width/height, else the model's own: the size -W/-H default to); None for one pass."""
    if not request.hires_fix or request.init_img is not None:
        return None
    assert request.width and request.height
    return hires_first_pass(request.width, request.height, native, multiple)


def hires_note(request: Request, native: tuple[int, int], multiple: int) -> str:
    """What --hires_fix will do with this line, in words."""
    assert request.width and request.height and request.steps
    first = first_pass(request, native, multiple)
    if first is None:
        return (
            f"hires_fix: {request.width}x{request.height} is not larger than the model's "
            f"native {native[0]}x{native[1]}; one pass, as without --hires_fix"
        )
    strength = request.strength if request.strength is not None else 0.75
    taken = img2img_steps(request.steps, strength)
    return (
        f"hires_fix: {first[0]}x{first[1]} first, then its latents upscaled to "
        f"{request.width}x{request.height} and redrawn at strength {strength:g} "
        f"({taken} of {request.steps} steps)"
    )
