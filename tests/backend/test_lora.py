"""LoRA files merged into the tiny models, held to diffusers' own LoRA loader (with PEFT).

The oracle: diffusers' pipeline on a second copy of the same model, `load_lora_weights(file)`
then `fuse_lora(lora_scale=w)`; its weights must equal ours after use_loras. Then what a user
sees: the picture changes, weight 0 changes nothing, and the plain picture comes back bit for
bit once the LoRA is gone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from invoke.backend import lora as lora_module
from invoke.backend.job import Lora
from invoke.backend.loading import load_model
from invoke.backend.lora import original_to_diffusers, use_loras
from invoke.backend.model import Model
from invoke.backend.single_file import CONFIG_ROOT
from invoke.backend.speed import fuse_qkv
from invoke.errors import InvokeError
from tests.fixtures.tiny_families import unet_to_ldm
from tests.helpers import kohya_file, make_job, pixels, sd_pipeline, sdxl_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def state(model: Model) -> dict[str, torch.Tensor]:
    out = {}
    for attr in ("unet", "text_encoder", "text_encoder_2"):
        part = getattr(model, attr)
        if part is not None:
            out.update({f"{attr}.{k}": v.clone() for k, v in part.state_dict().items()})
    return out


def assert_same_weights(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys()
    worst = max((ours[k] - theirs[k]).abs().max().item() for k in ours)
    assert worst < 1e-6, worst


def diffusers_fused(pipe: Any, model: Model, file: Path, weight: float) -> dict[str, torch.Tensor]:
    pipe.load_lora_weights(str(file))
    pipe.fuse_lora(lora_scale=weight)
    pipe.unload_lora_weights()
    return state(model)


# -- the weights, against diffusers --------------------------------------------------------------


def test_kohya_sd1_file_merges_as_diffusers_fuses_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    ours = load_model(tiny_model_dir, device="cpu")
    file = kohya_file(ours, tmp_path / "style.safetensors", alpha=1.0)
    before = state(ours)
    use_loras(ours, (Lora("style", str(file), 0.8),))
    merged = state(ours)
    theirs = load_model(tiny_model_dir, device="cpu")
    assert_same_weights(merged, diffusers_fused(sd_pipeline(theirs), theirs, file, 0.8))
    changed = {k for k in before if not torch.equal(before[k], merged[k])}
    assert any(k.startswith("text_encoder.") for k in changed)
    assert any("resnets" in k and "conv1" in k for k in changed)  # a 3x3 convolution

    use_loras(ours, ())
    after = state(ours)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sdxl_file_with_original_unet_names_merges_as_diffusers_fuses_it(
    tiny_sdxl_dir: Path, tmp_path: Path
) -> None:
    ours = load_model(tiny_sdxl_dir, device="cpu")
    file = kohya_file(ours, tmp_path / "xl.safetensors", rank=3, alpha=2.0, ldm=True)
    assert any(k.startswith("lora_unet_input_blocks_") for k in torch_keys(file))
    use_loras(ours, (Lora("xl", str(file), 1.0),))
    theirs = load_model(tiny_sdxl_dir, device="cpu")
    expected = diffusers_fused(sdxl_pipeline(theirs, "k_euler"), theirs, file, 1.0)
    assert_same_weights(state(ours), expected)


def torch_keys(file: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        return list(handle.keys())


def test_diffusers_saved_file_with_its_alpha_in_metadata(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """diffusers/PEFT layout (unet.*.lora_A/lora_B, lora_alpha in the file's metadata), as
    save_lora_weights writes it: merges as the kohya file it was converted from."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    source = load_model(tiny_model_dir, device="cpu")
    kohya = kohya_file(source, tmp_path / "k.safetensors", rank=2, alpha=4.0)
    pipe = sd_pipeline(source)
    pipe.load_lora_weights(str(kohya), adapter_name="one")
    unet_config = source.unet.peft_config["one"].to_dict()
    StableDiffusionPipeline.save_lora_weights(
        tmp_path / "saved",
        unet_lora_layers=get_peft_model_state_dict(source.unet, adapter_name="one"),
        text_encoder_lora_layers=get_peft_model_state_dict(source.text_encoder, adapter_name="one"),
        unet_lora_adapter_metadata=unet_config,
        text_encoder_lora_adapter_metadata=source.text_encoder.peft_config["one"].to_dict(),
    )
    saved = tmp_path / "saved" / "pytorch_lora_weights.safetensors"
    keys = torch_keys(saved)
    assert any(k.startswith("unet.") and k.endswith("lora_A.weight") for k in keys)
    assert not any(k.endswith(".alpha") for k in keys)  # alpha only in the metadata

    from_kohya = load_model(tiny_model_dir, device="cpu")
    use_loras(from_kohya, (Lora("k", str(kohya), 0.5),))
    from_saved = load_model(tiny_model_dir, device="cpu")
    use_loras(from_saved, (Lora("saved", str(saved), 0.5),))
    assert_same_weights(state(from_saved), state(from_kohya))


@pytest.mark.parametrize(
    ("family", "original", "diffusers"),
    [
        ("sdxl", "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
         "down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"),
        ("sdxl", "input_blocks_8_1_proj_out", "down_blocks_2_attentions_1_proj_out"),
        ("sdxl", "output_blocks_5_1_transformer_blocks_9_ff_net_2",
         "up_blocks_1_attentions_2_transformer_blocks_9_ff_net_2"),
        ("sdxl", "middle_block_1_proj_in", "mid_block_attentions_0_proj_in"),
        ("sdxl", "input_blocks_1_0_in_layers_2", "down_blocks_0_resnets_0_conv1"),
        ("sdxl", "input_blocks_3_0_op", "down_blocks_0_downsamplers_0_conv"),
        ("sdxl", "output_blocks_2_2_conv", "up_blocks_0_upsamplers_0_conv"),
        ("sdxl", "output_blocks_8_0_skip_connection", "up_blocks_2_resnets_2_conv_shortcut"),
        ("sd-1", "output_blocks_2_1_conv", "up_blocks_0_upsamplers_0_conv"),
        ("sd-1", "output_blocks_11_1_proj_out", "up_blocks_3_attentions_2_proj_out"),
        ("sd-1", "down_blocks_0_attentions_0_proj_in", "down_blocks_0_attentions_0_proj_in"),
    ],
)  # fmt: skip
def test_original_unet_names(family: str, original: str, diffusers: str) -> None:
    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(CONFIG_ROOT / family / "unet")
    assert original_to_diffusers(original, _Config(config)) == diffusers


class _Config:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


@pytest.mark.parametrize("family", ["sd-1", "sdxl"])
def test_every_full_size_unet_layer_is_found_by_its_original_name(family: str) -> None:
    """Built on the meta device: each Linear/Conv2d's original name maps back to itself."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(CONFIG_ROOT / family / "unet")
        )
    names = [n for n, m in unet.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    original = unet_to_ldm({f"{n}.weight": torch.zeros(1) for n in names}, unet.config)
    for name, key in zip(names, original, strict=True):
        ldm = key.removeprefix("model.diffusion_model.").removesuffix(".weight")
        assert original_to_diffusers(ldm.replace(".", "_"), unet.config) == name.replace(".", "_")


# -- pictures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Model:
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def style(model: Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kohya_file(model, tmp_path_factory.mktemp("loras") / "style.safetensors", alpha=2.0)


def test_lora_changes_the_picture_and_leaving_it_out_restores_it_exactly(
    model: Model, style: Path
) -> None:
    plain = pixels(model.generate(make_job()))
    zero = pixels(model.generate(make_job(loras=(Lora("style", str(style), 0.0),))))
    styled = pixels(model.generate(make_job(loras=(Lora("style", str(style), 1.0),))))
    again = pixels(model.generate(make_job()))
    assert (zero == plain).all()
    assert abs(styled - plain).max() > 20
    assert (again == plain).all()


def test_the_same_loras_are_read_once_for_a_run_of_jobs(
    model: Model, style: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = []
    original = lora_module.read_lora
    monkeypatch.setattr(lora_module, "read_lora", lambda m, lo: reads.append(lo) or original(m, lo))
    job = make_job(steps=2, loras=(Lora("style", str(style), 0.7),))
    first = pixels(model.generate(job))
    second = pixels(model.generate(job))
    assert len(reads) == 1 and (first == second).all()
    model.generate(make_job(steps=2, loras=(Lora("style", str(style), 0.6),)))
    assert len(reads) == 2  # another strength is another merge
    use_loras(model, ())


def test_fused_qkv_projections_take_the_lora_as_separate_ones_do(
    tiny_model_dir: Path, style: Path
) -> None:
    """On CUDA q, k and v live inside one fused weight (speed.fuse_qkv); merging into the
    views must reach it, and restoring must too."""
    separate = load_model(tiny_model_dir, device="cpu")
    fused = load_model(tiny_model_dir, device="cpu")
    fuse_qkv(fused.unet)
    plain = pixels(fused.generate(make_job()))
    job = make_job(loras=(Lora("style", str(style), 1.0),))
    expected = pixels(separate.generate(job))
    assert abs(pixels(fused.generate(job)) - expected).max() <= 1
    assert (pixels(fused.generate(make_job())) == plain).all()


# -- files that cannot be used ---------------------------------------------------------------


def test_a_file_for_another_model_is_refused_and_changes_nothing(
    model: Model, tiny_sdxl_dir: Path, tmp_path: Path
) -> None:
    xl = load_model(tiny_sdxl_dir, device="cpu")
    file = kohya_file(xl, tmp_path / "xl.safetensors")
    before = state(model)
    with pytest.raises(InvokeError, match=r"LoRA xl .*another kind of model"):
        use_loras(model, (Lora("xl", str(file), 1.0),))
    assert all(torch.equal(v, state(model)[k]) for k, v in before.items())


def test_a_misfit_layer_after_good_ones_leaves_the_model_untouched(
    model: Model, style: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(style))
    key = next(k for k in tensors if k.endswith("lora_up.weight"))
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, *tensors[key].shape[1:])
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    use_loras(model, (Lora("style", str(style), 1.0),))
    merged = state(model)
    with pytest.raises(InvokeError, match="does not fit"):
        use_loras(model, (Lora("bad", str(tmp_path / "bad.safetensors"), 1.0),))
    assert all(torch.equal(v, state(model)[k]) for k, v in merged.items())
    use_loras(model, ())


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"lora_unet_x.hada_w1_a": torch.zeros(2, 2)}, "LoHa network, not a LoRA"),
        ({"lora_unet_x.lokr_w1": torch.zeros(2, 2)}, "LoKr network"),
        ({"something.else": torch.zeros(2)}, "holds no LoRA weights"),
        ({"lora_unet_down_blocks_0_x.lora_down.weight": torch.zeros(2, 2)}, "only half"),
    ],
)
def test_files_that_are_not_loras(
    model: Model, tmp_path: Path, tensors: dict[str, torch.Tensor], message: str
) -> None:
    save_file(tensors, str(tmp_path / "odd.safetensors"))
    with pytest.raises(InvokeError, match=message):
        use_loras(model, (Lora("odd", str(tmp_path / "odd.safetensors"), 1.0),))


def test_pickles_and_broken_files_are_one_line(model: Model, tmp_path: Path) -> None:
    (tmp_path / "old.ckpt").write_bytes(b"not read")
    with pytest.raises(InvokeError, match=r"only \.safetensors .*convert it"):
        use_loras(model, (Lora("old", str(tmp_path / "old.ckpt"), 1.0),))
    (tmp_path / "cut.safetensors").write_bytes(json.dumps({"a": 1}).encode())
    with pytest.raises(InvokeError, match="cannot be read") as caught:
        use_loras(model, (Lora("cut", str(tmp_path / "cut.safetensors"), 1.0),))
    assert "\n" not in str(caught.value)


def test_lora_hash_follows_the_weights_not_the_header(tmp_path: Path) -> None:
    from invoke.backend.hashing import lora_hash

    weights = {"lora_unet_x.lora_down.weight": torch.ones(2, 3)}
    save_file(weights, str(tmp_path / "a.safetensors"), metadata={"note": "one"})
    save_file(weights, str(tmp_path / "b.safetensors"), metadata={"note": "another, longer"})
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 3)}, str(tmp_path / "c.safetensors"))
    a, b, c = (lora_hash(tmp_path / f"{n}.safetensors") for n in "abc")
    assert a == b != c and len(a) == 12


def test_a_file_changed_on_disk_is_merged_again(model: Model, tmp_path: Path) -> None:
    """The session stamps each LoRA with its file's size and mtime: a retrained file under the
    same name is another LoRA, so the old merge is not kept."""
    from tests.helpers import kohya_file

    file = tmp_path / "retrained.safetensors"
    kohya_file(model, file, seed=1)
    first = pixels(model.generate(make_job(loras=(Lora("r", str(file), 1.0, (1, 1)),))))
    kohya_file(model, file, seed=2)
    second = pixels(model.generate(make_job(loras=(Lora("r", str(file), 1.0, (1, 2)),))))
    assert abs(first - second).max() > 0
    use_loras(model, ())
