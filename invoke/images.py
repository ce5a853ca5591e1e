"""Init images and masks for img2img and inpainting, loaded with PIL only (no torch here).

Files are untrusted: only regular files are opened (a FIFO or a device is refused unread, see
reading.py), the header size is checked against a pixel cap before any pixel is decoded,
and every failure is an InitImageError naming the file, what is wrong and what would work.
The mask convention everywhere: mode "L", 255 = redraw, 0 = keep. Masks read from files are only
ever 0 or 255; --outcrop's own mask has grey values in a strip of the old edge, where the result
is a blend of the old pixels and the new (the backend pastes with the mask as alpha).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from invoke.errors import InitImageError
from invoke.line.switches import OUTCROP_DIRECTIONS
from invoke.reading import open_file

# 64 Mpixels (8192x8192): far above any SD size, far below what exhausts memory when decoded.
MAX_PIXELS = 64 * 1024 * 1024
MIN_SIDE = 8
FORMATS_HINT = "PNG, JPEG, WebP or GIF"
_EXIF_ORIENTATION = 0x0112
# --outcrop repaints a strip of the old edge this wide, blending it into the new area (InvokeAI
# re-painted a 96-pixel seam, blurred 16, on its 512-pixel pictures). Measured on the shipped
# model (4-pixel cells), `right 32` of a 64-pixel picture, background rows, the largest step
# between neighbouring columns (RGB sum; inside a picture 1-2): no strip 18-22, because the model
# draws a lighter frame at every picture edge and the kept frame shows as a line; a hard 8-pixel
# strip 8-10 (the step only moves inwards); an 8-pixel ramp 4-5; a 16-pixel ramp 2-3, as smooth
# as the inside. The frame is a few pixels wide whatever the picture's size, so pixels, not a
# share of the picture; at least two cells, so the cell at the edge is always redrawn.
OUTCROP_SEAM = 16


def outcrop_seam(multiple: int) -> int:
    """The width of the old edge's strip --outcrop blends, for a model with `multiple`-pixel
    latent cells."""
    return max(OUTCROP_SEAM, 2 * multiple)


@dataclass
class InitImage:
    """An init image ready for img2img: RGB pixels, the inpainting mask if any, and notes."""

    image: Image.Image  # mode RGB, size a multiple of `multiple`
    mask: Image.Image | None  # mode L, same size, 255 = redraw; None = no transparency
    notes: list[str] = field(default_factory=list)  # things the user should be told


def resolve_image_path(value: str | os.PathLike[str], outdir: str | os.PathLike[str]) -> Path:
    """`value` as given if it exists, else a bare file name looked up in `outdir`."""
    given = Path(value)
    if given.exists():
        return given
    looked = [str(given)]
    if given.name == str(value) and str(value) not in ("", ".", ".."):
        candidate = Path(outdir) / given.name
        if candidate.exists():
            return candidate
        looked.append(str(candidate))
    raise InitImageError(
        f"{value}: no such image (looked at {' and '.join(looked)}); "
        "give an existing path or the name of a file in the output folder"
    )


@contextmanager
def _opened(path: Path, what: str) -> Iterator[Image.Image]:
    """The image's first frame, decoded (oversized images refused before decoding); closed on
    leaving, with its file."""
    with open_file(
        path, f"{what} {path}", f"give the path of a {FORMATS_HINT} file", InitImageError
    ) as fh:
        img = _open(fh, path, what)
        try:
            yield img
        finally:
            img.close()


def _open(fh: BinaryIO, path: Path, what: str) -> Image.Image:
    """Open and fully decode the first frame, refusing oversized images before decoding."""
    try:
        img = Image.open(fh)  # reads the header only
    except UnidentifiedImageError:
        raise InitImageError(
            f"{what} {path}: not an image PIL can read; use a {FORMATS_HINT} file"
        ) from None
    except Image.DecompressionBombError:
        # PIL's own (larger) cap tripped while reading the header: the same answer as ours.
        raise InitImageError(
            f"{what} {path}: far more than the {MAX_PIXELS / 1e6:.0f} Mpixels allowed; "
            "scale it down first"
        ) from None
    except OSError as err:
        raise InitImageError(
            f"{what} {path}: cannot read ({err.strerror or err}); check the file's permissions"
        ) from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise InitImageError(
            f"{what} {path}: {width}×{height} is {width * height / 1e6:.0f} Mpixels, more than the "
            f"{MAX_PIXELS / 1e6:.0f} Mpixels allowed; scale it down first"
        )
    try:
        img.seek(0)
        img.load()
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        img.close()
        raise InitImageError(
            f"{what} {path}: the image data is truncated or corrupt ({err}); save it again"
        ) from None
    except Image.DecompressionBombError as err:
        img.close()
        raise InitImageError(f"{what} {path}: too large to load safely ({err})") from None
    return img


def _to_8bit(img: Image.Image) -> Image.Image:
    """Gray images with more than 8 bits per pixel (I;16*, I, F) as 8-bit L, full range kept."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255):
        arr = np.clip(np.rint(arr.astype(np.float64) / 257.0), 0, 255)
    else:
        arr = np.clip(np.rint(arr.astype(np.float64)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "L")


def _rgb_and_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None, list[str]]:
    """Any PIL mode -> (RGB image, alpha "L" or None, notes)."""
    notes: list[str] = []
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        notes.append(f"{mode} ({'16-bit' if mode != 'F' else 'float'}) image scaled to 8 bits")
        return _to_8bit(img).convert("RGB"), None, notes
    has_transparency = "transparency" in img.info or mode in ("RGBA", "LA", "PA", "RGBa", "La")
    if has_transparency:
        if mode in ("RGBa", "La"):  # premultiplied: un-premultiply through RGBA
            img = img.convert("RGBA")
        rgba = img.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A"), notes
    if mode == "CMYK":
        notes.append("CMYK image converted to RGB")
    return img.convert("RGB"), None, notes


def _round_down(value: int, multiple: int) -> int:
    return value - value % multiple if multiple > 1 else value


def _check_size(path: Path, what: str, size: tuple[int, int], multiple: int) -> None:
    if min(size) < MIN_SIDE:
        raise InitImageError(
            f"{what} {path}: {size[0]}×{size[1]} is too small (after rounding down to a multiple "
            f"of {multiple}); each side must be at least {max(MIN_SIDE, multiple)} pixels"
        )


def outcrop_size(size: tuple[int, int], outcrop: Sequence[tuple[str, int]]) -> tuple[int, int]:
    """The canvas size after --outcrop adds its pixels to `size` (width, height)."""
    added = dict(outcrop)
    return (
        size[0] + added.get("left", 0) + added.get("right", 0),
        size[1] + added.get("top", 0) + added.get("bottom", 0),
    )


def fitted_size(size: tuple[int, int], box: tuple[int, int], multiple: int) -> tuple[int, int]:
    """--fit's size for an image of `size`: scaled to fit inside `box` keeping its aspect, then
    rounded down to `multiple`."""
    (own_w, own_h), (width, height) = size, box
    # Integer arithmetic: the limiting side lands exactly on the box (no off-by-one).
    if own_w * height >= own_h * width:
        new_w, new_h = width, own_h * width // own_w
    else:
        new_w, new_h = own_w * height // own_h, height
    return (_round_down(new_w, multiple), _round_down(new_h, multiple))


def init_image_size(path: str | os.PathLike[str], multiple: int = 8) -> tuple[int, int]:
    """The size load_init_image gives an image without --fit (upright, rounded down)."""
    with _opened(Path(path), "init image") as img:
        width, height = img.size
        if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # turned a quarter
            width, height = height, width
    return (_round_down(width, multiple), _round_down(height, multiple))


def outcrop_canvas(
    image: Image.Image,
    mask: Image.Image | None,
    outcrop: Sequence[tuple[str, int]],
    seam: int,
) -> tuple[Image.Image, Image.Image]:
    """--outcrop: `image` on a canvas grown by (side, pixels), and the mask that redraws it.

    The new area is redrawn (255); its pixels start as the image's edge stretched outwards, the
    nearest thing to what belongs there (img2img keeps some of it; transparent black would pull
    the new area dark). A strip of the old picture `seam` pixels wide along each grown side ramps
    from redraw at the edge to keep inside, so the new area blends in instead of butting onto
    the old edge. The rest keeps its pixels exactly (and any holes `mask` already had).
    """
    added = dict(outcrop)
    top, right, bottom, left = (added.get(side, 0) for side in OUTCROP_DIRECTIONS)
    pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    grown = np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode="edge")
    redraw = (
        np.zeros((height, width), np.float32)
        if mask is None
        else np.asarray(mask.convert("L"), np.float32) / 255.0
    )
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    for grew, distance, side in (
        (top, rows + 1, height),
        (bottom, height - rows, height),
        (left, cols + 1, width),
        (right, width - cols, width),
    ):
        if grew:
            strip = min(seam, side // 2)  # a small picture keeps its middle
            ramp = np.clip((strip + 1 - distance) / (strip + 1), 0.0, 1.0)
            redraw = np.maximum(redraw, np.broadcast_to(ramp, redraw.shape))
    redraw = np.pad(redraw, ((top, bottom), (left, right)), constant_values=1.0)
    new_mask = Image.fromarray(np.rint(redraw * 255).astype(np.uint8), "L")
    return Image.fromarray(grown, "RGB"), new_mask


def load_init_image(
    path: str | os.PathLike[str],
    width: int,
    height: int,
    fit: bool = False,
    multiple: int = 8,
    outcrop: Sequence[tuple[str, int]] = (),
) -> InitImage:
    """Load an init image: EXIF orientation, any mode -> RGB, transparency -> mask, final size.

    Notes do not repeat the file name: the caller shows them after it (`init.png: ...`).

    Size: without `fit`, the image's own size rounded down to `multiple` (the right/bottom edge is
    cropped, so kept pixels stay exactly as they are); with `fit`, scaled to fit inside the
    `width`×`height` box keeping its aspect, then rounded down (900×600 into 512×512 -> 512×336).
    `width`×`height` is also the size below which results get poor (a note says so).
    With `outcrop`, the image so loaded is then grown (see outcrop_canvas).
    """
    p = Path(path)
    rgb, alpha, notes = _open_upright(p)
    own_w, own_h = rgb.size
    if min(own_w, own_h) <= 1:
        raise InitImageError(
            f"init image {p}: {own_w}×{own_h} is too small; "
            f"use an image of at least {max(MIN_SIDE, multiple)}×{max(MIN_SIDE, multiple)}"
        )
    mask = _alpha_mask(rgb, alpha, notes)
    if not fit and not outcrop and (own_w < width or own_h < height):
        notes.append(
            f"{own_w}×{own_h} is smaller than {width}×{height}: "
            "results get poor below the model's size (try --fit with -W/-H)"
        )
    if fit:
        rgb, mask = _fitted(p, rgb, mask, (width, height), multiple, notes)
    else:
        rgb, mask = _rounded_down(p, rgb, mask, multiple, notes)
    if outcrop:
        canvas = outcrop_size(rgb.size, outcrop)
        if canvas[0] * canvas[1] > MAX_PIXELS:
            raise InitImageError(
                f"--outcrop: {rgb.width}×{rgb.height} grown to {canvas[0]}×{canvas[1]} is more "
                f"than the {MAX_PIXELS / 1e6:.0f} Mpixels allowed; add fewer pixels"
            )
        rgb, mask = outcrop_canvas(rgb, mask, outcrop, outcrop_seam(multiple))
    return InitImage(image=rgb, mask=mask, notes=notes)


def _open_upright(p: Path) -> tuple[Image.Image, Image.Image | None, list[str]]:
    """The init image's first frame turned upright by its EXIF orientation, as RGB and its
    alpha (None when it has none), with notes on what was done."""
    notes: list[str] = []
    with _opened(p, "init image") as img:
        if getattr(img, "is_animated", False):
            notes.append("animated: using its first frame")
        if img.getexif().get(_EXIF_ORIENTATION, 1) not in (0, 1):
            notes.append("turned upright as its EXIF orientation says")
        oriented = ImageOps.exif_transpose(img)
        rgb, alpha, mode_notes = _rgb_and_alpha(oriented)
    return rgb, alpha, notes + mode_notes


def _alpha_mask(
    rgb: Image.Image, alpha: Image.Image | None, notes: list[str]
) -> Image.Image | None:
    """The mask an init image's transparency makes (255 = redraw), or None when it has none;
    warns in `notes` when the colour under the holes was erased."""
    if alpha is None:
        return None
    a = np.asarray(alpha)
    if not (a < 255).any():
        return None
    mask = Image.fromarray(np.where(a < 255, 255, 0).astype(np.uint8), "L")
    holes = a == 0
    if holes.any():
        under = np.asarray(rgb)[holes]
        black_or_white = (under == 0).all(axis=1) | (under == 255).all(axis=1)
        if black_or_white.all():
            notes.append(
                "warning: every transparent pixel is black or white, so the "
                "colour under the hole was erased; inpainting works better when it is kept"
            )
    return mask


def _fitted(
    p: Path,
    rgb: Image.Image,
    mask: Image.Image | None,
    box: tuple[int, int],
    multiple: int,
    notes: list[str],
) -> tuple[Image.Image, Image.Image | None]:
    """--fit: scaled to fit inside `box` keeping its aspect, then rounded down to `multiple`."""
    (own_w, own_h), (width, height) = rgb.size, box
    target = fitted_size(rgb.size, box, multiple)
    _check_size(p, "init image", target, multiple)
    if target == (own_w, own_h):
        return rgb, mask
    grown = " (scaled up: expect soft detail)" if target[0] > own_w else ""
    notes.append(f"{own_w}×{own_h} fitted into {width}×{height} as {target[0]}×{target[1]}{grown}")
    rgb = rgb.resize(target, Image.Resampling.LANCZOS)
    if mask is not None:
        # Any pixel the hole touches after scaling is redrawn (never keep a half-hole).
        scaled = np.asarray(mask.resize(target, Image.Resampling.BILINEAR))
        mask = Image.fromarray(np.where(scaled > 0, 255, 0).astype(np.uint8), "L")
    return rgb, mask


def _rounded_down(
    p: Path, rgb: Image.Image, mask: Image.Image | None, multiple: int, notes: list[str]
) -> tuple[Image.Image, Image.Image | None]:
    """The image's own size rounded down to `multiple`: the right/bottom edge cropped, so the
    pixels kept stay exactly as they are."""
    own_w, own_h = rgb.size
    target = (_round_down(own_w, multiple), _round_down(own_h, multiple))
    _check_size(p, "init image", target, multiple)
    if target == (own_w, own_h):
        return rgb, mask
    notes.append(
        f"{own_w}×{own_h} rounded down to {target[0]}×{target[1]} "
        f"(a multiple of {multiple}); the right/bottom edge is cropped"
    )
    return rgb.crop((0, 0, *target)), None if mask is None else mask.crop((0, 0, *target))


def load_mask(
    path: str | os.PathLike[str],
    size: tuple[int, int],
    invert: bool = False,
    notes: list[str] | None = None,
) -> Image.Image:
    """Load an inpainting mask as mode "L", 255 = redraw, sized `size` (the init image's).

    White (luma >= 128) means redraw; in an image with transparency, transparent pixels
    (alpha < 128) also mean redraw. `invert` swaps redraw and keep. Notes (a resize) are
    appended to `notes` when given.
    """
    p = Path(path)
    with _opened(p, "mask") as img:
        oriented = ImageOps.exif_transpose(img)
        rgb, alpha, _ = _rgb_and_alpha(oriented)
    redraw = np.asarray(rgb.convert("L")) >= 128
    if alpha is not None:
        redraw |= np.asarray(alpha) < 128
    if invert:
        redraw = ~redraw
    mask = Image.fromarray(np.where(redraw, 255, 0).astype(np.uint8), "L")
    if mask.size != tuple(size):
        if notes is not None:
            notes.append(
                f"mask {p.name} is {mask.width}×{mask.height}: resized to the init image's "
                f"{size[0]}×{size[1]}"
            )
        mask = mask.resize(tuple(size), Image.Resampling.NEAREST)
    return mask


def load_control_image(
    path: str | os.PathLike[str], size: tuple[int, int], processor: str | None = None
) -> tuple[Image.Image, list[str]]:
    """A ControlNet's conditioning image as RGB, `size` (width, height), and notes; `processor`
    (processors.py) runs on it once it has the picture's size.

    EXIF orientation is applied. Another size is scaled (Lanczos) to cover the picture and its
    middle kept, so shapes are never stretched: an edge map of the same aspect is only scaled.
    Transparency is dropped: a control image guides, it does not mask.
    """
    p = Path(path)
    with _opened(p, "control image") as img:
        rgb, _, notes = _rgb_and_alpha(ImageOps.exif_transpose(img))
    rgb = _cover(rgb, size, notes)
    if processor is not None:
        from invoke.processors import process

        rgb = process(rgb, processor)
    return rgb, notes


def load_prompt_image(path: str | os.PathLike[str]) -> tuple[Image.Image, list[str]]:
    """An image prompt (--ip_image) as RGB at its own size, and notes: the IP-Adapter's image
    encoder scales and crops it to what it reads. EXIF orientation is applied; transparency is
    dropped, as for a control image."""
    p = Path(path)
    with _opened(p, "image prompt") as img:
        rgb, _, notes = _rgb_and_alpha(ImageOps.exif_transpose(img))
    return rgb, notes


def _cover(rgb: Image.Image, size: tuple[int, int], notes: list[str]) -> Image.Image:
    width, height = size
    own_w, own_h = rgb.size
    if (own_w, own_h) == (width, height):
        return rgb
    scale = max(width / own_w, height / own_h)
    scaled = (max(width, round(own_w * scale)), max(height, round(own_h * scale)))
    rgb = rgb.resize(scaled, Image.Resampling.LANCZOS)
    if scaled == (width, height):
        notes.append(f"{own_w}×{own_h} scaled to the picture's {width}×{height}")
        return rgb
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    notes.append(
        f"{own_w}×{own_h} is another shape than the picture's {width}×{height}: scaled to "
        f"{scaled[0]}×{scaled[1]} and its middle kept (give -W/-H of its shape to keep it all)"
    )
    return rgb.crop((left, top, left + width, top + height))
