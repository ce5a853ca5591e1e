"""Make the pictures of the README and the docs/ pages with `invoke` itself and the embedded
default model.

Every picture is an output of the real command line (its PNG carries the command that remakes
it); only the inpainting input, a picture with a transparent hole, is cut here as a user would in
an image editor, and the seamless picture is also shown tiled 2x2 to show its edges meet. Run
again after retraining the default model:

    python scripts/readme_pictures.py            # writes docs/*.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures.world comes from the checkout
TXT2IMG = "a red circle on a blue background -s 20 -S 1"
IMG2IMG = "a green triangle on a white background -I 000001.1.png -s 20 -S 7 -f {f}"
STRENGTHS = ("0.3", "0.5", "0.7", "0.9")
VARIATIONS = "a yellow star on a purple background -s 20 -S 3 -v 0.6 -n 3"
INPAINT = "a yellow star on a blue background -I hole.png -s 20 -S 5 -f 1"
HIRES = "a yellow star on a green background -W 192 -H 128 -s 20 -S 2"
SEAMLESS = "a red circle on a blue background -s 20 -S 1 --seamless"
LORA = "a black triangle on a yellow background -s 20 -S 2"  # then with <lora:outline:1>
# then guided by a star's silhouette in the top-left corner, drawn here as a user would draw it
CONTROL = "a red star on a blue background -s 20 -S 4"
# IMG2IMG at 0.7 again, continued from the red circle's latents instead of its PNG
LATENT_CHAIN = "a green triangle on a white background -I -1 --latents -1 -s 20 -S 7 -f 0.7"


def invoke(outdir: Path, lines: list[str], model: str | None) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "invoke", "--outdir", str(outdir)]
    cmd += ["--model", model] if model else []
    done = subprocess.run(cmd, input="\n".join(lines) + "\n", text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"invoke failed (exit {done.returncode})")


def only(outdir: Path, prefix: str) -> list[Path]:
    return sorted(outdir.glob(f"{prefix}.*.png"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    p.add_argument("--model", help="another model to preview with [the embedded default]")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        lines = [TXT2IMG, *(IMG2IMG.format(f=f) for f in STRENGTHS), VARIATIONS]
        invoke(out, lines, args.model)
        # The inpainting input: the red circle picture with a transparent hole where the circle is.
        first = Image.open(only(out, "000001")[0]).convert("RGBA")
        w, h = first.size
        alpha = Image.new("L", first.size, 255)
        alpha.paste(0, (w // 8, h // 8, w - w // 8, h - h // 8))
        first.putalpha(alpha)
        first.save(out / "hole.png")
        invoke(out, [INPAINT], args.model)
        invoke(out, [HIRES, f"{HIRES} --hires_fix", SEAMLESS], args.model)
        prompt, switches = LORA.split(" -", 1)
        invoke(out, [LORA, f"{prompt} <lora:outline:1> -{switches}"], args.model)
        from tests.fixtures import world

        corner = world.render(world.Labels("white", "black", "star"), (18, 18), 12)
        corner.save(out / "silhouette.png")
        guided = f"{CONTROL} --controlnet silhouette --control_image silhouette.png"
        # two ControlNet units on one line: the same silhouette net, a second shape elsewhere
        world.render(world.Labels("white", "black", "circle"), (46, 46), 12).save(
            out / "silhouette-2.png"
        )
        both = f"{guided} --controlnet silhouette --control_image silhouette-2.png"
        invoke(out, [CONTROL, guided, both], args.model)
        invoke(out, [f"{TXT2IMG} --save_latents", LATENT_CHAIN], args.model)
        tile = Image.open(only(out, "000010")[0])
        tiled = Image.new("RGB", (tile.width * 2, tile.height * 2))
        for x in (0, tile.width):
            for y in (0, tile.height):
                tiled.paste(tile, (x, y))
        tiled.save(out / "seamless-2x2.png")

        picks = {"red-circle-on-blue.png": only(out, "000001")[0]}
        for k, f in enumerate(STRENGTHS):
            picks[f"strength-{f}.png"] = only(out, f"{k + 2:06d}")[0]
        for k, path in enumerate(only(out, "000006")):
            picks[f"variation-{k + 1}.png"] = path
        picks["inpaint-input.png"] = out / "hole.png"
        picks["inpaint.png"] = only(out, "000007")[0]
        picks["hires-plain.png"] = only(out, "000008")[0]
        picks["hires-fix.png"] = only(out, "000009")[0]
        picks["seamless-2x2.png"] = out / "seamless-2x2.png"
        picks["lora-plain.png"] = only(out, "000011")[0]
        picks["lora-outline.png"] = only(out, "000012")[0]
        picks["controlnet-silhouette.png"] = out / "silhouette.png"
        picks["controlnet-plain.png"] = only(out, "000013")[0]
        picks["controlnet-guided.png"] = only(out, "000014")[0]
        picks["controlnet-silhouette-2.png"] = out / "silhouette-2.png"
        picks["controlnet-two.png"] = only(out, "000015")[0]
        picks["latent-chain.png"] = only(out, "000017")[0]
        args.docs.mkdir(exist_ok=True)
        for name, src in picks.items():
            shutil.copyfile(src, args.docs / name)
            print(f"{args.docs / name}  <- {src.name}")


if __name__ == "__main__":
    main()
