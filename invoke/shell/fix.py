"""`!fix FILE ...`: post-process an image that exists, as InvokeAI 2.2/2.3's `!fix` did.

What it does here is outcropping: `!fix FILE --outcrop top 64 right 32` grows FILE's canvas and
paints the new area at FILE's own prompt, seed, steps, guidance and sampler (read from its
metadata, as `!fetch` reads them), each overridable on the line, and -U enlarges the result.
`!fix FILE -U 2 [STRENGTH]` alone enlarges FILE's own pixels with an upscaler (InvokeAI's -U was
Real-ESRGAN; here Stable Diffusion's upscalers, as -U on a line), at FILE's prompt and seed; or
FILE's latents, saved beside it by --save_latents or named by --latents, when the x2 latent
upscaler reads them (upscaling.Upscaling.file_latents; the stored line then names the file).
InvokeAI's other `!fix` tools (-G/-ft face restoration, --embiggen) need models this program does
not ship and cannot download; the parser refuses those switches, saying so.

An outcrop makes no file itself: it becomes an ordinary line, `"prompt" -s .. -S .. -I FILE -f 0.9
--outcrop top 64 right 32`, run like any other. That line is what the new image stores and what
remakes it. An upscale stores its `!fix FILE "prompt" -S .. -U 2 0.75 --upscaler NAME` line,
which remakes it. FILE is only read (the new image gets the next NNNNNN.seed.png name).
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

from invoke.errors import InitImageError, InvokeError
from invoke.line.parse import parse_fix, parse_request
from invoke.line.request import Request
from invoke.reading import not_a_file
from invoke.shell.dispatch import ShellContext, command, run_request, user_path

FIX_USAGE = (
    "!fix FILE [PROMPT] --outcrop SIDE PIXELS [SIDE PIXELS ...] [-s -S -C -A -f -n -o -U] | "
    "!fix FILE -U FACTOR [STRENGTH] [--latents FILE]"
)
EXAMPLE_PROMPT = "a red circle on a blue background"


@command(
    "fix",
    FIX_USAGE,
    "Extend FILE (an existing image) on the sides given (top, right, bottom, left) and paint "
    "the new area at FILE's own prompt and seed, or with -U alone enlarge FILE 2x or 4x by an "
    "upscaler; a new file, FILE is kept. A prompt or switches on the line override FILE's.",
    complete="path+line",
)
def _fix(ctx: ShellContext, args: str) -> None:
    fix = parse_fix(args)
    line = fix.line
    shown = shlex.quote(fix.file)
    # What !fix decides itself: a value on the line would be silently replaced, so refuse it.
    if line.init_img is not None:
        raise InvokeError(f"!fix: the image is {shown}, the word after !fix; drop -I")
    if line.width is not None or line.height is not None:
        raise InvokeError(
            f"!fix: the new size is {shown}'s own plus the pixels --outcrop adds; drop -W/-H"
        )
    if line.hires_fix:
        raise InvokeError(
            "!fix: --hires_fix draws a new picture; to make this one larger use --outcrop"
        )
    if not line.outcrop and line.upscale:
        if isinstance(line.seed, tuple):
            raise InvokeError("!fix -U: one seed; a seed list -S 1,2 is for lines that draw")
        _upscale(ctx, _image_path(ctx, fix.file), line)
        return
    if not line.outcrop:
        raise InvokeError(
            f"!fix: say how to extend {shown}, e.g. !fix {shown} --outcrop right 64 "
            "(sides top, right, bottom, left); face restoration needs models this program "
            "does not ship"
        )
    path = _image_path(ctx, fix.file)
    request = replace(_with_stored(ctx, path, line), init_img=str(path)).validate()
    run_request(ctx, request)


def _image_path(ctx: ShellContext, file: str) -> Path:
    path = user_path(ctx, file)
    problem = not_a_file(path)
    if problem == "no such file":
        raise InvokeError(
            f"!fix: {file}: no such file (nor in {ctx.runner.outdir}); give the path of an image"
        )
    if problem:  # a folder, a FIFO (reading it would wait forever), a device...
        raise InvokeError(f"!fix: {file} {problem}; give the path of an image")
    return path


# What `!fix FILE -U` takes: it enlarges FILE's pixels and draws nothing, so the drawing switches
# have nothing to act on.
_UPSCALE_FIELDS = ("prompt", "seed", "skip_normalize", "upscale", "upscaler", "outdir",
                   "png_compression", "fnformat", "latents")  # fmt: skip


def _upscale(ctx: ShellContext, path: Path, line: Request) -> None:
    """`!fix FILE -U 2 [0.75]`: FILE's own pixels enlarged by the upscaler, at FILE's prompt
    and seed (from its metadata; the line's when given, or when FILE has none). The new
    picture's command is that !fix line, which makes it again from FILE."""
    drawing = replace(line, **{field: getattr(Request(), field) for field in _UPSCALE_FIELDS})
    if drawing != Request():
        raise InvokeError(
            "!fix FILE -U enlarges FILE as it is and draws nothing: a prompt, -S, --latents, "
            "--upscaler, -o, -z and --fnformat go with it; to draw it again larger, !fetch FILE "
            "and add -U to its line"
        )
    stored = _stored(ctx, path)
    if stored is None:
        prompt = "the line's prompt" if line.prompt.strip() else "no prompt"
        seed = "a new seed" if line.seed is None else f"seed {line.seed}"
        ctx.err(f">> {path.name} has no metadata: upscaling with {prompt} and {seed}")
    elif not line.prompt.strip():
        line = replace(line, prompt=stored.prompt, skip_normalize=stored.skip_normalize)
    if stored is not None and line.seed is None:
        line = replace(line, seed=stored.seed)
    request = replace(line, init_img=str(path)).validate()
    if ctx.dry_run:
        ctx.canonical(ctx.runner.canonical_upscale(request))
    else:
        ctx.runner.upscale_file(request)


def _with_stored(ctx: ShellContext, path: Path, line: Request) -> Request:
    """The line's values, the rest from the image's own command (InvokeAI's `!fix` took the
    image's prompt and seed unless the line gave them). An image without one (a photo, or a
    picture from another program: InvokeAI crashed there, its #1320) needs a prompt on the line."""
    stored = _stored(ctx, path)
    if stored is None:
        if not line.prompt.strip():
            raise InvokeError(
                f"!fix: {path} has no metadata with its prompt and seed; type a prompt after the "
                f'file: !fix {shlex.quote(str(path))} "{EXAMPLE_PROMPT}" '
                f"--outcrop {' '.join(f'{s} {p}' for s, p in line.outcrop)}"
            )
        seed = "a new seed" if line.seed is None else f"seed {line.seed}"
        ctx.err(f">> {path.name} has no metadata: using the line's prompt and {seed}")
        return line
    return replace(
        line,
        prompt=line.prompt if line.prompt.strip() else stored.prompt,
        seed=line.seed if line.seed is not None else stored.seed,
        steps=line.steps if line.steps is not None else stored.steps,
        cfg_scale=line.cfg_scale if line.cfg_scale is not None else stored.cfg_scale,
        sampler=line.sampler if line.sampler is not None else stored.sampler,
        # how the prompt's weights read belongs with the prompt
        skip_normalize=line.skip_normalize or (stored.skip_normalize and not line.prompt.strip()),
    )


def _stored(ctx: ShellContext, path: Path) -> Request | None:
    """The values of the command `path` carries (a picture upscaled by !fix carries a !fix
    line: its prompt and seed), or None for a picture without one, once it is known to be an
    image."""
    try:
        command = ctx.runner.fetch(str(path))
        if command.startswith("!fix "):
            return parse_fix(command.removeprefix("!fix ")).line
        return parse_request(command)
    except InvokeError:
        _check_image(path)
        return None


def _check_image(path: Path) -> None:
    """A file with no metadata may be no image at all: say that rather than ask for a prompt."""
    from invoke.images import init_image_size  # PIL and numpy: only when !fix runs

    try:
        init_image_size(path)
    except InitImageError as exc:
        raise InvokeError(f"!fix: {exc}") from exc
