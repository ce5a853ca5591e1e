"""Train the embedded default model on the procedural world (tests/fixtures/world.py).

Same diffusers classes as Stable Diffusion 1.x, only tiny: AutoencoderKL (downsampling 4, so 64x64
pictures are 16x16x4 latents), CLIPTextModel + a CLIP-format tokenizer built from the world's
words, UNet2DConditionModel, and SD 1.5's noise schedule (scaled_linear 0.00085..0.012, 1000
steps, epsilon). The result is a standard StableDiffusionPipeline folder, so the default model runs
through exactly the code paths a downloaded model does.

Stages (each resumable; state lives under --work, which should be git-ignored):
  vae     train the autoencoder on random 32x32 crops of world pictures
  cache   encode a fixed set of training pictures to latents once (UNet steps then skip the VAE)
  decoder fine-tune the VAE decoder alone on whole pictures (encoder frozen, latents unchanged)
  unet    train the UNet and the text encoder jointly, 10 % empty captions for classifier-free
          guidance, min-SNR loss weighting, offset noise, an EMA copy of the weights (what
          ships), and wrong captions at low noise (--mismatch) so low img2img strength keeps
          the init image
  export  write the pipeline folder (fp16 safetensors) to --out

    python scripts/train_default_model.py --stage all --vae-minutes 10 --minutes 65
    python scripts/train_default_model.py --stage unet --minutes 65 --resume   # after a stop

Training pictures come from world.sample with np.random.default_rng(TRAIN_SEED); the eval script
uses other seeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures import world
from tests.fixtures.clip_vocab import build_clip_tokenizer

TRAIN_SEED = 20260401  # world pictures for training; eval_default_model.py must use other seeds
CAPTION_DROPOUT = 0.1
# What invoke uses for this model when a line names no sampler (training.json says so).
DEFAULT_SAMPLER = "k_euler"
MAX_TOKENS = 77


def vae_config() -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=world.SIZE,
    )


def unet_config(cross_dim: int) -> dict:
    return dict(
        sample_size=world.SIZE // 4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(64, 128, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_dim,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def text_config(vocab_size: int, bos: int, eos: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        hidden_act="quick_gelu",
        projection_dim=64,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
    )


def scheduler_config() -> dict:
    # SD 1.5's scheduler_config.json (PNDM); every diffusers sampler reads these fields.
    return dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
        clip_sample=False,
        prediction_type="epsilon",
        trained_betas=None,
    )


# ---------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def save_atomic(obj: object, path: Path) -> None:
    """A checkpoint is either the old one or the new one, never half of one (kill -9 safe)."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def to_tensor(images: list) -> torch.Tensor:
    """PIL RGB pictures -> float tensor in [-1, 1], NCHW."""
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def fmt_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**vae_config())


def stage_vae(args: argparse.Namespace, device: torch.device) -> None:
    ckpt = args.work / "vae.pt"
    vae = build_vae().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    step, elapsed = 0, 0.0
    if ckpt.exists() and args.resume:
        state = torch.load(ckpt, map_location=device)
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        if state.get("done"):
            log(f"vae: already trained ({step} steps), skipping")
            return
        log(f"vae: resumed at step {step} ({elapsed / 60:.1f} min done)")
    budget = args.vae_minutes * 60
    rng = np.random.default_rng([TRAIN_SEED, 1, step])  # fresh pictures after a resume
    n_params = sum(p.numel() for p in vae.parameters())
    log(f"vae: {n_params / 1e6:.2f} M params, budget {args.vae_minutes} min, crops {args.crop}")
    vae.train()
    t0, last_save, run_loss, run_n = time.time() - elapsed, time.time(), 0.0, 0
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget:
            break
        # Cosine decay over the time budget; the budget, not a step count, is what we plan in.
        lr = args.vae_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / budget))))
        for g in opt.param_groups:
            g["lr"] = lr
        imgs = [world.sample(rng)[0] for _ in range(args.vae_batch)]
        x = to_tensor(imgs)
        if args.crop < world.SIZE:
            i, j = rng.integers(0, world.SIZE - args.crop + 1, 2)
            x = x[:, :, i : i + args.crop, j : j + args.crop]
        x = x.to(device)
        post = vae.encode(x).latent_dist
        z = post.sample()
        rec = vae.decode(z).sample
        kl = post.kl().mean() / z[0].numel()
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        run_loss += loss.item()
        run_n += 1
        if step % 50 == 0:
            rate = step / max(1e-6, time.time() - t0)
            log(
                f"vae step {step} loss {run_loss / run_n:.5f} kl {kl.item():.3f} lr {lr:.2e} "
                f"{rate:.2f} steps/s, ETA {fmt_eta(budget - (time.time() - t0))}"
            )
            run_loss, run_n = 0.0, 0
        if time.time() - last_save > 120:
            save_atomic({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                         "elapsed": time.time() - t0}, ckpt)  # fmt: skip
            last_save = time.time()
    save_atomic({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                 "elapsed": time.time() - t0, "done": True}, ckpt)  # fmt: skip
    log(f"vae: done, {step} steps in {(time.time() - t0) / 60:.1f} min")


def stage_decoder(args: argparse.Namespace, device: torch.device) -> None:
    """Fine-tune only the decoder on whole 64x64 pictures, the encoder frozen.

    Crops make the autoencoder cheap to train, but its GroupNorm and mid-block attention then see
    other statistics on whole pictures and the colours drift (~15/255 here). The encoder's latents
    are what the UNet learns, so only the decoder may change: the cached latents stay valid and
    this can even run beside the UNet stage.
    """
    ckpt = args.work / "vae.pt"
    state = torch.load(ckpt, map_location=device)
    ft = state.get("decoder_finetune", {"step": 0, "elapsed": 0.0, "done": False})
    if ft["done"] and args.resume:
        log(f"decoder: already fine-tuned ({ft['step']} steps), skipping")
        return
    vae = build_vae().to(device)
    vae.load_state_dict(state["vae"])
    vae.requires_grad_(False)
    train = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for q in train:
        q.requires_grad_(True)
    vae.train()
    opt = torch.optim.AdamW(train, lr=args.decoder_lr, weight_decay=0.0)
    if "opt" in ft and args.resume:
        opt.load_state_dict(ft["opt"])
    step, budget = ft["step"], args.decoder_minutes * 60
    rng = np.random.default_rng([TRAIN_SEED, 4, step])
    t0, last_save, run_loss, run_n = time.time() - ft["elapsed"], time.time(), 0.0, 0

    def save(done: bool) -> None:
        state["vae"] = vae.state_dict()
        state["decoder_finetune"] = {"step": step, "elapsed": time.time() - t0, "done": done,
                                     "opt": opt.state_dict()}  # fmt: skip
        save_atomic(state, ckpt)

    log(f"decoder: fine-tuning on whole {world.SIZE}px pictures, budget {args.decoder_minutes} min")
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = args.decoder_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        x = to_tensor([world.sample(rng)[0] for _ in range(args.vae_batch)]).to(device)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(train, 1.0)
        opt.step()
        step += 1
        run_loss += loss.item()
        run_n += 1
        if step % 25 == 0:
            err = F.l1_loss(rec.detach().clamp(-1, 1), x).item() * 127.5
            log(f"decoder step {step} loss {run_loss / run_n:.5f} |err| {err:.2f}/255, "
                f"ETA {fmt_eta(budget - (time.time() - t0))}")  # fmt: skip
            run_loss, run_n = 0.0, 0
        if time.time() - last_save > 120:
            save(False)
            last_save = time.time()
    save(True)
    log(f"decoder: done, {step} steps")


def load_trained_vae(args: argparse.Namespace, device: torch.device):
    vae = build_vae().to(device)
    vae.load_state_dict(torch.load(args.work / "vae.pt", map_location=device)["vae"])
    vae.eval()
    return vae


def caption_vocab() -> list[str]:
    return world.vocabulary()


def make_tokenizer(args: argparse.Namespace):
    from transformers import CLIPTokenizer

    tok_dir = args.work / "tokenizer"
    build_clip_tokenizer(tok_dir, caption_vocab())
    return CLIPTokenizer.from_pretrained(tok_dir)


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(
        texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids


def stage_cache(args: argparse.Namespace, device: torch.device) -> None:
    path = args.work / "latents.pt"
    if path.exists() and args.resume:
        log("cache: latents already there, skipping")
        return
    vae = load_trained_vae(args, device)
    rng = np.random.default_rng([TRAIN_SEED, 2])
    means, captions, rec_err = [], [], []
    t0 = time.time()
    with torch.no_grad():
        for start in range(0, args.n_images, 256):
            batch = [world.sample(rng) for _ in range(min(256, args.n_images - start))]
            x = to_tensor([b[0] for b in batch]).to(device)
            mean = vae.encode(x).latent_dist.mean
            means.append(mean.cpu())
            captions += [b[1] for b in batch]
            if start == 0:
                from PIL import Image

                dec = vae.decode(mean[:64]).sample
                rec_err.append(F.l1_loss(dec, x[:64]).item() * 127.5)
                rec = ((dec[:16].clamp(-1, 1) + 1) * 127.5).byte().cpu()
                grid = torch.cat([((x[:16] + 1) * 127.5).byte().cpu(), rec], 3)
                Image.fromarray(grid.permute(0, 2, 3, 1).reshape(-1, 128, 3).numpy()).save(
                    args.work / "vae_recon.png"
                )
    lat = torch.cat(means)
    std = lat.std().item()
    save_atomic({"latents": lat, "captions": captions, "std": std}, path)
    log(
        f"cache: {len(captions)} latents {tuple(lat.shape[1:])}, std {std:.3f} -> scaling_factor "
        f"{1 / std:.4f}, mean |recon error| {rec_err[0]:.2f}/255, {time.time() - t0:.0f}s"
    )


def build_unet_and_text(vocab_size: int, bos: int, eos: int):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text = CLIPTextModel(CLIPTextConfig(**text_config(vocab_size, bos, eos)))
    unet = UNet2DConditionModel(**unet_config(text.config.hidden_size))
    return unet, text


def stage_unet(args: argparse.Namespace, device: torch.device) -> None:
    from diffusers import DDPMScheduler

    ckpt = args.work / "unet.pt"
    data = torch.load(args.work / "latents.pt")
    scale = 1.0 / data["std"]
    latents = data["latents"] * scale
    tokenizer = make_tokenizer(args)
    ids = tokenize(tokenizer, data["captions"])
    empty = tokenize(tokenizer, [""])[0]
    unet, text = build_unet_and_text(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    unet.to(device).train()
    text.to(device).train()
    params = [*unet.parameters(), *text.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text).eval()
    for p in [*ema_unet.parameters(), *ema_text.parameters()]:
        p.requires_grad_(False)
    step, elapsed = 0, 0.0
    if ckpt.exists() and args.resume:
        state = torch.load(ckpt, map_location=device)
        unet.load_state_dict(state["unet"])
        text.load_state_dict(state["text"])
        ema_unet.load_state_dict(state["ema_unet"])
        ema_text.load_state_dict(state["ema_text"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        log(f"unet: resumed at step {step} ({elapsed / 60:.1f} min done)")
        if args.restart_clock:
            # Keep the weights, start a new time budget (and its learning-rate schedule).
            log(f"unet: new budget of {args.minutes} min from step {step}")
            elapsed = 0.0
    cfg = scheduler_config()
    sched = DDPMScheduler(
        **{
            k: cfg[k]
            for k in (
                "beta_start",
                "beta_end",
                "beta_schedule",
                "num_train_timesteps",
                "prediction_type",
            )
        }
    )
    alphas = sched.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    # Loss weights per timestep, same optimum (every weight > 0), different emphasis:
    # - low noise (snr > 5): min-SNR-5 (Hang et al. 2023), so easy denoising stops dominating;
    # - high noise (snr < 1): up to 1/snr, i.e. the error of the implied clean picture
    #   (Salimans & Ho's truncated SNR), capped. Colours and layout, what the caption decides, are
    #   only uncertain at high noise, where a plain epsilon loss is ~snr times smaller: measured
    #   here, without this boost the UNet ignored the text after 1700 steps (same loss with the
    #   true caption, a wrong one or none).
    weight = (
        torch.clamp(snr, max=5.0) / snr * torch.clamp(1 / snr, min=1.0, max=args.high_noise_cap)
    )
    budget = args.minutes * 60
    n_u = sum(p.numel() for p in unet.parameters())
    n_t = sum(p.numel() for p in text.parameters())
    log(
        f"unet: {n_u / 1e6:.2f} M params, text encoder {n_t / 1e6:.2f} M, vocab {len(tokenizer)}, "
        f"{len(latents)} latents, scale {scale:.4f}, budget {args.minutes} min, batch {args.batch}"
    )
    gen = torch.Generator().manual_seed(TRAIN_SEED + step)
    t0, last_save, run_loss, run_n = time.time() - elapsed, time.time(), 0.0, 0

    def save(done: bool = False) -> None:
        save_atomic(
            {"unet": unet.state_dict(), "text": text.state_dict(),
             "ema_unet": ema_unet.state_dict(), "ema_text": ema_text.state_dict(),
             "opt": opt.state_dict(), "step": step, "elapsed": time.time() - t0,
             "scale": scale, "done": done},
            ckpt,
        )  # fmt: skip

    while True:
        elapsed = time.time() - t0
        if elapsed >= budget:
            break
        frac = elapsed / budget
        warm = min(1.0, (step + 1) / 200)
        lr = args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(latents), (args.batch,), generator=gen)
        x0 = latents[idx].to(device)
        if torch.rand((), generator=gen) < 0.5:
            # Every shape here is mirror-symmetric, so a mirrored latent is another valid picture.
            x0 = x0.flip(3)
        tok = ids[idx].clone()
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        if args.mismatch:
            # Wrong captions at low noise, target unchanged: there the picture in x_t already
            # settles colours and shape, so the UNet learns to trust it over the text. Without
            # this, guidance repainted a conflicting prompt's colours even at -f 0.3 (a caption
            # never disagreed with its picture in training); with it, low strength keeps the
            # init image and high strength follows the prompt, as users expect of -f.
            ramp = ((args.mismatch_fade - t) / (args.mismatch_fade - args.mismatch_below)).clamp(
                0, 1
            )
            wrong = torch.rand(args.batch, generator=gen) < args.mismatch * ramp
            tok[wrong] = ids[torch.randint(0, len(latents), (int(wrong.sum()),), generator=gen)]
        drop = torch.rand(args.batch, generator=gen) < CAPTION_DROPOUT
        tok[drop] = empty
        noise = torch.randn(x0.shape, generator=gen)
        if args.noise_offset:
            # Offset noise (a per-picture, per-channel constant): 16x16 latents have only 256
            # cells, so pure noise's channel means (std 1/16) look like a colour to the UNet at
            # the first, high-noise steps and it drew random backgrounds (never black) whatever
            # the caption said. Training with extra noise in exactly that direction teaches it
            # that the mean colour comes from the caption.
            noise = noise + args.noise_offset * torch.randn(
                (x0.shape[0], x0.shape[1], 1, 1), generator=gen
            )
        noise = noise.to(device)
        t = t.to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = text(tok.to(device))[0]
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        loss = (((pred - noise) ** 2).mean((1, 2, 3)) * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for m_ema, m in ((ema_unet, unet), (ema_text, text)):
                for pe, p in zip(m_ema.parameters(), m.parameters(), strict=True):
                    pe.lerp_(p, 1 - decay)
        run_loss += loss.item()
        run_n += 1
        if step % 50 == 0:
            now = time.time() - t0
            rate = 50 / max(1e-6, now - getattr(stage_unet, "_last", 0.0))
            stage_unet._last = now  # type: ignore[attr-defined]
            log(
                f"unet step {step} loss {run_loss / run_n:.4f} lr {lr:.2e} {rate:.2f} steps/s "
                f"({now / 60:.1f}/{args.minutes} min), ETA {fmt_eta(budget - now)}"
            )
            run_loss, run_n = 0.0, 0
        if time.time() - last_save > args.save_every:
            save()
            last_save = time.time()
    save(done=True)
    log(f"unet: done, {step} steps in {(time.time() - t0) / 60:.1f} min")


@torch.no_grad()
def latent_rgb_fit(vae, scale: float) -> tuple[list[list[float]], list[float]]:
    """Least-squares linear map from scaled latents to the 4x4-averaged picture, on 512 pictures."""
    rng = np.random.default_rng([TRAIN_SEED, 3])
    x = to_tensor([world.sample(rng)[0] for _ in range(512)])
    z = vae.float().encode(x).latent_dist.mean * scale
    target = F.avg_pool2d(x, 4)  # one latent cell covers 4x4 pixels
    zf = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, 4), torch.ones(z.numel() // 4, 1)], 1)
    sol = torch.linalg.lstsq(zf, target.permute(0, 2, 3, 1).reshape(-1, 3)).solution
    return [[round(v, 4) for v in row] for row in sol[:4].tolist()], [
        round(v, 4) for v in sol[4].tolist()
    ]


def stage_export(args: argparse.Namespace) -> None:
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    device = torch.device("cpu")
    state = torch.load(args.work / "unet.pt", map_location=device)
    vae = load_trained_vae(args, device)
    vae.register_to_config(scaling_factor=float(state["scale"]))
    tokenizer = make_tokenizer(args)
    unet, text = build_unet_and_text(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    key = "unet" if args.no_ema else "ema_unet"
    unet.load_state_dict(state[key])
    text.load_state_dict(state["text" if args.no_ema else "ema_text"])
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16)
    args.out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(args.out, safe_serialization=True)
    # transformers 5 writes only tokenizer.json; 4.x's slow CLIPTokenizer (which model_index.json
    # names) needs vocab.json + merges.txt, so ship those too: pyproject allows transformers>=4.40.
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(args.work / "tokenizer" / name, args.out / "tokenizer" / name)
    vae_state = torch.load(args.work / "vae.pt", map_location=device)
    factors, bias = latent_rgb_fit(vae, float(state["scale"]))
    meta = {
        "trained_steps": state["step"],
        "train_minutes": round(state["elapsed"] / 60, 1),
        "vae_steps": vae_state["step"],
        "vae_minutes": round(vae_state["elapsed"] / 60, 1),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        # Linear latent -> RGB in [-1, 1] (rgb = latents @ factors + bias, per latent cell):
        # this VAE's own numbers for fast previews; SD 1.x's table does not fit its latents.
        "latent_rgb_factors": factors,
        "latent_rgb_bias": bias,
        # ...but no linear map shows this VAE's colours (scripts/fit_preview_colors.py measures
        # it): previews are real decodes, cheap at 64 px.
        "preview": "decode",
        "ema": not args.no_ema,
        "world": {"colors": list(world.COLORS), "shapes": list(world.SHAPES),
                  "size": world.SIZE},
        "train_seed": TRAIN_SEED,
        "default_sampler": DEFAULT_SAMPLER,
        # The words its captions used: invoke names a prompt's other words in a note.
        "vocabulary": world.vocabulary_key(),
    }  # fmt: skip
    # Keep what an earlier export's file records beyond these fields (the training legs, notes).
    old_meta = args.out / "training.json"
    if old_meta.is_file():
        meta = {**json.loads(old_meta.read_text()), **meta}
    old_meta.write_text(json.dumps(meta, indent=2) + "\n")
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    log(f"export: {args.out} ({total / 1e6:.1f} MB), step {state['step']}, ema {not args.no_ema}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    root = Path(__file__).resolve().parents[1]
    p.add_argument(
        "--stage", choices=["vae", "cache", "unet", "decoder", "export", "all"], default="all"
    )
    p.add_argument("--work", type=Path, default=root / "runs" / "default_model")
    p.add_argument("--out", type=Path, default=root / "invoke" / "default_model")
    p.add_argument("--resume", action="store_true", help="continue from checkpoints in --work")
    p.add_argument("--vae-minutes", type=float, default=10.0)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=32, help="VAE training crop (convs do not care)")
    p.add_argument("--decoder-minutes", type=float, default=8.0)
    p.add_argument("--decoder-lr", type=float, default=3e-4)
    p.add_argument("--kl-weight", type=float, default=1e-5)
    p.add_argument("--n-images", type=int, default=12000, help="pictures cached as latents")
    p.add_argument("--minutes", type=float, default=65.0, help="UNet training budget")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--noise-offset", type=float, default=0.15, help="offset noise std (0: off)")
    p.add_argument("--high-noise-cap", type=float, default=10.0, help="max loss weight (1/snr)")
    p.add_argument("--mismatch", type=float, default=0.9, help="wrong-caption rate, low noise")
    p.add_argument("--mismatch-below", type=int, default=350, help="full rate for t below this")
    p.add_argument("--mismatch-fade", type=int, default=550, help="rate 0 from this t on")
    p.add_argument("--restart-clock", action="store_true", help="--resume weights, new budget")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--save-every", type=float, default=180.0, help="seconds between checkpoints")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights, not the EMA")
    # One thread: on a shared 2-core machine two OpenMP threads per process collapsed to ~1/8 of
    # their solo speed once other jobs ran (spin-waiting); one thread degrades gracefully.
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.work.mkdir(parents=True, exist_ok=True)
    log(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    stages = ["vae", "cache", "unet", "decoder", "export"] if args.stage == "all" else [args.stage]
    for stage in stages:
        if stage == "vae":
            stage_vae(args, device)
        elif stage == "cache":
            stage_cache(args, device)
        elif stage == "unet":
            stage_unet(args, device)
        elif stage == "decoder":
            stage_decoder(args, device)
        else:
            stage_export(args)


if __name__ == "__main__":
    main()
