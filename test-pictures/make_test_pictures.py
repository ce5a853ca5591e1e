"""Draw the small init images and masks in this folder (no downloads; run again to remake them).

python test-pictures/make_test_pictures.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent


def tree_and_river_sketch() -> Image.Image:
    """A crude sketch like the img2img guide's: sky, hill, river, one tree (512×384)."""
    img = Image.new("RGB", (512, 384), (150, 200, 240))
    d = ImageDraw.Draw(img)
    d.ellipse((-200, 180, 712, 700), fill=(90, 160, 70))  # hill
    d.polygon([(0, 330), (200, 300), (512, 350), (512, 384), (0, 384)], fill=(60, 110, 200))
    d.rectangle((300, 150, 318, 250), fill=(100, 70, 40))  # trunk
    d.ellipse((255, 80, 365, 180), fill=(40, 120, 40))  # crown
    d.ellipse((420, 30, 470, 80), fill=(250, 230, 120))  # sun
    return img


def inpaint_pair() -> tuple[Image.Image, Image.Image]:
    """An RGBA picture whose transparent square keeps its colour underneath, and the same
    region as a separate white-on-black mask (256×256)."""
    base = tree_and_river_sketch().resize((256, 192)).crop((0, 0, 256, 192))
    rgba = base.convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    ImageDraw.Draw(alpha).rectangle((120, 30, 190, 100), fill=0)
    rgba.putalpha(alpha)
    mask = Image.new("L", rgba.size, 0)
    ImageDraw.Draw(mask).rectangle((120, 30, 190, 100), fill=255)
    return rgba, mask


def rotated_photo() -> tuple[Image.Image, Image.Exif]:
    """Stored sideways with EXIF orientation 6: upright it is 64×96 with the red half on top."""
    img = Image.new("RGB", (96, 64), (40, 40, 220))
    ImageDraw.Draw(img).rectangle((0, 0, 47, 63), fill=(220, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    return img, exif


def main() -> None:
    tree_and_river_sketch().save(HERE / "tree-and-river-sketch.png", optimize=True)
    rgba, mask = inpaint_pair()
    rgba.save(HERE / "inpaint-hole.png", optimize=True)
    mask.save(HERE / "inpaint-mask.png", optimize=True)
    photo, exif = rotated_photo()
    photo.save(HERE / "rotated-exif6.jpg", exif=exif, quality=90)


if __name__ == "__main__":
    main()
