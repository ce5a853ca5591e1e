"""The switch table: every switch a line takes, in canonical order (to_command() writes them in
this order), with its names, kind, range and help. The parser reads names and values from it,
`Request.validate()` the ranges, `Request.to_command()` the spelling; the shell its help.
"""

from __future__ import annotations

from invoke.line.samplers import SAMPLERS, listing
from invoke.line.switches import (
    CONTROL_PROCESSORS,
    FNFORMAT_FIELDS,
    INTERMEDIATE_KINDS,
    SEED_MAX,
    SEED_REUSE_MIN,
    SIZE_MAX,
    AxesSwitch,
    ChoiceSwitch,
    FlagSwitch,
    FloatSwitch,
    FnformatSwitch,
    IntSwitch,
    OutcropSwitch,
    PathSwitch,
    SeedSwitch,
    Switch,
    UpscaleSwitch,
    VariationsSwitch,
)

# The canonical order: to_command() writes switches in this order.
SWITCHES: tuple[Switch, ...] = (
    IntSwitch(
        field="steps",
        names=("-s", "--steps"),
        canonical="-s",
        help="sampling steps",
        metavar="N",
        lo=1,
        hi=1000,
    ),
    SeedSwitch(
        field="seed",
        names=("-S", "--seed"),
        canonical="-S",
        help=(
            "seed, or a list 1,2,3 (a sweep: one line each); a negative value reuses an "
            "earlier seed (-1 = the last image's)"
        ),
        complete="seed",
        metavar="SEED",
        lo=SEED_REUSE_MIN,
        hi=SEED_MAX,
    ),
    IntSwitch(
        field="iterations",
        names=("-n", "--iterations"),
        canonical="-n",
        help="number of images",
        metavar="N",
        lo=1,
        hi=1000,
    ),
    IntSwitch(
        field="width",
        names=("-W", "--width"),
        canonical="-W",
        help="image width (rounded down to a multiple of 8)",
        metavar="PIXELS",
        lo=16,
        hi=SIZE_MAX,
    ),
    IntSwitch(
        field="height",
        names=("-H", "--height"),
        canonical="-H",
        help="image height (rounded down to a multiple of 8)",
        metavar="PIXELS",
        lo=16,
        hi=SIZE_MAX,
    ),
    FloatSwitch(
        field="cfg_scale",
        names=("-C", "--cfg_scale"),
        canonical="-C",
        help="classifier-free guidance scale",
        metavar="SCALE",
        lo=0.0,
        hi=100.0,
    ),
    ChoiceSwitch(
        field="sampler",
        names=("-A", "-m", "--sampler"),
        canonical="-A",
        help="sampler, as InvokeAI 2.3 or 5 names it (name_k: Karras sigmas)",
        complete="sampler",
        metavar="SAMPLER",
        choices=SAMPLERS,
        listing=listing(),
    ),
    FlagSwitch(
        field="hires_fix",
        names=("--hires_fix",),
        canonical="--hires_fix",
        help=(
            "above the model's native size: draw at about native size first, then upscale the "
            "latents and redraw them at -f strength (default 0.75); txt2img only"
        ),
    ),
    PathSwitch(
        field="init_img",
        names=("-I", "--init_img"),
        canonical="-I",
        help="init image for img2img (-1 = the previous output)",
        complete="path",
        metavar="a file path",
    ),
    FloatSwitch(
        field="strength",
        names=("-f", "--strength"),
        canonical="-f",
        help="img2img strength: how much the init image is changed",
        metavar="STRENGTH",
        lo=0.0,
        hi=1.0,
        open_lo=True,
    ),
    FlagSwitch(
        field="fit",
        names=("-T", "-fit", "--fit"),
        canonical="--fit",
        help="fit the init image inside the -W x -H box, keeping its aspect",
    ),
    PathSwitch(
        field="init_mask",
        names=("-M", "--init_mask"),
        canonical="-M",
        help="inpainting mask image",
        complete="path",
        metavar="a file path",
    ),
    FlagSwitch(
        field="invert_mask",
        names=("--invert_mask",),
        canonical="--invert_mask",
        help="invert the mask",
    ),
    PathSwitch(
        field="latents",
        names=("--latents",),
        canonical="--latents",
        help=(
            "img2img from these saved latents (a .latents.safetensors file, -1 = the previous "
            "picture's) instead of encoding the -I image; the same model (VAE) only; with "
            "!fix FILE -U 2, the latents to upscale"
        ),
        complete="path",
        metavar="a file path",
    ),
    FlagSwitch(
        field="save_latents",
        names=("--save_latents",),
        canonical="--save_latents",
        help="save each picture's final latents beside it as NAME.latents.safetensors",
    ),
    OutcropSwitch(
        field="outcrop",
        names=("-c", "--outcrop"),
        canonical="--outcrop",
        help=(
            "extend the init image: SIDE PIXELS pairs (top, right, bottom, left), e.g. "
            "--outcrop top 64 right 32; the new area is painted (see !fix)"
        ),
        metavar="SIDE PIXELS",
    ),
    PathSwitch(
        field="controlnet",
        names=("--controlnet",),
        canonical="--controlnet",
        help=(
            "guide the picture by a ControlNet: a folder name in controlnets/, a folder path or "
            "a hub id in the local cache; needs --control_image. Another --controlnet adds a "
            "unit: the control switches after it are its own"
        ),
        complete="controlnet",
        metavar="NAME",
    ),
    PathSwitch(
        field="control_image",
        names=("--control_image",),
        canonical="--control_image",
        help=(
            "the image the ControlNet follows (an edge map, depth map, pose...), scaled and "
            "cropped to the picture's size (-1 = the previous output)"
        ),
        complete="path",
        metavar="a file path",
    ),
    ChoiceSwitch(
        field="control_processor",
        names=("--control_processor",),
        canonical="--control_processor",
        help=(
            "turn --control_image into what the ControlNet reads first: canny (the edges of a "
            "photo or drawing, for a canny ControlNet) or invert (a dark-on-light sketch as the "
            "light-on-dark lines scribble and lineart ControlNets read)"
        ),
        metavar="PROCESSOR",
        choices=CONTROL_PROCESSORS,
    ),
    FloatSwitch(
        field="control_weight",
        names=("--control_weight",),
        canonical="--control_weight",
        help="how strongly the ControlNet guides",
        metavar="WEIGHT",
        lo=0.0,
        hi=2.0,
    ),
    FloatSwitch(
        field="control_start",
        names=("--control_start",),
        canonical="--control_start",
        help="the ControlNet acts from this fraction of the steps on",
        metavar="FRACTION",
        lo=0.0,
        hi=1.0,
    ),
    FloatSwitch(
        field="control_end",
        names=("--control_end",),
        canonical="--control_end",
        help="the ControlNet acts until this fraction of the steps",
        metavar="FRACTION",
        lo=0.0,
        hi=1.0,
    ),
    PathSwitch(
        field="ip_adapter",
        names=("--ip_adapter",),
        canonical="--ip_adapter",
        help=(
            "an image prompt: an IP-Adapter (a name in ip_adapters/ or a .safetensors path, its "
            "image_encoder folder beside it) shows the model --ip_image"
        ),
        complete="ip_adapter",
        metavar="NAME",
    ),
    PathSwitch(
        field="ip_image",
        names=("--ip_image",),
        canonical="--ip_image",
        help="the picture the IP-Adapter shows the model (-1 = the previous output)",
        complete="path",
        metavar="a file path",
    ),
    FloatSwitch(
        field="ip_weight",
        names=("--ip_weight",),
        canonical="--ip_weight",
        help="how strongly the image prompt acts (the adapter's scale; 0 = not at all)",
        metavar="WEIGHT",
        lo=0.0,
        hi=2.0,
    ),
    PathSwitch(
        field="refiner",
        names=("--refiner",),
        canonical="--refiner",
        help=(
            "SDXL: the base hands its latents to this refiner (a models.yaml name or a path) at "
            "--refiner_start, and the refiner finishes the picture"
        ),
        complete="model",
        metavar="NAME",
    ),
    FloatSwitch(
        field="refiner_start",
        names=("--refiner_start",),
        canonical="--refiner_start",
        help=(
            "the fraction of the schedule the base runs before the refiner takes over, "
            "below 1 (0.8)"
        ),
        metavar="FRACTION",
        lo=0.0,
        hi=1.0,
        open_lo=True,
    ),
    FloatSwitch(
        field="variation_amount",
        names=("-v", "--variation_amount"),
        canonical="-v",
        help="variation amount",
        metavar="AMOUNT",
        lo=0.0,
        hi=1.0,
    ),
    VariationsSwitch(
        field="with_variations",
        names=("-V", "--with_variations"),
        canonical="-V",
        help="seed:weight,seed:weight chain applied to the base seed's noise",
        metavar="SEED:WEIGHT,...",
    ),
    FlagSwitch(
        field="seamless",
        names=("--seamless",),
        canonical="--seamless",
        help="tileable picture: the model's convolutions wrap around the edges",
    ),
    AxesSwitch(
        field="seamless_axes",
        names=("--seamless_axes",),
        canonical="--seamless_axes",
        help="with --seamless: the axes that wrap around, x, y or x,y",
        metavar="AXES",
    ),
    UpscaleSwitch(
        field="upscale",
        names=("-U", "--upscale"),
        canonical="-U",
        help=(
            "enlarge the picture 2x or 4x with Stable Diffusion's upscaler models, redrawn at "
            "the prompt; STRENGTH blends it over a plain enlargement (1 = the upscaler's alone)"
        ),
        metavar="FACTOR [STRENGTH]",
    ),
    PathSwitch(
        field="upscaler",
        names=("--upscaler",),
        canonical="--upscaler",
        help=(
            "with -U: the upscaler to use (a folder name in upscalers/, a folder path or a hub "
            "id in the local cache)"
        ),
        complete="upscaler",
        metavar="NAME",
    ),
    FlagSwitch(
        field="grid",
        names=("-g", "--grid"),
        canonical="-g",
        help="also save all images of the command as one grid",
    ),
    PathSwitch(
        field="outdir",
        names=("-o", "--outdir"),
        canonical="-o",
        help="output folder for this command",
        complete="path",
        metavar="a folder path",
    ),
    FlagSwitch(
        field="log_tokenization",
        names=("-t", "--log_tokenization"),
        canonical="-t",
        help="show how the prompt was tokenized",
    ),
    FlagSwitch(
        field="skip_normalize",
        names=("-x", "--skip_normalize"),
        canonical="-x",
        help="don't normalize text:weight sub-prompt weights",
    ),
    IntSwitch(
        field="save_intermediates",
        names=("--save_intermediates",),
        canonical="--save_intermediates",
        help="save every N-th step (and the last); 0 = none",
        metavar="N",
        lo=0,
        hi=10000,
    ),
    ChoiceSwitch(
        field="intermediates",
        names=("--intermediates",),
        canonical="--intermediates",
        help="how intermediates are made: preview (fast estimate) or decode (VAE)",
        metavar="KIND",
        choices=INTERMEDIATE_KINDS,
    ),
    FnformatSwitch(
        field="fnformat",
        names=("--fnformat",),
        canonical="--fnformat",
        help="file name template; fields " + " ".join("{" + f + "}" for f in FNFORMAT_FIELDS),
        metavar="TEMPLATE",
    ),
    IntSwitch(
        field="png_compression",
        names=("-z", "--png_compression"),
        canonical="-z",
        help="PNG compression level",
        metavar="LEVEL",
        lo=0,
        hi=9,
    ),
)
