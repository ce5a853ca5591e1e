"""Single checkpoint files in the original LDM layout, loaded offline; the shipped CLIP vocab."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from invoke.backend.job import Job, Noise
from invoke.backend.loading import load_model
from invoke.backend.single_file import CONFIG_ROOT, TOKENIZER_FILES, clip_tokenizer
from invoke.errors import ModelError
from invoke.line.prompt_syntax import parse_prompt
from tests.fixtures.tiny_families import write_ldm_checkpoint
from tests.helpers import pixels

SAMPLES = (
    "a photo of a cat",
    "A Portrait of an old man, oil on canvas, by Rembrandt; dramatic lighting!!",
    "it's 2024 -- cyberpunk city at night, neon signs 'OPEN 24/7' & rain",
    "über café naïve façade",
    "a very    spaced   prompt\twith\ttabs",
    "emoji 🐱 and symbols @#$%^*()",
)


@pytest.fixture(scope="module")
def single_file(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("single")
    return write_ldm_checkpoint(tiny_model_dir, folder / "tiny-ldm.safetensors")


def job() -> Job:
    return Job(parse_prompt("a red circle [blue]"), 2, 7.5, "k_euler", 64, 64, (Noise(5),))


def test_ldm_file_loads_offline_as_the_folder_it_came_from(
    tiny_model_dir: Path, single_file: Path
) -> None:
    """Every weight arrives under its diffusers name; the same seed makes the same image."""
    folder = load_model(tiny_model_dir, device="cpu")
    model = load_model(single_file, device="cpu")
    assert (model.family, model.name, model.path) == ("sd-1", "tiny-ldm", single_file)
    for part in ("unet", "vae", "text_encoder"):
        theirs, ours = getattr(folder, part).state_dict(), getattr(model, part).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), part
    assert np.array_equal(
        np.asarray(model.generate(job())[0]), np.asarray(folder.generate(job())[0])
    )


def test_checkpoint_missing_weights_names_them(single_file: Path, tmp_path: Path) -> None:
    state = load_file(single_file)
    del state["model.diffusion_model.out.2.weight"]
    broken = tmp_path / "broken.safetensors"
    save_file(state, broken)
    (tmp_path / "broken.config").symlink_to(single_file.with_name("tiny-ldm.config"))
    with pytest.raises(
        ModelError, match=r"broken.safetensors: does not fit .*weights missing"
    ) as err:
        load_model(broken, device="cpu")
    assert "\n" not in str(err.value)


def test_file_that_is_not_a_stable_diffusion_checkpoint(tmp_path: Path) -> None:
    other = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.alpha": torch.ones(1)}, other)
    with pytest.raises(
        ModelError, match="not a Stable Diffusion checkpoint in the original layout"
    ):
        load_model(other, device="cpu")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(ModelError, match=r"notes.txt: .txt is not a model file"):
        load_model(notes, device="cpu")


def test_family_from_the_original_yaml_beside_the_file(tmp_path: Path) -> None:
    from invoke.backend.families import checkpoint_family
    from invoke.backend.single_file import v_prediction_from_yaml

    ckpt = tmp_path / "v2-1_768.safetensors"
    assert v_prediction_from_yaml(ckpt) is None
    ckpt.with_suffix(".yaml").write_text("model:\n  params:\n    parameterization: v\n")
    assert v_prediction_from_yaml(ckpt) is True
    sd2 = ["cond_stage_model.model.token_embedding.weight"]
    assert checkpoint_family(sd2, v_prediction=False) == "sd-2"
    assert checkpoint_family(sd2, v_prediction=None) == "sd-2-v"
    assert checkpoint_family(["conditioner.embedders.1.model.positional_embedding"]) == "sdxl"
    assert checkpoint_family(["conditioner.embedders.0.model.text_projection"]) == "sdxl-refiner"


# -- the shipped CLIP vocabulary ------------------------------------------------------------------


def test_shipped_tokenizers_give_clips_ids() -> None:
    """CLIP ViT-L/14's published ids for a known sentence, and each family's padding token."""
    sd1 = clip_tokenizer(CONFIG_ROOT / "sd-1" / "tokenizer")
    assert sd1("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(sd1) == 49408 and sd1.pad_token_id == 49407
    assert clip_tokenizer(CONFIG_ROOT / "sd-2" / "tokenizer").pad_token_id == 0  # "!"
    assert clip_tokenizer(CONFIG_ROOT / "sdxl" / "tokenizer_2").pad_token_id == 0
    assert (TOKENIZER_FILES / "vocab.json").stat().st_size < 2_000_000


def _open_clip_tokenizer_module() -> types.ModuleType:
    """open_clip's tokenizer.py, from an installed open_clip or OPEN_CLIP_DIR (an unpacked wheel).

    Loaded on its own (the package __init__ pulls in timm and more). Without ftfy, its text fixer
    is the identity: the sample sentences need no fixing.
    """
    spec = importlib.util.find_spec("open_clip")
    folder = Path(os.environ.get("OPEN_CLIP_DIR", "")) / "open_clip"
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / "tokenizer.py").is_file():
        pytest.skip(
            "open_clip is not installed: always skipped with the `.[dev]` install, which does not"
            " carry open_clip (set OPEN_CLIP_DIR to an unpacked open_clip wheel to run it)"
        )
    if importlib.util.find_spec("ftfy") is None:
        sys.modules.setdefault("ftfy", types.SimpleNamespace(fix_text=lambda text: text))  # type: ignore[arg-type]
    module_spec = importlib.util.spec_from_file_location(
        "open_clip_tokenizer", folder / "tokenizer.py"
    )
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_shipped_vocabulary_tokenizes_as_open_clip() -> None:
    """Needs open_clip, which no extra of ours installs: with the `.[dev]` install this test is
    always skipped. Run it by pointing OPEN_CLIP_DIR at an unpacked open_clip wheel."""
    module = _open_clip_tokenizer_module()
    bpe = Path(module.default_bpe())
    theirs = module.SimpleTokenizer(str(bpe))
    ours = clip_tokenizer(CONFIG_ROOT / "sd-1" / "tokenizer")
    for text in SAMPLES:
        assert ours(text).input_ids[1:-1] == theirs.encode(text), text
    # The shipped files are exactly what the script makes from that BPE file.
    with gzip.open(bpe) as stream:
        merges = stream.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    shipped = (TOKENIZER_FILES / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert shipped == merges


# -- the full-size architecture (slow: GBs of random weights) -------------------------------------


@pytest.mark.slow
def test_full_size_sd15_ldm_checkpoint_loads_through_the_shipped_config(tmp_path: Path) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.fixtures.tiny_families import unet_to_ldm, vae_to_ldm

    config = CONFIG_ROOT / "sd-1"
    unet_config = dict(UNet2DConditionModel.load_config(config / "unet"))
    vae_config = dict(AutoencoderKL.load_config(config / "vae"))
    unet = UNet2DConditionModel.from_config(unet_config)
    vae = AutoencoderKL.from_config(vae_config)
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder"))
    state = unet_to_ldm(unet.state_dict(), unet_config) | vae_to_ldm(vae.state_dict(), vae_config)
    prefix = "cond_stage_model.transformer.text_model."
    state |= {prefix + k.removeprefix("text_model."): v for k, v in text.state_dict().items()}
    file = tmp_path / "sd15-random.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, file)
    model = load_model(file, device="cpu", precision="float32")
    assert model.family == "sd-1" and model.native_size == 512
    got = model.unet.state_dict()
    assert all(torch.equal(got[k], v) for k, v in unet.state_dict().items())
    assert model.model_hash == hashlib.sha256(file.read_bytes()).hexdigest()


def test_checkpoint_of_another_size_than_its_config(single_file: Path, tmp_path: Path) -> None:
    """Without its own config folder the tiny checkpoint meets SD 1.5's shipped one."""
    alone = Path(shutil.copy(single_file, tmp_path / "alone.safetensors"))
    with pytest.raises(ModelError, match=r"alone.safetensors: does not fit sd-1 \(UNet2DCondition"):
        load_model(alone, device="cpu")


@pytest.mark.parametrize(
    ("family", "parameters"),
    [("sd-1", 859_520_964), ("sd-2", 865_910_724), ("sdxl", 2_567_463_684)],
)
def test_shipped_unet_configs_build_the_published_architectures(
    family: str, parameters: int
) -> None:
    """Built on the meta device (no memory): a wrong number in a config changes the count."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(CONFIG_ROOT / family / "unet")
        )
    assert sum(p.numel() for p in unet.parameters()) == parameters


def test_another_vae_from_a_folder_or_an_original_layout_file(
    tiny_model_dir: Path, tmp_path: Path, single_file: Path
) -> None:
    from tests.fixtures.tiny_families import vae_to_ldm
    from tests.fixtures.tiny_models import build_test_model

    other = build_test_model(tmp_path / "other", seed=1)
    expected = load_model(other, device="cpu").vae.state_dict()
    vae_file = tmp_path / "other-vae.safetensors"
    config = json.loads((other / "vae" / "config.json").read_text())
    state = vae_to_ldm(load_file(other / "vae" / "diffusion_pytorch_model.safetensors"), config)
    save_file({k.removeprefix("first_stage_model."): v for k, v in state.items()}, vae_file)
    for vae in (other, other / "vae", vae_file):
        for source in (tiny_model_dir, single_file):
            got = load_model(source, device="cpu", vae=vae).vae.state_dict()
            assert all(torch.equal(got[k], v) for k, v in expected.items()), (vae, source)
    with pytest.raises(ModelError, match=r"vae .*nowhere: no such folder or file"):
        load_model(tiny_model_dir, device="cpu", vae=tmp_path / "nowhere")


@pytest.mark.parametrize("refiner", [False, True], ids=["sdxl", "sdxl-refiner"])
def test_sdxl_checkpoint_in_the_sgm_layout_loads_as_its_folder(
    tmp_path: Path, refiner: bool, request: pytest.FixtureRequest
) -> None:
    """conditioner.embedders.* (CLIP-L, OpenCLIP bigG with fused in_proj) back to both encoders."""
    from PIL import Image

    folder = request.getfixturevalue("tiny_refiner_dir" if refiner else "tiny_sdxl_dir")
    file = write_ldm_checkpoint(folder, tmp_path / "xl.safetensors")
    theirs, ours = load_model(folder, device="cpu"), load_model(file, device="cpu")
    assert ours.family == theirs.family == ("sdxl-refiner" if refiner else "sdxl")
    assert ours.force_zeros_for_empty_prompt == theirs.force_zeros_for_empty_prompt
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(theirs, part) is None:
            assert getattr(ours, part) is None
            continue
        a, b = getattr(theirs, part).state_dict(), getattr(ours, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    init = Image.new("RGB", (64, 64), (200, 40, 90))
    line = Job(
        parse_prompt("a red circle [blue]"), 2, 7.5, "k_euler", 64, 64, (Noise(5),), init, None, 1.0
    )
    # Equal weights, but the folder's tensors are memory-mapped at the file's (unaligned)
    # offsets and the converted ones are fresh allocations: the CPU kernels then round the
    # pooled text embedding differently in its last bit (2e-7 measured), which can move a pixel
    # by one level.
    difference = pixels(ours.generate(line)) - pixels(theirs.generate(line))
    assert np.abs(difference).max() <= 1


def test_sd2_checkpoint_with_an_open_clip_text_encoder(
    tiny_model_dir: Path, single_file: Path, tmp_path: Path
) -> None:
    """cond_stage_model.model.* (OpenCLIP's layout) is SD 2.x; its .yaml says epsilon or v."""
    from tests.fixtures.tiny_families import open_clip_to_ldm

    state = {k: v for k, v in load_file(single_file).items() if not k.startswith("cond_stage")}
    text = load_file(tiny_model_dir / "text_encoder" / "model.safetensors")
    state |= open_clip_to_ldm(text, "cond_stage_model.model.")
    file = tmp_path / "sd2.safetensors"
    save_file(state, file)
    shutil.copytree(single_file.with_name("tiny-ldm.config"), tmp_path / "sd2.config")
    (tmp_path / "sd2.yaml").write_text("model:\n  params:\n    parameterization: eps\n")
    model = load_model(file, device="cpu")
    assert model.family == "sd-2"
    expected = load_model(tiny_model_dir, device="cpu").text_encoder.state_dict()
    got = model.text_encoder.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
