"""A model's sha256 for sd-metadata.model_hash, computed once and cached; LoRA file hashes.

Hashing a 7 GB SDXL checkpoint takes tens of seconds, so the digest is kept in a small JSON file
beside the weights (`<file>.sha256`), valid while the file's size and mtime are unchanged. A
read-only model folder keeps it in the user cache directory instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from invoke import atomic
from invoke.errors import ModelError

SIDECAR_SUFFIX = ".sha256"
_CHUNK = 1 << 20
# A diffusers folder is identified by its UNet's weights, as InvokeAI and A1111 hash the one file.
_FOLDER_WEIGHTS = (
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.bin",
)


def weights_file(path: Path) -> Path:
    """The file whose digest names the model: the file itself, or a folder's UNet weights."""
    if path.is_file():
        return path
    for relative in _FOLDER_WEIGHTS:
        if (path / relative).is_file():
            return path / relative
    raise ModelError(f"model {path}: no unet/ weights file to hash")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "invoke" / "hashes"


def _cache_paths(file: Path) -> list[Path]:
    beside = file.with_name(file.name + SIDECAR_SUFFIX)
    key = hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:32]
    return [beside, cache_dir() / f"{key}.json"]


def model_hash(path: Path) -> str:
    """sha256 hex digest of the model's weights file, from the cache when it is still valid."""
    file = weights_file(path)
    stat = file.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    candidates = _cache_paths(file)
    for cached in candidates:
        try:
            data = json.loads(cached.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and {k: data.get(k) for k in stamp} == stamp:
            digest = data.get("sha256")
            if isinstance(digest, str) and len(digest) == 64:
                return digest
    digest = _sha256(file)
    record = json.dumps({**stamp, "sha256": digest, "file": file.name})
    for cached in candidates:
        try:
            atomic.replace(cached, record.encode("utf-8"))  # a reader never sees half a record
        except OSError:
            continue  # read-only folder: try the user cache
        break
    return digest


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def lora_hash(path: Path) -> str:
    """A LoRA file's hash as AUTOMATIC1111 and kohya-ss write it ("Lora hashes" in `parameters`,
    and how model sites look a LoRA up): sha256 of the tensor data after the safetensors header,
    the first 12 hex digits. The header (metadata, key order) can change without the weights
    changing; this hash does not."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        header = int.from_bytes(stream.read(8), "little")
        stream.seek(8 + header)
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:12]
