"""Init images and masks: every mode and format loads, sizes, transparency -> mask, bad files."""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invoke.errors import InitImageError
from invoke.images import (
    MAX_PIXELS,
    init_image_size,
    load_control_image,
    load_init_image,
    load_mask,
    resolve_image_path,
)


def gradient(width: int, height: int) -> Image.Image:
    """An RGB test picture whose pixels differ, so crops and flips are visible."""
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None, None]
    blue = np.full((height, width, 1), 128.0)
    arr = np.concatenate(
        [np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1)), blue],
        axis=2,
    )
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def save(tmp_path: Path, image: Image.Image, name: str, **kwargs: object) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


# ---------------------------------------------------------------------------------------------
# Modes and formats
# ---------------------------------------------------------------------------------------------


def _mode_cases() -> list[tuple[str, object]]:
    def rgb() -> Image.Image:
        return gradient(64, 48)

    def p_opaque() -> Image.Image:
        return rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)

    def p_transparent() -> Image.Image:
        img = p_opaque()
        img.info["transparency"] = 0
        return img

    def i16() -> Image.Image:
        arr = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)
        return Image.fromarray(arr)  # uint16 -> mode I;16

    def i32() -> Image.Image:
        return Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 21).astype(np.int32))

    return [
        ("rgb.png", lambda: rgb()),
        ("rgba.png", lambda: rgb().convert("RGBA")),
        ("la.png", lambda: rgb().convert("LA")),
        ("l.png", lambda: rgb().convert("L")),
        ("1.png", lambda: rgb().convert("1")),
        ("p.png", p_opaque),
        ("p_transparent.png", p_transparent),
        ("i16.png", i16),
        ("i32.tif", i32),
        ("cmyk.jpg", lambda: rgb().convert("CMYK")),
        ("cmyk.tif", lambda: rgb().convert("CMYK")),
        ("rgb.jpg", lambda: rgb()),
        ("l.jpg", lambda: rgb().convert("L")),
        ("rgb.webp", lambda: rgb()),
        ("rgba.webp", lambda: rgb().convert("RGBA")),
        ("p.gif", p_opaque),
    ]


@pytest.mark.parametrize(("name", "make"), _mode_cases(), ids=[c[0] for c in _mode_cases()])
def test_every_mode_and_format_loads_as_rgb(tmp_path: Path, name: str, make) -> None:
    src = make()
    path = save(tmp_path, src, name)
    loaded = load_init_image(path, 64, 48)
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == (64, 48)
    # Fully opaque sources make no mask (no inpainting asked for).
    if name != "p_transparent.png":
        assert loaded.mask is None


def test_16bit_gray_keeps_its_full_range(tmp_path: Path) -> None:
    arr = np.zeros((16, 16), dtype=np.uint16)
    arr[:, 8:] = 65535
    arr[:, :4] = 32896  # 128 * 257
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    path = save(tmp_path, img, "deep.png")
    loaded = load_init_image(path, 16, 16)
    px = np.asarray(loaded.image)
    assert px[0, 0].tolist() == [128, 128, 128]
    assert px[0, 15].tolist() == [255, 255, 255]
    assert px[0, 5].tolist() == [0, 0, 0]
    assert any("8 bits" in n for n in loaded.notes)


def test_cmyk_colours_survive(tmp_path: Path) -> None:
    red = Image.new("RGB", (16, 16), (255, 0, 0)).convert("CMYK")
    path = save(tmp_path, red, "red.tif")
    r, g, b = load_init_image(path, 16, 16).image.getpixel((3, 3))
    assert r > 240 and g < 15 and b < 15


def test_animated_gif_uses_first_frame_and_says_so(tmp_path: Path) -> None:
    frames = [Image.new("P", (16, 16), i) for i in (1, 2, 3)]
    for f in frames:
        f.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    loaded = load_init_image(path, 16, 16)
    assert loaded.image.getpixel((0, 0)) == (255, 0, 0)
    assert any("animated" in n for n in loaded.notes)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 64 wide x 32 high, left half red; orientation 6 = displayed rotated 90° clockwise,
    # so upright it is 32 wide x 64 high with the red half on top.
    stored = Image.new("RGB", (64, 32), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(tmp_path, stored, "rotated.jpg", exif=exif, quality=95)
    loaded = load_init_image(path, 32, 64)
    assert loaded.image.size == (32, 64)
    top = loaded.image.getpixel((16, 8))
    bottom = loaded.image.getpixel((16, 56))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60
    assert any("EXIF" in n for n in loaded.notes)


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "box", "expected"),
    [
        ((900, 600), (512, 512), (512, 336)),
        ((600, 900), (512, 512), (336, 512)),
        ((1000, 1000), (512, 512), (512, 512)),
        ((1024, 512), (512, 768), (512, 256)),
        ((100, 50), (64, 64), (64, 32)),  # --fit scales small images up into the box too
    ],
)
def test_fit_scales_into_the_box_keeping_aspect(
    tmp_path: Path, size: tuple[int, int], box: tuple[int, int], expected: tuple[int, int]
) -> None:
    path = save(tmp_path, gradient(*size), "big.png")
    loaded = load_init_image(path, box[0], box[1], fit=True, multiple=8)
    assert loaded.image.size == expected


def test_fit_respects_a_larger_multiple(tmp_path: Path) -> None:
    path = save(tmp_path, gradient(900, 600), "big.png")
    assert load_init_image(path, 512, 512, fit=True, multiple=64).image.size == (512, 320)


def test_without_fit_own_size_is_rounded_down_by_cropping(tmp_path: Path) -> None:
    src = gradient(70, 45)
    path = save(tmp_path, src, "odd.png")
    loaded = load_init_image(path, 64, 40)
    assert loaded.image.size == (64, 40)
    # Cropped, not resampled: the kept pixels are exactly the original ones.
    assert np.array_equal(np.asarray(loaded.image), np.asarray(src)[:40, :64])
    assert any("rounded down to 64×40" in n for n in loaded.notes)


def test_exact_size_gives_no_rounding_note(tmp_path: Path) -> None:
    path = save(tmp_path, gradient(64, 64), "ok.png")
    assert load_init_image(path, 64, 64).notes == []


def test_image_smaller_than_model_size_is_noted(tmp_path: Path) -> None:
    path = save(tmp_path, gradient(256, 256), "small.png")
    loaded = load_init_image(path, 512, 512)
    assert loaded.image.size == (256, 256)
    assert any("smaller than 512×512" in n for n in loaded.notes)
    fitted = load_init_image(path, 512, 512, fit=True)
    assert fitted.image.size == (512, 512)
    assert any("scaled up" in n for n in fitted.notes)


# ---------------------------------------------------------------------------------------------
# Transparency -> mask
# ---------------------------------------------------------------------------------------------


def rgba_with_hole(colour_under_hole: tuple[int, int, int] | None) -> Image.Image:
    img = gradient(64, 64).convert("RGBA")
    arr = np.asarray(img).copy()
    arr[16:32, 16:32, 3] = 0
    if colour_under_hole is not None:
        arr[16:32, 16:32, :3] = colour_under_hole
    return Image.fromarray(arr, "RGBA")


def test_transparent_pixels_become_the_redraw_mask(tmp_path: Path) -> None:
    src = rgba_with_hole(None)
    path = save(tmp_path, src, "hole.png")
    loaded = load_init_image(path, 64, 64)
    assert loaded.mask is not None and loaded.mask.mode == "L"
    m = np.asarray(loaded.mask)
    assert (m[16:32, 16:32] == 255).all()
    assert m.sum() == 255 * 16 * 16
    # The colour under the hole is kept for the model to see, and no warning is given.
    assert np.array_equal(np.asarray(loaded.image), np.asarray(src)[:, :, :3])
    assert not any("warning" in n for n in loaded.notes)


def test_partial_alpha_is_redrawn_too(tmp_path: Path) -> None:
    arr = np.asarray(gradient(16, 16).convert("RGBA")).copy()
    arr[0, 0, 3] = 254
    path = save(tmp_path, Image.fromarray(arr, "RGBA"), "soft.png")
    m = np.asarray(load_init_image(path, 16, 16).mask)
    assert m[0, 0] == 255 and m.sum() == 255


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255)])
def test_erased_colour_under_hole_warns(tmp_path: Path, colour: tuple[int, int, int]) -> None:
    path = save(tmp_path, rgba_with_hole(colour), "erased.png")
    loaded = load_init_image(path, 64, 64)
    assert any(n.startswith("warning:") and "black or white" in n for n in loaded.notes)


def test_palette_transparency_becomes_a_mask(tmp_path: Path) -> None:
    img = Image.new("P", (16, 16), 1)
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    img.paste(0, (0, 0, 8, 16))
    img.info["transparency"] = 0
    path = save(tmp_path, img, "pal.png")
    loaded = load_init_image(path, 16, 16)
    m = np.asarray(loaded.mask)
    assert (m[:, :8] == 255).all() and (m[:, 8:] == 0).all()
    assert loaded.image.getpixel((12, 3)) == (200, 100, 50)


def test_la_transparency_becomes_a_mask(tmp_path: Path) -> None:
    img = Image.new("LA", (16, 16), (90, 255))
    img.paste((90, 0), (0, 0, 16, 4))
    path = save(tmp_path, img, "la.png")
    m = np.asarray(load_init_image(path, 16, 16).mask)
    assert (m[:4] == 255).all() and (m[4:] == 0).all()


def test_mask_follows_fit_and_rounding(tmp_path: Path) -> None:
    arr = np.asarray(gradient(128, 72).convert("RGBA")).copy()
    arr[:, 64:, 3] = 0  # right half transparent
    path = save(tmp_path, Image.fromarray(arr, "RGBA"), "half.png")
    fitted = load_init_image(path, 64, 64, fit=True)
    assert fitted.image.size == fitted.mask.size == (64, 32)
    m = np.asarray(fitted.mask)
    assert (m[:, 33:] == 255).all() and (m[:, :31] == 0).all()
    rounded = load_init_image(path, 128, 72, multiple=16)
    assert rounded.image.size == rounded.mask.size == (128, 64)


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------


def test_mask_white_means_redraw_and_invert_flips(tmp_path: Path) -> None:
    img = Image.new("L", (16, 16), 0)
    img.paste(255, (0, 0, 8, 16))
    path = save(tmp_path, img, "mask.png")
    m = np.asarray(load_mask(path, (16, 16)))
    assert (m[:, :8] == 255).all() and (m[:, 8:] == 0).all()
    inv = np.asarray(load_mask(path, (16, 16), invert=True))
    assert (inv[:, :8] == 0).all() and (inv[:, 8:] == 255).all()


def test_rgba_mask_transparent_area_means_redraw(tmp_path: Path) -> None:
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 255))
    img.paste((0, 0, 0, 0), (0, 0, 16, 4))
    path = save(tmp_path, img, "mask.png")
    m = np.asarray(load_mask(path, (16, 16)))
    assert (m[:4] == 255).all() and (m[4:] == 0).all()


def test_mask_of_another_size_is_resized_with_a_note(tmp_path: Path) -> None:
    img = Image.new("L", (32, 32), 0)
    img.paste(255, (0, 0, 16, 32))
    path = save(tmp_path, img, "mask.png")
    notes: list[str] = []
    m = load_mask(path, (16, 8), notes=notes)
    assert m.size == (16, 8) and m.mode == "L"
    assert set(np.unique(np.asarray(m)).tolist()) == {0, 255}
    assert any("resized" in n and "16×8" in n for n in notes)


# ---------------------------------------------------------------------------------------------
# Paths and bad files
# ---------------------------------------------------------------------------------------------


def test_resolve_image_path_as_given_then_in_outdir(tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    inside = save(outdir, gradient(8, 8), "000001.42.png")
    elsewhere = save(tmp_path, gradient(8, 8), "x.png")
    assert resolve_image_path(str(elsewhere), outdir) == elsewhere
    assert resolve_image_path("000001.42.png", outdir) == inside
    with pytest.raises(InitImageError) as err:
        resolve_image_path("nope.png", outdir)
    assert "nope.png" in str(err.value) and str(outdir) in str(err.value)


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A valid PNG header claiming width×height, with a tiny (incomplete) body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return path


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = bomb_png(tmp_path / "bomb.png", 20000, 20000)
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(InitImageError) as err:
            load_init_image(path, 512, 512)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 2
    assert peak < 50 * 1024 * 1024
    assert "bomb.png" in str(err.value) and "Mpixels" in str(err.value)


def test_just_below_the_pixel_cap_is_not_refused_by_the_header_check(tmp_path: Path) -> None:
    # Same header trick, under the cap: it gets past the size check and fails as truncated.
    side = int(MAX_PIXELS**0.5) - 8
    path = bomb_png(tmp_path / "big.png", side, 8)
    with pytest.raises(InitImageError, match="truncated or corrupt"):
        load_init_image(path, 512, 512)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.png", "no such file"),
        (lambda d: (d / "folder").mkdir() or d / "folder", "is a folder"),
        (lambda d: (d / "text.png").write_text("hello") and d / "text.png", "not an image"),
        (lambda d: (d / "empty.png").write_bytes(b"") or d / "empty.png", "not an image"),
    ],
    ids=["missing", "directory", "not-an-image", "empty-file"],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, make, expected: str) -> None:
    path = make(tmp_path)
    with pytest.raises(InitImageError) as err:
        load_init_image(path, 64, 64)
    message = str(err.value)
    assert expected in message and path.name in message and "\n" not in message


@pytest.mark.parametrize(
    ("suffix", "options", "message"),
    [
        (".png", {"compress_level": 0}, r"cut\.png: the image data is truncated"),
        (".jpg", {}, r"cut\.jpg"),
    ],
    ids=["png", "jpeg"],
)
def test_truncated_image_is_refused(
    tmp_path: Path, suffix: str, options: dict[str, object], message: str
) -> None:
    good = save(tmp_path, gradient(64, 64), "good" + suffix, **options)
    data = good.read_bytes()
    cut = tmp_path / ("cut" + suffix)
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InitImageError, match=message):
        load_init_image(cut, 64, 64)


def test_one_pixel_image_is_refused(tmp_path: Path) -> None:
    path = save(tmp_path, Image.new("RGB", (1, 1)), "dot.png")
    with pytest.raises(InitImageError, match=r"dot\.png: 1×1 is too small"):
        load_init_image(path, 64, 64)


def test_too_small_after_rounding_is_refused(tmp_path: Path) -> None:
    path = save(tmp_path, gradient(7, 300), "thin.png")
    with pytest.raises(InitImageError, match=r"thin\.png: 0×296 is too small"):
        load_init_image(path, 64, 64)


def test_mask_errors_name_the_mask(tmp_path: Path) -> None:
    with pytest.raises(InitImageError, match=r"^mask .*nomask\.png: no such file"):
        load_mask(tmp_path / "nomask.png", (16, 16))


def test_shipped_test_pictures_load() -> None:
    pictures = Path(__file__).resolve().parents[1] / "test-pictures"
    sketch = load_init_image(pictures / "tree-and-river-sketch.png", 512, 512, fit=True)
    assert sketch.image.size == (512, 384) and sketch.mask is None
    hole = load_init_image(pictures / "inpaint-hole.png", 256, 192)
    mask = load_mask(pictures / "inpaint-mask.png", hole.image.size)
    assert hole.mask is not None
    assert np.array_equal(np.asarray(hole.mask), np.asarray(mask))
    upright = load_init_image(pictures / "rotated-exif6.jpg", 64, 96)
    assert upright.image.size == (64, 96)


# ---------------------------------------------------------------------------------------------
# --outcrop: the grown canvas and its mask
# ---------------------------------------------------------------------------------------------


def test_outcrop_grows_the_canvas_with_the_edge_stretched_and_redraws_only_the_new_area(
    tmp_path: Path,
) -> None:
    source = gradient(40, 32)
    path = save(tmp_path, source, "g.png")
    loaded = load_init_image(path, 64, 64, outcrop=(("top", 8), ("right", 16)), multiple=8)
    image, mask = np.asarray(loaded.image), np.asarray(loaded.mask)
    old = np.asarray(source)
    assert loaded.image.size == (56, 40) and loaded.mask.size == (56, 40)
    assert not loaded.notes  # not "smaller than the model's size": the canvas is what counts
    assert np.array_equal(image[8:, :40], old)  # the picture itself, untouched, 8 down
    # the new area starts as the nearest edge pixels (the corner as the corner pixel)
    assert np.array_equal(image[:8, :40], np.broadcast_to(old[0], (8, 40, 3)))
    assert np.array_equal(image[8:, 40:], np.broadcast_to(old[:, -1:], (32, 16, 3)))
    assert (image[:8, 40:] == old[0, -1]).all()
    # redraw: all of the new area; a 16-pixel ramp into the old picture along the grown sides
    # (at most half the side: 32 high gives a 16-row ramp), keep the rest
    assert (mask[:8] == 255).all() and (mask[:, 40:] == 255).all()
    ramp = np.rint(255 * np.arange(16, 0, -1) / 17).astype(np.uint8)  # 240 ... 15
    assert np.array_equal(mask[8:24, 0], ramp)  # down from the top edge, far from the right
    assert np.array_equal(mask[30, 24:40], ramp[::-1])  # towards the right edge
    assert (mask[24:, :24] == 0).all()


def test_outcrop_of_a_small_picture_keeps_its_middle_and_its_holes(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (16, 16), (200, 10, 10, 255))
    rgba.putpixel((8, 12), (0, 0, 0, 0))  # a hole far from the grown side
    path = save(tmp_path, rgba, "small.png")
    loaded = load_init_image(path, 64, 64, outcrop=(("left", 8),), multiple=8)
    mask = np.asarray(loaded.mask)
    assert mask.shape == (16, 24)
    assert (mask[:, :8] == 255).all()
    assert mask[0, 8] > mask[0, 15] > 0 and (mask[:, 16:] == 0).sum() == 16 * 8 - 1  # 8-px ramp
    assert mask[12, 16] == 255  # the hole is still redrawn


def test_outcrop_beyond_the_pixel_cap_is_refused(tmp_path: Path) -> None:
    # each side may add 4096; all four grow 64x64 to 8256x8256, 68 Mpixels: refused before
    # any pixel of the canvas is made
    path = save(tmp_path, gradient(64, 64), "g.png")
    wide = (("top", 4096), ("right", 4096), ("bottom", 4096), ("left", 4096))
    with pytest.raises(InitImageError) as err:
        load_init_image(path, 64, 64, outcrop=wide)
    assert str(err.value) == (
        "--outcrop: 64×64 grown to 8256×8256 is more than the 67 Mpixels allowed; add fewer pixels"
    )


def test_init_image_size_is_the_loaded_size_without_decoding_twice_wrong(tmp_path: Path) -> None:
    pictures = Path(__file__).resolve().parents[1] / "test-pictures"
    # EXIF orientation 6: stored landscape, loaded upright; sizes rounded down as loading does
    assert init_image_size(pictures / "rotated-exif6.jpg") == (64, 96)
    assert init_image_size(save(tmp_path, gradient(61, 35), "odd.png"), 8) == (56, 32)
    with pytest.raises(InitImageError, match="no such file"):
        init_image_size(tmp_path / "nowhere.png")


def test_control_image_of_another_shape_keeps_its_middle_unstretched(tmp_path: Path) -> None:
    source = gradient(96, 64)
    source.save(tmp_path / "wide.png")
    image, notes = load_control_image(tmp_path / "wide.png", (64, 64))
    assert image.size == (64, 64)
    assert np.array_equal(np.asarray(image), np.asarray(source)[:, 16:80])  # no resampling
    assert notes == [
        "96×64 is another shape than the picture's 64×64: scaled to 96×64 and its middle kept "
        "(give -W/-H of its shape to keep it all)"
    ]
    half, notes = load_control_image(tmp_path / "wide.png", (48, 32))
    assert half.size == (48, 32) and notes == ["96×64 scaled to the picture's 48×32"]


def test_sixteen_bit_depth_map_is_read_with_its_whole_range(tmp_path: Path) -> None:
    """Depth estimators often save 16-bit grey PNGs: near and far must stay apart."""
    depth = (np.arange(64, dtype=np.uint32)[None, :].repeat(64, 0) * 1040).astype(np.uint16)
    Image.fromarray(depth).save(tmp_path / "depth.png")
    image, _ = load_control_image(tmp_path / "depth.png", (64, 64))
    row = np.asarray(image)[0, :, 0].astype(int)
    assert image.mode == "RGB" and row[0] == 0 and row[-1] >= 250
    assert (np.diff(row) >= 0).all()
