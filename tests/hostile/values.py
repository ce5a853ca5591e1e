"""Hostile cases about values: NaN and infinity in files and in arithmetic, text that would drive
the terminal, and inputs that once ended in `unexpected error`. See tests/hostile/__init__.py for
what a case is.

The files are made from the tiny model of the run (tests/conftest.py's `tiny_model_dir`), copied
into the case's folder and damaged there: a few weights set to NaN or infinity, a config value
changed.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.hostile import Hostile, Scenario

NAN, INF = math.nan, math.inf
LINE = "a cat -s 1 -S 1\n"
_BUILT: list[Path] = []  # the tiny model, when this module had to build it


# -- the files -----------------------------------------------------------------------------------


def tiny_model(d: Path) -> Path:
    """The run's tiny model: tiny_model_dir lives in pytest's base temp folder, beside each test's
    own (`d`); built once into that folder if it is not there (the same seeded weights)."""
    found = sorted(d.parent.glob("models*/tiny/model_index.json"))
    if found:
        return found[0].parent
    if not _BUILT:
        from tests.fixtures.tiny_models import build_test_model

        _BUILT.append(build_test_model(d.parent / "hostile-values-tiny"))
    return _BUILT[0]


def model_copy(d: Path, name: str = "damaged") -> Path:
    """A copy of the tiny model at d/name."""
    return Path(shutil.copytree(tiny_model(d), d / name))


def plant(file: Path, value: float, count: int, key: str = "") -> None:
    """Set `count` values of a .safetensors file's first floating-point tensor (the first whose
    name starts with `key`, by name) to `value`; the rest of the file stays as it was."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(file), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    name = next(
        k
        for k in sorted(tensors)
        if k.startswith(key) and tensors[k].is_floating_point() and tensors[k].numel() >= count
    )
    flat = tensors[name].flatten().clone()
    flat[:count] = torch.tensor(value, dtype=flat.dtype)
    tensors[name] = flat.reshape(tensors[name].shape).contiguous()
    save_file(tensors, str(file), metadata=metadata)


def scale(file: Path, key: str, factor: float) -> None:
    """Multiply one tensor of a .safetensors file by `factor`: finite weights, too large."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(file), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    tensors[key] = (tensors[key].double() * factor).to(tensors[key].dtype).contiguous()
    save_file(tensors, str(file), metadata=metadata)


def edit_json(file: Path, **values: Any) -> None:
    data = json.loads(file.read_text(encoding="utf-8"))
    data.update(values)
    file.write_text(json.dumps(data), encoding="utf-8")


def _png(path: Path, **chunks: str) -> Path:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, text in chunks.items():
        info.add_text(key, text)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(path, pnginfo=info)
    return path


def _lora(d: Path, name: str, times: float = 1.0) -> Path:
    """A kohya LoRA for the tiny model at d/loras/NAME.safetensors, its up and down weights
    `times` larger than tests.helpers makes them."""
    from safetensors.torch import load_file, save_file

    from invoke.backend.loading import load_model
    from tests.helpers import kohya_file

    (d / "loras").mkdir(exist_ok=True)
    file = kohya_file(load_model(tiny_model(d), device="cpu"), d / "loras" / f"{name}.safetensors")
    if times != 1.0:
        tensors = load_file(str(file))
        louder = {k: (v * times if "lora_" in k else v).contiguous() for k, v in tensors.items()}
        save_file(louder, str(file))
    return Path(file)


# -- what must hold afterwards ---------------------------------------------------------------------


def _no_picture(d: Path) -> None:
    assert not list((d / "out").glob("*.png")), "a picture was saved"


# -- the scenarios -------------------------------------------------------------------------------


def _damaged_part(part: str, file: str, value: float, count: int) -> Callable[[Path], Scenario]:
    def prepare(d: Path) -> Scenario:
        plant(model_copy(d) / part / file, value, count)
        return Scenario(["--model", str(d / "damaged")], LINE)

    return prepare


def _damaged_checkpoint(d: Path) -> Scenario:
    from tests.fixtures.tiny_families import write_ldm_checkpoint

    file = write_ldm_checkpoint(tiny_model(d), d / "tiny.safetensors")
    plant(file, NAN, 12, key="model.diffusion_model.")
    return Scenario(["--model", str(file)], LINE)


def _damaged_lora(d: Path) -> Scenario:
    plant(_lora(d, "ink"), NAN, 3, key="lora_unet_")
    return Scenario(["--lora_dir", str(d / "loras")], "a cat <lora:ink:0.8> -s 1 -S 1\n")


def _damaged_embedding(d: Path) -> Scenario:
    from tests.helpers import embedding_file

    plant(embedding_file(d / "embeddings" / "style.safetensors"), NAN, 2)
    return Scenario(["--embedding_dir", str(d / "embeddings")], "a <style> cat -s 1 -S 1\n")


def _damaged_controlnet(d: Path) -> Scenario:
    from tests.fixtures.tiny_models import build_test_controlnet

    net = build_test_controlnet(d / "nets" / "edges", tiny_model(d))
    plant(net / "diffusion_pytorch_model.safetensors", INF, 5)
    _png(d / "edges.png")
    line = "a cat --controlnet edges --control_image edges.png -s 1 -S 1\n"
    return Scenario(["--controlnet_dir", str(d / "nets")], line)


def _damaged_upscaler(d: Path) -> Scenario:
    from tests.fixtures.tiny_models import build_test_upscaler

    ups = build_test_upscaler(d / "ups" / "sd-x2-latent-upscaler", 2)
    plant(ups / "unet" / "diffusion_pytorch_model.safetensors", NAN, 12)
    return Scenario(["--upscaler_dir", str(d / "ups")], "a cat -s 1 -S 1 -U 2\n")


def _odd_lora(**tensors: Any) -> Callable[[Path], Scenario]:
    """A LoRA for the tiny UNet's first convolution (32 x 4 x 3 x 3), its `down`, `up` and
    `alpha` as given (each a function making the tensor, so torch loads only when run)."""

    def prepare(d: Path) -> Scenario:
        from safetensors.torch import save_file

        key = "lora_unet_conv_in"
        names = {"down": "lora_down.weight", "up": "lora_up.weight", "alpha": "alpha"}
        (d / "loras").mkdir()
        made = {f"{key}.{names[part]}": make() for part, make in tensors.items()}
        save_file(made, str(d / "loras" / "odd.safetensors"))
        return Scenario(["--lora_dir", str(d / "loras")], "a cat <lora:odd> -s 1 -S 1\n")

    return prepare


def _ones(*shape: int, dtype: str = "float32") -> Callable[[], Any]:
    def make() -> Any:
        import torch

        return torch.ones(shape, dtype=getattr(torch, dtype))

    return make


def _huge_embedding(d: Path) -> Scenario:
    from safetensors.torch import save_file

    from tests.helpers import embedding_vectors

    (d / "embeddings").mkdir()
    vectors = embedding_vectors(2) * 1e30  # finite, but no text encoder survives them
    save_file({"emb_params": vectors}, str(d / "embeddings" / "loud.safetensors"))
    return Scenario(["--embedding_dir", str(d / "embeddings")], "a <loud> cat -s 1 -S 1\n")


def _one_pixel_outcrop(d: Path) -> Scenario:
    from PIL import Image

    Image.new("RGB", (1, 1), (200, 30, 30)).save(d / "dot.png")
    return Scenario([], "a cat -I dot.png -c top 64 -s 2 -S 1\n")


def _flat_checkpoint(d: Path) -> Scenario:
    import torch
    from safetensors.torch import load_file, save_file

    from tests.fixtures.tiny_families import write_ldm_checkpoint

    file = write_ldm_checkpoint(tiny_model(d), d / "flat.safetensors")
    tensors = load_file(str(file))
    tensors["model.diffusion_model.input_blocks.0.0.weight"] = torch.ones(10)
    save_file(tensors, str(file))
    return Scenario(["--model", str(file)], LINE)


def _odd_controlnet(**shapes: tuple[int, ...]) -> Callable[[Path], Scenario]:
    """A single-file ControlNet of just these tensors (ones, by their names with `__` for
    `.`), and an edge image for it."""

    def prepare(d: Path) -> Scenario:
        import torch
        from safetensors.torch import save_file

        (d / "nets").mkdir()
        tensors = {k.replace("__", "."): torch.ones(v) for k, v in shapes.items()}
        save_file(tensors, str(d / "nets" / "odd.safetensors"))
        _png(d / "edges.png")
        line = "a cat --controlnet odd --control_image edges.png -s 1 -S 1\n"
        return Scenario(["--controlnet_dir", str(d / "nets")], line)

    return prepare


def _foreign_vae(d: Path) -> Scenario:
    """Another model's VAE copied in: one of 16 latent channels (as SD3's)."""
    from diffusers import AutoencoderKL

    folder = model_copy(d)
    config = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    AutoencoderKL.from_config({**config, "latent_channels": 16}).save_pretrained(folder / "vae")
    return Scenario(["--model", str(folder)], LINE)


def _foreign_text_encoder(d: Path) -> Scenario:
    """Another model's text encoder copied in: one 16 wide where the UNet reads 32."""
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = model_copy(d)
    config = CLIPTextConfig.from_pretrained(folder / "text_encoder")
    config.hidden_size, config.intermediate_size, config.num_attention_heads = 16, 32, 2
    CLIPTextModel(config).save_pretrained(folder / "text_encoder")
    return Scenario(["--model", str(folder)], LINE)


def _damaged_upscaler_config(part: str, file: str, **values: Any) -> Callable[[Path], Scenario]:
    def prepare(d: Path) -> Scenario:
        from tests.fixtures.tiny_models import build_test_upscaler

        edit_json(
            build_test_upscaler(d / "ups" / "sd-x2-latent-upscaler", 2) / part / file, **values
        )
        return Scenario(["--upscaler_dir", str(d / "ups")], "a cat -s 1 -S 1 -U 2\n")

    return prepare


def _damaged_controlnet_config(**values: Any) -> Callable[[Path], Scenario]:
    def prepare(d: Path) -> Scenario:
        from tests.fixtures.tiny_models import build_test_controlnet

        edit_json(
            build_test_controlnet(d / "nets" / "edges", tiny_model(d)) / "config.json", **values
        )
        _png(d / "edges.png")
        line = "a cat --controlnet edges --control_image edges.png -s 1 -S 1\n"
        return Scenario(["--controlnet_dir", str(d / "nets")], line)

    return prepare


def _overflows_in_float16(d: Path) -> Scenario:
    """The UNet's last convolution 10^5 times larger: its weights (up to 5890) are finite in
    float16, what they add up to is not; in float32 the same weights draw a (garish) picture."""
    scale(model_copy(d) / "unet" / "diffusion_pytorch_model.safetensors", "conv_out.weight", 1e5)
    return Scenario(["--model", str(d / "damaged"), "--precision", "float16"], LINE)


def _lora_overflows_when_merged(d: Path) -> Scenario:
    _lora(d, "loud", times=1200.0)  # up @ down ~ 10^5 a weight: past float16's 65504
    return Scenario(
        ["--lora_dir", str(d / "loras"), "--precision", "float16"],
        "a cat <lora:loud> -s 1 -S 1\n",
    )


def _lora_overflows_the_latents(d: Path) -> Scenario:
    _lora(d, "roar", times=4e12)  # finite weights of ~10^24: the activations are not
    return Scenario(["--lora_dir", str(d / "loras")], "a cat <lora:roar> -s 1 -S 1\n")


def _lora_overflows_with_intermediates(d: Path) -> Scenario:
    _lora(d, "roar", times=4e12)
    line = "a cat <lora:roar> -s 2 -S 1 --save_intermediates 1 --intermediates decode\n"
    return Scenario(["--lora_dir", str(d / "loras")], line)


def _no_nan_step_pictured(d: Path) -> None:
    _no_picture(d)
    steps = sorted(p.name for p in (d / "out").rglob("step-*.png"))
    assert steps in ([], ["step-0000.png"]), steps  # the starting noise at most


def _vae_overflows(d: Path) -> Scenario:
    file = model_copy(d) / "vae" / "diffusion_pytorch_model.safetensors"
    scale(file, "post_quant_conv.weight", 1e37)  # up to 4.7e36: float32 ends at 3.4e38
    return Scenario(["--model", str(d / "damaged")], LINE)


def _bidi_prompt(d: Path) -> Scenario:
    return Scenario([], "a cat \u202egnp.exe -s 1 -S 1\n")


def _raw_in_the_files(d: Path) -> None:
    from PIL import Image

    with Image.open(next((d / "out").glob("000001.*.png"))) as picture:
        assert "\u202egnp.exe" in picture.text["Dream"]  # type: ignore[attr-defined]
    assert "\u202egnp.exe" in (d / "out" / "invoke_log.txt").read_text(encoding="utf-8")


def _escape_in_the_outdir(d: Path) -> Scenario:
    return Scenario(["--outdir", str(d / "out\x1b]0;owned\x07")], LINE)


def _named_raw(d: Path) -> None:
    assert list((d / "out\x1b]0;owned\x07").glob("000001.1.png"))  # the folder is as given


def _bidi_in_an_init_file_name(d: Path) -> Scenario:
    _png(d / "x\u202egnp.png", Dream='"a red cat" -s 1 -S 1')
    return Scenario([], "-I x\u202egnp.png -s 2 -S 1\n")


def _escape_in_the_config_name(d: Path) -> Scenario:
    return Scenario(["--config", str(d / "x\x1b[2J\u202e.yaml")], LINE)


def _bidi_in_a_launch_default(d: Path) -> Scenario:
    return Scenario(["--sampler", "k_lms\u202e"], LINE)


def _damaged_config(part: str, file: str, **values: Any) -> Callable[[Path], Scenario]:
    def prepare(d: Path) -> Scenario:
        edit_json(model_copy(d) / part / file, **values)
        return Scenario(["--model", str(d / "damaged")], LINE)

    return prepare


def _damaged_vocabulary(d: Path) -> Scenario:
    (model_copy(d) / "tokenizer" / "vocab.json").write_text("{}", encoding="utf-8")
    return Scenario(["--model", str(d / "damaged")], LINE)


DAMAGED = "the file is damaged: download or convert it again"
NONFINITE = "gave NaN or infinite numbers; nothing was saved; likely cause:"

CASES: tuple[Hostile, ...] = (
    # -- NaN and infinity in the files ------------------------------------------------------------
    Hostile(
        "NaN in a model's UNet",
        "garbage",
        "`--model FOLDER` whose unet/ weights hold 12 NaN",
        _damaged_part("unet", "diffusion_pytorch_model.safetensors", NAN, 12),
        f"model {{d}}/damaged/unet/diffusion_pytorch_model.safetensors: 12 weights are NaN or "
        f"infinite; {DAMAGED}",
        check=_no_picture,
    ),
    Hostile(
        "infinity in a model's VAE",
        "garbage",
        "`--model FOLDER` whose vae/ weights hold an infinity",
        _damaged_part("vae", "diffusion_pytorch_model.safetensors", INF, 1),
        f"model {{d}}/damaged/vae/diffusion_pytorch_model.safetensors: 1 weight is NaN or "
        f"infinite; {DAMAGED}",
        check=_no_picture,
    ),
    Hostile(
        "NaN in a model's text encoder",
        "garbage",
        "`--model FOLDER` whose text_encoder/ weights hold NaN",
        _damaged_part("text_encoder", "model.safetensors", NAN, 7),
        f"model {{d}}/damaged/text_encoder/model.safetensors: 7 weights are NaN or infinite; "
        f"{DAMAGED}",
        check=_no_picture,
    ),
    Hostile(
        "NaN in a checkpoint file",
        "garbage",
        "`--model tiny.safetensors`, an original-layout checkpoint with NaN UNet weights",
        _damaged_checkpoint,
        f"model {{d}}/tiny.safetensors: 12 UNet weights are NaN or infinite; {DAMAGED}",
        check=_no_picture,
    ),
    Hostile(
        "NaN in a LoRA",
        "garbage",
        "`<lora:ink:0.8>` whose file holds NaN",
        _damaged_lora,
        "LoRA ink ({d}/loras/ink.safetensors): 3 weights are NaN or infinite; the file is "
        "damaged: download it again",
        check=_no_picture,
    ),
    Hostile(
        "NaN in an embedding",
        "garbage",
        "`<style>` whose embedding file holds NaN",
        _damaged_embedding,
        "embedding <style> ({d}/embeddings/style.safetensors): 2 values are NaN or infinite; "
        "the file is damaged: download it again",
        check=_no_picture,
    ),
    Hostile(
        "infinity in a ControlNet",
        "garbage",
        "`--controlnet edges` whose weights hold infinities",
        _damaged_controlnet,
        "ControlNet edges ({d}/nets/edges): 5 weights are NaN or infinite; the file is damaged: "
        "download it again",
        check=_no_picture,
    ),
    Hostile(
        "NaN in an upscaler",
        "garbage",
        "`-U 2` with an upscaler whose UNet holds NaN",
        _damaged_upscaler,
        f"upscaler {{d}}/ups/sd-x2-latent-upscaler/unet/diffusion_pytorch_model.safetensors: "
        f"12 weights are NaN or infinite; {DAMAGED}",
        check=_no_picture,
    ),
    # -- finite weights, numbers that overflow --------------------------------------------------
    Hostile(
        "a model that overflows float16",
        "garbage",
        "`--precision float16` with a model whose weights are finite but large",
        _overflows_in_float16,
        f"denoising {NONFINITE} float16 overflowing (try --precision float32), or the model "
        "itself (its weights or settings)",
        check=_no_picture,
    ),
    Hostile(
        "a LoRA that overflows float16 when merged",
        "garbage",
        "`<lora:loud>` whose merged weights pass 65504, in float16",
        _lora_overflows_when_merged,
        "LoRA loud: merged at 1 it makes … of model tiny's weights NaN or infinite in float16; "
        "try a lower weight, or --precision float32",
        check=_no_picture,
    ),
    Hostile(
        "a LoRA that overflows the latents",
        "garbage",
        "`<lora:roar>` with finite weights of 10^24",
        _lora_overflows_the_latents,
        f"denoising {NONFINITE} a LoRA (try a lower weight, or the line without it), or the "
        "model itself (its weights or settings)",
        check=_no_picture,
    ),
    Hostile(
        "a LoRA that overflows, intermediates decoded",
        "garbage",
        "`<lora:roar> --save_intermediates 1 --intermediates decode`: the first NaN step stops "
        "the line, blamed on denoising, not on the VAE that would decode it",
        _lora_overflows_with_intermediates,
        f"denoising {NONFINITE} a LoRA (try a lower weight, or the line without it), or the "
        "model itself (its weights or settings)",
        check=_no_nan_step_pictured,
    ),
    Hostile(
        "a VAE that overflows",
        "garbage",
        "`--model FOLDER` whose VAE decoder's weights are finite but near float32's limit",
        _vae_overflows,
        f"the VAE {NONFINITE} the model itself (its weights or settings)",
        check=_no_picture,
    ),
    Hostile(
        "an embedding of 10^30s",
        "garbage",
        "`<loud>`, an embedding whose vectors are finite but 10^30 long",
        _huge_embedding,
        f"denoising {NONFINITE} the embedding <loud> (try the line without it), or the model "
        "itself (its weights or settings)",
        check=_no_picture,
    ),
    # -- text that would drive the terminal ---------------------------------------------------
    Hostile(
        "right-to-left override in a prompt",
        "misreads",
        "a prompt with U+202E (`a cat \\u202egnp.exe`): the terminal would show `exe.png`",
        _bidi_prompt,
        r'[1] …000001.1.png: "a cat \u202egnp.exe" -s 1 -S 1 …',
        status=0,
        outcome="shown",
        check=_raw_in_the_files,
    ),
    Hostile(
        "escape sequence in the output folder's name",
        "misreads",
        "`--outdir` of a folder named `out` ESC `]0;owned` BEL (retitles the terminal)",
        _escape_in_the_outdir,
        r"[1] {d}/out\x1b]0;owned\x07/000001.1.png: …",
        status=0,
        outcome="shown",
        check=_named_raw,
    ),
    Hostile(
        "right-to-left override in an init image's name",
        "misreads",
        "`-I x\\u202egnp.png` with no prompt: its name is in the note",
        _bidi_in_an_init_file_name,
        r'prompt from x\u202egnp.png: "a red cat"',
        status=0,
        outcome="note",
    ),
    Hostile(
        "escape sequence in --config's name",
        "misreads",
        "`--config` of a file named with ESC `[2J` (clears the screen) and U+202E",
        _escape_in_the_config_name,
        r"invoke: --config: {d}/x\x1b[2J\u202e.yaml…",
        status=2,
    ),
    Hostile(
        "right-to-left override in a launch default",
        "misreads",
        "`--sampler k_lms\u202e` (a launch default, refused by click)",
        _bidi_in_a_launch_default,
        r"Error: launch default -A/--sampler: k_lms\u202e is not one of …",
        status=2,
    ),
    # -- configs that ended in `unexpected error` -------------------------------------------------
    Hostile(
        "no training timesteps",
        "misreads",
        "a model whose scheduler_config.json says num_train_timesteps 0 (was `unexpected error: "
        "ValueError`)",
        _damaged_config("scheduler", "scheduler_config.json", num_train_timesteps=0),
        "model {d}/damaged: scheduler/scheduler_config.json: num_train_timesteps 0 is not a whole "
        "number in 2..100000",
        check=_no_picture,
    ),
    Hostile(
        "a trillion training timesteps",
        "misreads",
        "num_train_timesteps 10^12 (was `unexpected error: RuntimeError: DefaultCPUAllocator`)",
        _damaged_config("scheduler", "scheduler_config.json", num_train_timesteps=10**12),
        "model {d}/damaged: scheduler/scheduler_config.json: num_train_timesteps 1000000000000 "
        "is not a whole number in 2..100000",
        check=_no_picture,
    ),
    Hostile(
        "unknown beta schedule",
        "misreads",
        "beta_schedule `bogus` (was `unexpected error: NotImplementedError`)",
        _damaged_config("scheduler", "scheduler_config.json", beta_schedule="bogus"),
        "model {d}/damaged: scheduler/scheduler_config.json: beta_schedule 'bogus' is not one "
        "of linear, scaled_linear, squaredcos_cap_v2",
        check=_no_picture,
    ),
    Hostile(
        "beta as text",
        "misreads",
        'beta_start `"x"` (was `unexpected error: TypeError`)',
        _damaged_config("scheduler", "scheduler_config.json", beta_start="x"),
        "model {d}/damaged: scheduler/scheduler_config.json: beta_start 'x' and beta_end 0.012 "
        "are not 0 < start <= end < 1",
        check=_no_picture,
    ),
    Hostile(
        "unknown prediction type",
        "misreads",
        "prediction_type `bogus` (was `unexpected error: ValueError`)",
        _damaged_config("scheduler", "scheduler_config.json", prediction_type="bogus"),
        "model {d}/damaged: scheduler/scheduler_config.json: prediction_type 'bogus' is not one "
        "of epsilon, v_prediction",
        check=_no_picture,
    ),
    Hostile(
        "a billion-cell UNet",
        "misreads",
        "unet/config.json sample_size 10^9 (was `unexpected error: RuntimeError: Storage size "
        "calculation overflowed`)",
        _damaged_config("unet", "config.json", sample_size=10**9),
        "model {d}/damaged: unet/config.json has sample_size 1000000000; it must be a whole "
        "number in 2..512 (latent cells a side: 64 for SD 1.5)",
        check=_no_picture,
    ),
    Hostile(
        "VAE scale as text",
        "misreads",
        'vae/config.json scaling_factor `"x"` (was `unexpected error: TypeError`)',
        _damaged_config("vae", "config.json", scaling_factor="x"),
        "model {d}/damaged: vae/config.json has scaling_factor 'x'; it must be a number above 0 "
        "(0.18215 for SD 1.5)",
        check=_no_picture,
    ),
    Hostile(
        "VAE without blocks",
        "misreads",
        "vae/config.json block_out_channels `[]` (was `unexpected error: IndexError`)",
        _damaged_config("vae", "config.json", block_out_channels=[]),
        "model {d}/damaged: cannot load vae/ (list index out of range)",
        check=_no_picture,
    ),
    Hostile(
        "empty vocabulary",
        "misreads",
        "tokenizer/vocab.json `{}` (was `unexpected error: Exception: Error while initializing "
        "BPE`)",
        _damaged_vocabulary,
        "model {d}/damaged: cannot load tokenizer/ (Error while initializing BPE: …)",
        check=_no_picture,
    ),
    Hostile(
        "LoRA of rank 0",
        "misreads",
        "a LoRA whose layer has no rows (was `unexpected error: IndexError`)",
        _odd_lora(down=_ones(0, 4, 3, 3), up=_ones(32, 0, 1, 1)),
        "LoRA odd ({d}/loras/odd.safetensors): layer conv_in has rank 0; the file is damaged",
        check=_no_picture,
    ),
    Hostile(
        "LoRA alpha of three numbers",
        "misreads",
        "a LoRA whose alpha is a vector (was `unexpected error: ValueError: only one element "
        "tensors`)",
        _odd_lora(down=_ones(2, 4, 3, 3), up=_ones(32, 2, 1, 1), alpha=_ones(3)),
        "LoRA odd ({d}/loras/odd.safetensors): layer conv_in has 3 numbers as its alpha, where "
        "it takes one; the file is damaged",
        check=_no_picture,
    ),
    Hostile(
        "LoRA of flat vectors",
        "misreads",
        "a LoRA whose weights are 1-D (was `unexpected error: IndexError: Dimension out of range`)",
        _odd_lora(down=_ones(36), up=_ones(32)),
        "LoRA odd ({d}/loras/odd.safetensors): layer conv_in has weights shaped (36,) and "
        "(32,), where a Linear layer's are 2-D and a convolution's 4-D; the file is damaged",
        check=_no_picture,
    ),
    Hostile(
        "LoRA of whole numbers",
        "misreads",
        "a LoRA whose weights are int32 (was merged as if they were weights)",
        _odd_lora(down=_ones(2, 4, 3, 3, dtype="int32"), up=_ones(32, 2, 1, 1, dtype="int32")),
        "LoRA odd ({d}/loras/odd.safetensors): layer conv_in has int32 weights, not "
        "floating-point ones; the file is damaged",
        check=_no_picture,
    ),
    Hostile(
        "another model's VAE",
        "misreads",
        "a model folder whose vae/ has 16 latent channels (was `unexpected error: RuntimeError: "
        "Given groups=1, weight of size [16, 16, 1, 1]...`)",
        _foreign_vae,
        "model {d}/damaged: its VAE has 16 latent channels and its UNet gives 4; Stable "
        "Diffusion's parts both have 4 (are vae/ and unet/ from the same model?)",
        check=_no_picture,
    ),
    Hostile(
        "another model's text encoder",
        "misreads",
        "a model folder whose text_encoder/ is 16 wide (was `unexpected error: RuntimeError: "
        "mat1 and mat2 shapes cannot be multiplied`)",
        _foreign_text_encoder,
        "model {d}/damaged: its UNet reads text 32 wide but its text encoder gives 16 (are "
        "unet/ and text_encoder/ from the same model?)",
        check=_no_picture,
    ),
    Hostile(
        "a VAE config asking for more layers",
        "misreads",
        "vae/config.json layers_per_block 2 for weights of 1 (was a picture from uninitialised "
        "memory, or `NaN` weights)",
        _damaged_config("vae", "config.json", layers_per_block=2),
        "model {d}/damaged: cannot load vae/ (config.json asks for 64 weights its weights file "
        "lacks, e.g. decoder.up_blocks.0.resnets.2.conv1.bias; the config or the file is from "
        "another model)",
        check=_no_picture,
    ),
    Hostile(
        "a text encoder config asking for more layers",
        "misreads",
        "text_encoder/config.json num_hidden_layers 3 for weights of 2 (was drawn with a random "
        "third layer, silently)",
        _damaged_config("text_encoder", "config.json", num_hidden_layers=3),
        "model {d}/damaged: cannot load text_encoder/ (config.json asks for 16 weights its "
        "weights file lacks, e.g. …; the config or the file is from another model)",
        check=_no_picture,
    ),
    Hostile(
        "ControlNet config of no conditioning blocks",
        "misreads",
        "a ControlNet folder whose conditioning_embedding_out_channels is `[]` (was `unexpected "
        "error: IndexError`)",
        _damaged_controlnet_config(conditioning_embedding_out_channels=[]),
        "ControlNet edges ({d}/nets/edges): its config.json has "
        "conditioning_embedding_out_channels [], not a list of whole numbers above 0; download "
        "it again",
        check=_no_picture,
    ),
    Hostile(
        "ControlNet config of a number for its blocks",
        "misreads",
        "block_out_channels `5` (was `unexpected error: TypeError`)",
        _damaged_controlnet_config(block_out_channels=5),
        "ControlNet edges ({d}/nets/edges): its config.json has block_out_channels 5, not a list "
        "of whole numbers above 0; download it again",
        check=_no_picture,
    ),
    Hostile(
        "ControlNet config of zero-width heads",
        "misreads",
        "attention_head_dim 0 (was `unexpected error: ZeroDivisionError`)",
        _damaged_controlnet_config(attention_head_dim=0),
        "ControlNet edges ({d}/nets/edges): cannot be loaded (integer division or modulo by "
        "zero); download it again",
        check=_no_picture,
    ),
    Hostile(
        "ControlNet config of another UNet",
        "misreads",
        "layers_per_block 0 (was loaded, warning of unused weights, then `unexpected error: "
        "RuntimeError` at the first step)",
        _damaged_controlnet_config(layers_per_block=0),
        "ControlNet edges ({d}/nets/edges): its config.json has layers_per_block 0 where the "
        "UNet it copies has 1; download it again",
        check=_no_picture,
    ),
    Hostile(
        "checkpoint whose first UNet weight is flat",
        "misreads",
        "`--model flat.safetensors` whose UNet input weight is 1-D (was `unexpected error: "
        "IndexError`)",
        _flat_checkpoint,
        "model {d}/flat.safetensors: does not fit flat.config (model.diffusion_model.input_"
        "blocks.0.0.weight is [10], not a convolution's 4-D weight)",
        check=_no_picture,
    ),
    Hostile(
        "ControlNet of a hint block alone",
        "misreads",
        "a ControlNet file with an input_hint_block and nothing else (was `unexpected error: "
        "KeyError`)",
        _odd_controlnet(input_hint_block__0__weight=(16, 3, 3, 3)),
        "ControlNet odd ({d}/nets/odd.safetensors): its layers cannot be read (KeyError: …); "
        "the file is damaged or not a ControlNet: download it again",
        check=_no_picture,
    ),
    Hostile(
        "ControlNet with a flat attention weight",
        "misreads",
        "a ControlNet file whose cross-attention weight is 1-D (was `unexpected error: "
        "IndexError`)",
        _odd_controlnet(
            controlnet_cond_embedding__conv_in__weight=(16, 3, 3, 3),
            down_blocks__0__attentions__0__transformer_blocks__0__attn2__to_k__weight=(7,),
        ),
        "ControlNet odd ({d}/nets/odd.safetensors): its layers cannot be read (IndexError: "
        "tuple index out of range); the file is damaged or not a ControlNet: download it again",
        check=_no_picture,
    ),
    Hostile(
        "upscaler of no training timesteps",
        "misreads",
        "`-U 2` with an upscaler whose scheduler says num_train_timesteps 0 (was `unexpected "
        "error: ValueError` after drawing)",
        _damaged_upscaler_config("scheduler", "scheduler_config.json", num_train_timesteps=0),
        "upscaler {d}/ups/sd-x2-latent-upscaler: scheduler/scheduler_config.json: "
        "num_train_timesteps 0 is not a whole number in 2..100000",
        check=_no_picture,
    ),
    Hostile(
        "upscaler VAE scale as text",
        "misreads",
        "`-U 2` with an upscaler whose vae/config.json scaling_factor is text (was `unexpected "
        "error: TypeError` after drawing)",
        _damaged_upscaler_config("vae", "config.json", scaling_factor="x"),
        "upscaler {d}/ups/sd-x2-latent-upscaler: vae/config.json has scaling_factor 'x'; it "
        "must be a number above 0",
        check=_no_picture,
    ),
    Hostile(
        "upscaler VAE without blocks",
        "misreads",
        "`-U 2` with an upscaler whose vae/config.json block_out_channels is `[]` (was "
        "`unexpected error: IndexError`)",
        _damaged_upscaler_config("vae", "config.json", block_out_channels=[]),
        "upscaler {d}/ups/sd-x2-latent-upscaler: cannot load it (list index out of range)",
        check=_no_picture,
    ),
    Hostile(
        "a one-pixel picture grown by --outcrop",
        "misreads",
        "`-I dot.png -c top 64` with a 1×1 dot.png (was `unexpected error: AssertionError`)",
        _one_pixel_outcrop,
        "init image dot.png: under 8×8 once rounded down to a multiple of 8; --outcrop needs "
        "an image at least that large",
        check=_no_picture,
    ),
    Hostile(
        "tokenizer without a length",
        "misreads",
        "tokenizer_config.json model_max_length 10^30, transformers' `unset` (was `unexpected "
        "error: OverflowError`): the text encoder's 77 is used",
        _damaged_config("tokenizer", "tokenizer_config.json", model_max_length=10**30),
        '[1] …000001.1.png: "a cat" -s 1 -S 1 …',
        status=0,
        outcome="shown",
    ),
    Hostile(
        "tokenizer of no tokens",
        "misreads",
        "tokenizer_config.json model_max_length 0",
        _damaged_config("tokenizer", "tokenizer_config.json", model_max_length=0),
        "model {d}/damaged: tokenizer/tokenizer_config.json has model_max_length 0; its text "
        "encoder takes 3..77 tokens",
        check=_no_picture,
    ),
)
