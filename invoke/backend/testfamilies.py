"""Tiny random models of the other families, for tests: SDXL base and refiner, Kandinsky 2.2.

Each is a diffusers folder laid out as the real model's (same classes, same model_index.json
keys), with a few-thousand-parameter architecture shaped after diffusers' own test fixtures, built
offline in about a second. Random weights: never for pictures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from invoke.backend.clip_vocab import BOS, EOS, MAX_LENGTH, build_clip_tokenizer
from invoke.backend.testmodel import SD15_SCHEDULER, WORDS

TEXT_DIM = 32

# SDXL's published scheduler: SD's noise schedule, Euler by default, "leading" spacing.
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


def _tokenizer(folder: Path, pad: str = EOS) -> dict[str, int]:
    build_clip_tokenizer(folder, WORDS)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["pad_token"] = pad  # SD 2.x and SDXL's OpenCLIP tokenizers pad with "!"
    config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return json.loads((folder / "vocab.json").read_text(encoding="utf-8"))


def _text_config(vocab: dict[str, int], pad: str, act: str = "quick_gelu") -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=TEXT_DIM,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=TEXT_DIM,
        hidden_act=act,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[pad],
    )


def _save_transformers(model: Any, folder: Path) -> None:
    """config.json + model.safetensors, without transformers' progress bar."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors", {"format": "pt"})


def _vae(scaling_factor: float, force_upcast: bool) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),  # 8x, as every SD/SDXL VAE
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=scaling_factor,
        force_upcast=force_upcast,
    )


def build_test_sdxl(
    path: str | Path, seed: int = 0, refiner: bool = False, inpainting: bool = False
) -> Path:
    """A StableDiffusionXLPipeline folder (or, `refiner`, a StableDiffusionXLImg2ImgPipeline one
    with only the second text encoder and aesthetic-score time ids; or, `inpainting`, a
    StableDiffusionXLInpaintPipeline one with a 9-channel UNet); native size 64x64."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    vocab_2 = _tokenizer(out / "tokenizer_2", pad="!")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if not refiner:
            vocab = _tokenizer(out / "tokenizer")
            _save_transformers(CLIPTextModel(_text_config(vocab, EOS)), out / "text_encoder")
        _save_transformers(
            CLIPTextModelWithProjection(_text_config(vocab_2, "!", act="gelu")),
            out / "text_encoder_2",
        )
        time_ids = 5 if refiner else 6
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=9 if inpainting else 4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_DIM if refiner else 2 * TEXT_DIM,
            attention_head_dim=(4, 8),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=time_ids * 8 + TEXT_DIM,
            norm_num_groups=8,
        )
        vae = _vae(0.13025, force_upcast=True)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SDXL_SCHEDULER, indent=2))
    from invoke.backend.families.sdxl import sdxl_index

    index = sdxl_index(refiner, inpainting)
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out


def build_test_kandinsky(path: str | Path, seed: int = 0) -> Path:
    """A KandinskyV22CombinedPipeline folder (prior + decoder), images in multiples of 4 px."""
    from diffusers import (
        DDIMScheduler,
        KandinskyV22CombinedPipeline,
        PriorTransformer,
        UnCLIPScheduler,
        UNet2DConditionModel,
        VQModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer(out / "prior_tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(out / "prior_tokenizer", local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prior = PriorTransformer(
            num_attention_heads=2, attention_head_dim=12, embedding_dim=TEXT_DIM, num_layers=1
        )
        # Random clip statistics would scale the embeddings to nothing; the real ones are O(1).
        prior.clip_std = torch.nn.Parameter(torch.ones(prior.clip_std.shape))
        text_encoder = CLIPTextModelWithProjection(_text_config(vocab, EOS, act="gelu"))
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=TEXT_DIM,
                image_size=28,
                projection_dim=TEXT_DIM,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                patch_size=14,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=8,  # learned variance, as the real decoder
            addition_embed_type="image",
            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            block_out_channels=(32, 64),
            layers_per_block=1,
            encoder_hid_dim=TEXT_DIM,
            encoder_hid_dim_type="image_proj",
            cross_attention_dim=TEXT_DIM,
            attention_head_dim=4,
            resnet_time_scale_shift="scale_shift",
            class_embed_type=None,
        )
        movq = VQModel(
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
            up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
            norm_type="spatial",
            num_vq_embeddings=12,
            vq_embed_dim=4,
        )
    schedule = {k: v for k, v in SD15_SCHEDULER.items() if not k.startswith("_")}
    pipe = KandinskyV22CombinedPipeline(
        unet=unet,
        scheduler=DDIMScheduler.from_config({**schedule, "beta_schedule": "linear"}),
        movq=movq,
        prior_prior=prior,
        prior_image_encoder=image_encoder,
        prior_text_encoder=text_encoder,
        prior_tokenizer=tokenizer,
        prior_scheduler=UnCLIPScheduler(
            variance_type="fixed_small_log",
            prediction_type="sample",
            num_train_timesteps=1000,
            clip_sample=True,
            clip_sample_range=10.0,
        ),
        prior_image_processor=CLIPImageProcessor(crop_size=28, size=28, resample=3),
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


# -- the original (LDM) checkpoint layout, for single-file tests --------------------------------

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _rename(key: str, prefixes: list[tuple[str, str, dict[str, str]]]) -> str:
    for old, new, inner in prefixes:
        if key.startswith(old):
            rest = key[len(old) :]
            for a, b in inner.items():
                if rest.startswith(a + "."):
                    rest = b + rest[len(a) :]
                    break
            return new + rest
    return key


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers UNet2DConditionModel state dict in the original `model.diffusion_model.` keys
    (the inverse of diffusers' convert_ldm_unet_checkpoint, for the block types SD uses)."""
    per = config["layers_per_block"] + 1
    blocks = len(config["block_out_channels"])
    prefixes: list[tuple[str, str, dict[str, str]]] = [
        ("time_embedding.linear_1.", "time_embed.0.", {}),
        ("time_embedding.linear_2.", "time_embed.2.", {}),
        ("add_embedding.linear_1.", "label_emb.0.0.", {}),
        ("add_embedding.linear_2.", "label_emb.0.2.", {}),
        ("conv_in.", "input_blocks.0.0.", {}),
        ("conv_norm_out.", "out.0.", {}),
        ("conv_out.", "out.2.", {}),
        ("mid_block.attentions.0.", "middle_block.1.", {}),
        ("mid_block.resnets.0.", "middle_block.0.", _RESNET),
        ("mid_block.resnets.1.", "middle_block.2.", _RESNET),
    ]
    for i in range(blocks):
        for j in range(per - 1):
            slot = f"input_blocks.{i * per + j + 1}"
            prefixes.append((f"down_blocks.{i}.resnets.{j}.", f"{slot}.0.", _RESNET))
            prefixes.append((f"down_blocks.{i}.attentions.{j}.", f"{slot}.1.", {}))
        if i < blocks - 1:
            slot = f"input_blocks.{(i + 1) * per}.0.op."
            prefixes.append((f"down_blocks.{i}.downsamplers.0.conv.", slot, {}))
        attention = "CrossAttn" in config["up_block_types"][i]
        for j in range(per):
            prefixes.append(
                (f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{i * per + j}.0.", _RESNET)
            )
            prefixes.append(
                (f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{i * per + j}.1.", {})
            )
        if i < blocks - 1:
            slot = f"output_blocks.{i * per + per - 1}.{2 if attention else 1}."
            prefixes.append((f"up_blocks.{i}.upsamplers.0.", slot, {}))
    return {"model.diffusion_model." + _rename(k, prefixes): v for k, v in state.items()}


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL state dict in the original `first_stage_model.` keys."""
    blocks = len(config["block_out_channels"])
    resnet = {"conv_shortcut": "nin_shortcut"}
    prefixes: list[tuple[str, str, dict[str, str]]] = []
    for part in ("encoder", "decoder"):
        prefixes += [
            (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", _VAE_ATTENTION),
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", resnet),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", resnet),
            (f"{part}.conv_norm_out.", f"{part}.norm_out.", {}),
        ]
    for i in range(blocks):
        up = blocks - 1 - i
        prefixes += [
            (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.", {}),
            (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{up}.upsample.", {}),
        ]
        for j in range(config["layers_per_block"] + 1):
            prefixes += [
                (f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.", resnet),
                (f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{up}.block.{j}.", resnet),
            ]
    out = {}
    for key, value in state.items():
        new = _rename(key, prefixes)
        if ".mid.attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # the original attention projections are 1x1 convs
        out["first_stage_model." + new] = value
    return out


def open_clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A CLIPTextModelWithProjection state dict in OpenCLIP's keys (SD 2.x, SDXL): q, k and v
    in one in_proj, the projection transposed (the inverse of diffusers'
    convert_open_clip_checkpoint)."""
    renames = {
        "embeddings.token_embedding.weight": "token_embedding.weight",
        "embeddings.position_embedding.weight": "positional_embedding",
        "final_layer_norm.": "ln_final.",
    }
    inner = {
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
        "self_attn.out_proj": "attn.out_proj",
    }
    out: dict[str, torch.Tensor] = {}
    projections: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix("text_model.")
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
            continue
        if key.startswith("encoder.layers."):
            layer, rest = key.removeprefix("encoder.layers.").split(".", 1)
            if rest.startswith("self_attn.") and rest[len("self_attn.")] in "qkv":
                which, kind = rest.removeprefix("self_attn.").split("_proj.")
                projections.setdefault(f"{layer}.{kind}", {})[which] = value
                continue
            for a, b in inner.items():
                rest = rest.replace(a, b)
            out[f"{prefix}transformer.resblocks.{layer}.{rest}"] = value
            continue
        for a, b in renames.items():
            if key.startswith(a):
                key = b + key[len(a) :]
        out[prefix + key] = value
    for name, qkv in projections.items():
        layer, kind = name.split(".")
        fused = torch.cat([qkv["q"], qkv["k"], qkv["v"]])
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = fused
    return out


def write_ldm_checkpoint(folder: str | Path, file: str | Path) -> Path:
    """One original-layout checkpoint (.safetensors, or a pickle .ckpt) of an SD 1.x or SDXL
    (base or refiner) diffusers folder, plus `<stem>.config/`: that folder's configs and
    tokenizers, no weights."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder, file = Path(folder), Path(file)
    unet_config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    vae_config = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
    state = unet_to_ldm(
        load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"), unet_config
    )
    state |= vae_to_ldm(
        load_file(folder / "vae" / "diffusion_pytorch_model.safetensors"), vae_config
    )
    sdxl = (folder / "text_encoder_2").is_dir()
    parts = ["unet", "vae", "scheduler"]
    if (folder / "text_encoder").is_dir():
        text = load_file(folder / "text_encoder" / "model.safetensors")
        prefix = "conditioner.embedders.0" if sdxl else "cond_stage_model"
        prefix += ".transformer.text_model."
        state |= {prefix + k.removeprefix("text_model."): v for k, v in text.items()}
        parts += ["text_encoder", "tokenizer"]
    if sdxl:
        text = load_file(folder / "text_encoder_2" / "model.safetensors")
        embedder = 1 if (folder / "text_encoder").is_dir() else 0
        state |= open_clip_to_ldm(text, f"conditioner.embedders.{embedder}.model.")
        parts += ["text_encoder_2", "tokenizer_2"]
    state = {k: v.contiguous() for k, v in state.items()}
    file.parent.mkdir(parents=True, exist_ok=True)
    if file.suffix == ".safetensors":
        save_file(state, file)
    else:
        torch.save({"state_dict": state}, file)
    config = file.with_name(file.stem + ".config")
    for part in parts:
        (config / part).mkdir(parents=True, exist_ok=True)
        for each in (folder / part).iterdir():
            if each.suffix in (".json", ".txt"):
                shutil.copy(each, config / part / each.name)
    shutil.copy(folder / "model_index.json", config / "model_index.json")
    return file


def controlnet_to_ldm(
    state: dict[str, torch.Tensor], unet_config: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """A diffusers ControlNetModel state dict in the original `control_model.` keys of
    lllyasviel's files: the UNet encoder's keys as in unet_to_ldm, the zero convolutions as
    zero_convs/middle_block_out and the conditioning encoder as input_hint_block (8x layout)."""
    prefix = "controlnet_cond_embedding."
    hint: list[tuple[str, str, dict[str, str]]] = [
        (f"{prefix}conv_in.", "input_hint_block.0.", {}),
        (f"{prefix}conv_out.", "input_hint_block.14.", {}),
        ("controlnet_mid_block.", "middle_block_out.0.", {}),
    ]
    hint += [(f"{prefix}blocks.{k}.", f"input_hint_block.{2 * k + 2}.", {}) for k in range(6)]
    hint += [(f"controlnet_down_blocks.{k}.", f"zero_convs.{k}.0.", {}) for k in range(16)]
    own = {_rename(k, hint): v for k, v in state.items() if k.startswith(("controlnet_",))}
    encoder = {k: v for k, v in state.items() if not k.startswith("controlnet_")}
    unet = unet_to_ldm(encoder, unet_config)
    renamed = {k.removeprefix("model.diffusion_model."): v for k, v in unet.items()}
    return {f"control_model.{k}": v for k, v in {**renamed, **own}.items()}
