"""Write configs/model-configs/: what loading a single checkpoint file offline needs besides it.

A single .safetensors checkpoint holds weights only. To build the diffusers parts around them
without the network, invoke ships, per family, the diffusers-format config folder of the model it
came from (model_index.json, unet/vae/text encoder config.json, scheduler_config.json, tokenizer
settings): the values below are those of the published diffusers repositories
(stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1(-base), stable-diffusion-xl-base-1.0,
stable-diffusion-xl-refiner-1.0). No weights.

The CLIP BPE vocabulary (shared by every family, written once to clip-tokenizer/) is built from
the copy PyPI's open-clip-torch ships, `open_clip/bpe_simple_vocab_16e6.txt.gz`:

    pip download open-clip-torch --no-deps -d /tmp/oc && unzip -o /tmp/oc/*.whl -d /tmp/oc/x
    python scripts/make_model_configs.py --bpe /tmp/oc/x/open_clip/bpe_simple_vocab_16e6.txt.gz

tests/backend/test_single_file.py checks the result tokenizes as open_clip's SimpleTokenizer.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

from invoke.backend.families.sd import sd_index
from invoke.backend.families.sdxl import sdxl_index

OUT = Path(__file__).resolve().parent.parent / "configs" / "model-configs"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MERGES = 49152 - 256 - 2  # CLIP's vocabulary: 256 bytes x 2 (</w>), the merges, 2 specials


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def write_tokenizer_files(bpe_gz: Path, out: Path) -> None:
    """vocab.json + merges.txt in CLIPTokenizer's format, from open_clip's BPE merge list."""
    with gzip.open(bpe_gz) as stream:
        lines = stream.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : MERGES + 1]]
    assert all(len(m) == 2 for m in merges), "unexpected line in the BPE file"
    # The byte symbols in the table's order (printable bytes first), as CLIP's own vocabulary.
    base = list(bytes_to_unicode().values())
    vocab = [*base, *(s + "</w>" for s in base), *("".join(m) for m in merges), BOS, EOS]
    out.mkdir(parents=True, exist_ok=True)
    encoder = {token: i for i, token in enumerate(vocab)}
    (out / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (out / "merges.txt").write_text(merges_text, encoding="utf-8")


def tokenizer_settings(pad: str) -> dict[str, Any]:
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": pad,
    }


def clip_l(projection: bool = False) -> dict[str, Any]:
    """OpenAI CLIP ViT-L/14's text tower (SD 1.x, SDXL's first encoder)."""
    return {
        "architectures": ["CLIPTextModelWithProjection" if projection else "CLIPTextModel"],
        "model_type": "clip_text_model",
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "quick_gelu",
        "hidden_size": 768,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "pad_token_id": 1,
        "projection_dim": 768,
        "vocab_size": 49408,
    }


def open_clip_h() -> dict[str, Any]:
    """OpenCLIP ViT-H/14's text tower as SD 2.x uses it (the penultimate layer: 23 of 24)."""
    return {
        **clip_l(),
        "hidden_act": "gelu",
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_attention_heads": 16,
        "num_hidden_layers": 23,
        "projection_dim": 512,
    }


def open_clip_bigg() -> dict[str, Any]:
    """OpenCLIP ViT-bigG/14's text tower with its projection (SDXL's second encoder)."""
    return {
        **clip_l(projection=True),
        "hidden_act": "gelu",
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_attention_heads": 20,
        "num_hidden_layers": 32,
        "projection_dim": 1280,
    }


def vae(sample_size: int, scaling_factor: float = 0.18215, **extra: Any) -> dict[str, Any]:
    return {
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
        **extra,
    }


def sd_unet(**extra: Any) -> dict[str, Any]:
    return {
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        **extra,
    }


def sd_scheduler(cls: str = "PNDMScheduler", **extra: Any) -> dict[str, Any]:
    return {
        "_class_name": cls,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
        **extra,
    }


SD2_UNET = {"attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024}
SD2_UNET["use_linear_projection"] = True
SDXL_SCHEDULER = sd_scheduler(
    "EulerDiscreteScheduler",
    interpolation_type="linear",
    prediction_type="epsilon",
    sample_max_value=1.0,
    timestep_spacing="leading",
    use_karras_sigmas=False,
)


def sdxl_unet(refiner: bool) -> dict[str, Any]:
    common = {
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "addition_embed_type": "text_time",
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": 256,
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 128,
        "use_linear_projection": True,
    }
    if refiner:
        return {
            **common,
            "attention_head_dim": [6, 12, 24, 24],
            "block_out_channels": [384, 768, 1536, 1536],
            "cross_attention_dim": 1280,
            "down_block_types": [
                "DownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ],
            "up_block_types": [
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "UpBlock2D",
            ],
            "projection_class_embeddings_input_dim": 2560,  # 5 time ids x 256 + 1280 pooled
            "transformer_layers_per_block": 4,
        }
    return {
        **common,
        "attention_head_dim": [5, 10, 20],
        "block_out_channels": [320, 640, 1280],
        "cross_attention_dim": 2048,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "projection_class_embeddings_input_dim": 2816,  # 6 time ids x 256 + 1280 pooled
        "transformer_layers_per_block": [1, 2, 10],
    }


def families() -> dict[str, dict[str, dict[str, Any]]]:
    """family -> {relative file path: JSON content}."""
    sd2_base = {
        "model_index.json": sd_index(),
        "unet/config.json": sd_unet(**SD2_UNET),
        "vae/config.json": vae(512),
        "text_encoder/config.json": open_clip_h(),
        "tokenizer/tokenizer_config.json": tokenizer_settings("!"),
        "scheduler/scheduler_config.json": sd_scheduler(prediction_type="epsilon"),
    }
    return {
        "sd-1": {
            "model_index.json": sd_index(),
            "unet/config.json": sd_unet(),
            "vae/config.json": vae(512),
            "text_encoder/config.json": clip_l(),
            "tokenizer/tokenizer_config.json": tokenizer_settings(EOS),
            "scheduler/scheduler_config.json": sd_scheduler(),
        },
        "sd-2": sd2_base,
        "sd-2-v": {
            **sd2_base,
            "model_index.json": {**sd_index(), "scheduler": ["diffusers", "DDIMScheduler"]},
            "unet/config.json": sd_unet(**SD2_UNET, sample_size=96),
            "vae/config.json": vae(768),
            "scheduler/scheduler_config.json": sd_scheduler(
                "DDIMScheduler", prediction_type="v_prediction"
            ),
        },
        "sdxl": {
            "model_index.json": sdxl_index(refiner=False),
            "unet/config.json": sdxl_unet(refiner=False),
            "vae/config.json": vae(1024, 0.13025, force_upcast=True),
            "text_encoder/config.json": clip_l(),
            "text_encoder_2/config.json": open_clip_bigg(),
            "tokenizer/tokenizer_config.json": tokenizer_settings(EOS),
            "tokenizer_2/tokenizer_config.json": tokenizer_settings("!"),
            "scheduler/scheduler_config.json": SDXL_SCHEDULER,
        },
        "sdxl-refiner": {
            "model_index.json": sdxl_index(refiner=True),
            "unet/config.json": sdxl_unet(refiner=True),
            "vae/config.json": vae(1024, 0.13025, force_upcast=True),
            "text_encoder_2/config.json": open_clip_bigg(),
            "tokenizer_2/tokenizer_config.json": tokenizer_settings("!"),
            "scheduler/scheduler_config.json": SDXL_SCHEDULER,
        },
    }


def write_families(out: Path) -> None:
    for family, files in families().items():
        for relative, content in files.items():
            path = out / family / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bpe", type=Path, help="open_clip's bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    write_families(args.out)
    if args.bpe is not None:
        write_tokenizer_files(args.bpe, args.out / "clip-tokenizer")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
