"""The request: one command line as a frozen value, and its canonical text.

`parse(req.to_command()) == req` holds for every valid request, so the canonical line that is
printed, logged and stored in each PNG is also the line that remakes the image.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLERS: tuple[str, ...] = (
    "ddim",
    "plms",
    "k_lms",
    "k_euler",
    "k_euler_a",
    "k_heun",
    "k_dpm_2",
    "k_dpm_2_a",
    "k_dpmpp_2",
    "k_dpmpp_2_a",
)

INTERMEDIATE_KINDS: tuple[str, ...] = ("preview", "decode")


@dataclass(frozen=True)
class Variation:
    """One link of a `-V seed:weight,...` chain."""

    seed: int
    weight: float


@dataclass(frozen=True)
class Request:
    """A command line. `None` means "not given here": settings fill it in later."""

    prompt: str = ""
    steps: int | None = None
    seed: int | None = None  # negative: reuse an earlier seed (-1 = the last image's)
    iterations: int | None = None
    width: int | None = None
    height: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    init_img: str | None = None  # "-1" = the previous output
    strength: float | None = None
    fit: bool = False
    init_mask: str | None = None
    invert_mask: bool = False
    variation_amount: float | None = None
    with_variations: tuple[Variation, ...] = ()
    grid: bool = False
    outdir: str | None = None
    log_tokenization: bool = False
    skip_normalize: bool = False
    save_intermediates: int | None = None
    intermediates: str | None = None  # "preview" | "decode"
    fnformat: str | None = None
    png_compression: int | None = None
