"""The folders of things a line names by name: LoRAs, textual inversion embeddings, ControlNets,
IP-Adapters and upscalers. Each is a Library (its launch option, its default folder, the files
it takes); the find_* functions turn a name into its file or an InvokeError listing the names
there are.
"""

from __future__ import annotations

import difflib
import glob
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke.backend.upscaler_kinds import KINDS, LATENT_X2, PIXEL_X4, sides
from invoke.config.models_yaml import HUB_ID, PICKLE_SUFFIXES, REPO_FILES, hub_snapshot
from invoke.config.settings import Settings
from invoke.config.user_dir import user_config_path
from invoke.errors import InvokeError
from invoke.line.switch_defaults import UPSCALER_REPOS


@dataclass(frozen=True)
class Library:
    """A folder of files a prompt names by their file name (LoRAs, embeddings): where it is,
    which files count, and the words its messages use."""

    what: str  # "LoRA": in messages
    setting: str  # the Settings field of its launch option ("lora_dir")
    default: str  # its folder beside the user's models.yaml ("loras")
    suffixes: tuple[str, ...]  # the files that count, the preferred kind first
    inside: str = ""  # a folder NAME holding this file (plus a suffix) counts as NAME too
    one_of_many: str = "rename all but one"  # what to do when a name has several files
    stored_as: str = ""  # what to put in the folder, for messages [".safetensors {what}s"]
    beside: str = ""  # a folder of this name holds a part of its neighbours, not names

    def _counts(self, path: Path, folder: Path) -> bool:
        """A file is one of the library's, not inside a `beside` folder (an IP-Adapter's
        image_encoder/model.safetensors is no IP-Adapter called "model")."""
        return path.is_file() and not (
            self.beside and self.beside in path.relative_to(folder).parts[:-1]
        )

    @property
    def option(self) -> str:
        return f"--{self.setting}"

    def folder(self, settings: Settings) -> Path:
        """The launch option's folder, else `default` beside the user's models.yaml
        (~/.config/invoke-dream/loras for LoRAs on Linux)."""
        chosen: Path | None = getattr(settings, self.setting)
        if chosen is not None:
            return chosen.expanduser()
        return user_config_path().parent / self.default

    def names(self, folder: Path) -> list[str]:
        """The names a folder offers: its files' names, subfolders included."""
        if not folder.is_dir():
            return []
        found = set()
        for suffix in self.suffixes:
            for path in folder.rglob(f"*{suffix}"):
                if not self._counts(path, folder):
                    continue
                if path.stem == self.inside:
                    found.add(path.parent.name)
                elif not self._belongs_to_its_folder(path):
                    found.add(path.stem)
        return sorted(found)

    def not_found(self, what: str, name: str, folders: Sequence[Path], fix: str) -> InvokeError:
        """The error for a name none of `folders` has: the first (the user's) folder's state
        and `fix` when nothing is there, else the names there are and the nearest one."""
        folder = folders[0]
        names = sorted({n for f in folders for n in self.names(f)})
        if not names:
            there = f"has no {self.what} files" if folder.is_dir() else "does not exist"
            return InvokeError(f"{what}: not found: {folder} {there}; {fix}")
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        more = f" and {len(names) - 12} more" if len(names) > 12 else ""
        return InvokeError(
            f"{what}: not found in {folder}; {hint}there: {', '.join(names[:12])}{more}"
        )

    def _belongs_to_its_folder(self, path: Path) -> bool:
        """A file beside the `inside` file is part of that folder's NAME (a ControlNet folder's
        weights), not a name of its own."""
        return bool(self.inside) and any(
            (path.parent / f"{self.inside}{suffix}").is_file() for suffix in self.suffixes
        )

    def files(self, name: str, folder: Path) -> list[Path]:
        """The files called `name` in the folder (or a subfolder), only those of the preferred
        kind when there are several kinds (x.safetensors beside the x.pt it was made from).
        More than one of that kind is an InvokeError saying which."""
        pattern = glob.escape(name)
        for suffix in self.suffixes:
            found = sorted(p for p in folder.rglob(f"{pattern}{suffix}") if self._counts(p, folder))
            if self.inside:
                inner = folder.rglob(f"{pattern}/{self.inside}{suffix}")
                found += sorted(p for p in inner if p.is_file())
            if len(found) > 1:
                where = ", ".join(str(p.relative_to(folder)) for p in found)
                raise InvokeError(
                    f"{self.what} {name}: more than one file has that name in {folder} ({where}); "
                    f"{self.one_of_many}"
                )
            if found:
                return found
        return []


IMAGE_ENCODER = "image_encoder"  # an IP-Adapter's CLIP image encoder, beside it
LORAS = Library("LoRA", "lora_dir", "loras", (".safetensors",), one_of_many="name one by its path")
# diffusers saves an embedding as NAME/learned_embeds.safetensors (.bin); .pt/.bin are pickles.
EMBEDDINGS = Library(
    "embedding", "embedding_dir", "embeddings", (".safetensors", ".pt", ".bin"), "learned_embeds"
)


# A ControlNet is a diffusers folder NAME holding config.json (and its weights), or a single
# NAME.safetensors file (AUTOMATIC1111's models/ControlNet holds those).
CONTROLNETS = Library(
    "ControlNet",
    "controlnet_dir",
    "controlnets",
    (".json", ".safetensors"),
    "config",
    "name one by its path",
    "ControlNet folders (diffusers format) or .safetensors files",
)
# What a hub ControlNet repo needs here: the config and the safetensors weights (either variant).
CONTROLNET_FILES = ("config.json", "diffusion_pytorch_model.safetensors",
                    "diffusion_pytorch_model.fp16.safetensors")  # fmt: skip


def find_controlnet(name: str, folders: Sequence[Path], allow_downloads: bool = False) -> Path:
    """--controlnet NAME -> the ControlNet's weights: a single .safetensors file, or the
    weights file of a diffusers folder.

    NAME is looked up in the first of `folders` that has it (subfolders included), or is the
    file or folder itself when it is a path (has a /); a hub id (owner/name) that is no path is
    looked up in the local Hugging Face cache."""
    source = _controlnet_source(name, folders, allow_downloads)
    if source.is_dir():
        return _controlnet_weights(name, source)
    if source.suffix.lower() != ".safetensors":
        pickle = source.suffix.lower() in PICKLE_SUFFIXES
        kind = "a pickle, which can run code" if pickle else "not a .safetensors file"
        raise InvokeError(
            f"--controlnet: {name} is {kind}; give a .safetensors ControlNet (convert it) or a "
            "diffusers folder"
        )
    return source


def _controlnet_source(name: str, folders: Sequence[Path], allow_downloads: bool) -> Path:
    """The folder or single file NAME stands for."""
    what = f"--controlnet: {name}"
    if "/" in name or os.sep in name:
        path = Path(name).expanduser()
        if path.exists():
            return path
        if HUB_ID.fullmatch(name):
            return hub_snapshot(name, "--controlnet", CONTROLNET_FILES, allow_downloads)
        raise InvokeError(f"{what}: no such file or folder; give a ControlNet's path or a name")
    for folder in folders:
        for path in CONTROLNETS.files(name, folder):
            if path.name == "config.json":
                return path.parent
            if path.suffix == ".safetensors":
                return path
    raise CONTROLNETS.not_found(
        what, name, folders, "put ControlNets there, launch with --controlnet_dir DIR, or give "
        "a path or a hub id",
    )  # fmt: skip


def _controlnet_weights(name: str, folder: Path) -> Path:
    """The folder's safetensors weights: the full-precision file, else the fp16 variant the
    hub's repos also ship. Pickled .bin weights are refused, as for models."""
    for weights in CONTROLNET_FILES[1:]:
        if (folder / weights).is_file():
            return folder / weights
    pickles = sorted(p.name for p in folder.glob("diffusion_pytorch_model*.bin"))
    have = f"only {', '.join(pickles)} (a pickle, which can run code)" if pickles else "no weights"
    where = "" if "/" in name else f" ({folder})"
    raise InvokeError(
        f"--controlnet: {name}{where} has {have}; it needs diffusion_pytorch_model.safetensors "
        "(the hub's ControlNet repos have it)"
    )


# An IP-Adapter is a NAME.safetensors file (image_proj.* and ip_adapter.* weights) with its CLIP
# image encoder in an image_encoder/ folder beside it: h94/IP-Adapter's models/ folder (and its
# sdxl_models/) copied as it is. Its image_encoder's own weights are no adapter's name.
IP_ADAPTERS = Library(
    "IP-Adapter",
    "ip_adapter_dir",
    "ip_adapters",
    (".safetensors",),
    one_of_many="name one by its path",
    stored_as="IP-Adapter .safetensors files (with their image_encoder folder beside them)",
    beside=IMAGE_ENCODER,
)


def find_ip_adapter(name: str, folders: Sequence[Path]) -> tuple[Path, Path]:
    """--ip_adapter NAME -> (the adapter's .safetensors file, its image encoder's folder).

    NAME is looked up in the first of `folders` that has it (subfolders included), or is the
    file itself, or a folder holding one adapter file, when it is a path (has a / or ends in
    .safetensors). The image encoder is the image_encoder/ folder beside the file."""
    what = f"--ip_adapter: {name}"
    if "/" in name or os.sep in name or name.lower().endswith(".safetensors"):
        path = Path(name).expanduser()
        if path.is_dir():
            path = _one_adapter(what, path)
        elif not path.is_file():
            raise InvokeError(
                f"{what}: no such file or folder; give an IP-Adapter's path or a name"
            )
    else:
        found = [p for folder in folders for p in IP_ADAPTERS.files(name, folder)][:1]
        if not found:
            raise IP_ADAPTERS.not_found(
                what, name, folders, "put IP-Adapters there with their image_encoder folder "
                "(h94/IP-Adapter's models/ as it is), launch with --ip_adapter_dir DIR, or give "
                "the file's path",
            )  # fmt: skip
        path = found[0]
    if path.suffix.lower() != ".safetensors":
        pickle = path.suffix.lower() in PICKLE_SUFFIXES
        kind = "a pickle, which can run code" if pickle else "not a .safetensors file"
        raise InvokeError(
            f"{what} is {kind}; give its .safetensors file (h94/IP-Adapter ships both)"
        )
    encoder = path.parent / IMAGE_ENCODER
    if not (encoder / "config.json").is_file():
        where = "" if "/" in name else f" ({path})"
        raise InvokeError(
            f"{what}{where} has no {IMAGE_ENCODER} folder beside it; copy h94/IP-Adapter's "
            f"models/{IMAGE_ENCODER} there (sdxl_models/{IMAGE_ENCODER} for ip-adapter_sdxl)"
        )
    return path, encoder


def _one_adapter(what: str, folder: Path) -> Path:
    """The one adapter file a folder given as --ip_adapter holds."""
    files = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if len(files) != 1:
        have = ", ".join(p.name for p in files) if files else "no .safetensors file"
        raise InvokeError(f"{what}: the folder holds {have}; name the adapter's file")
    return files[0]


# An upscaler is a diffusers pipeline folder NAME (model_index.json beside its parts' folders), as
# `hf download stabilityai/sd-x2-latent-upscaler --local-dir upscalers/sd-x2-latent-upscaler`
# saves one. The suffix holds the slash so that only a folder's own model_index.json names it,
# never the config.json files of its parts.
UPSCALERS = Library(
    "upscaler",
    "upscaler_dir",
    "upscalers",
    ("/model_index.json",),
    "model_index",
    "name one by its path",
    "upscaler folders (diffusers format)",
)


def find_upscaler(
    name: str | None,
    factor: int,
    folders: Sequence[Path],
    own: Path | None = None,
    allow_downloads: bool = False,
) -> tuple[str, Path]:
    """-U FACTOR [--upscaler NAME] -> (the name the line records, the upscaler's folder).

    NAME is a folder name in the first of `folders` that has it (subfolders included), a path (has
    a /) or a hub id in the local Hugging Face cache. Without NAME: the model's `own` upscaler of
    that factor (made for it: the default model ships one), else the factor's hub upscaler, as a
    folder named as its repo (sd-x2-latent-upscaler) in `folders` or in the hub cache."""
    if name is not None:
        return name, _upscaler_source(name, "--upscaler", folders, allow_downloads)
    if own is not None:
        for own_name in UPSCALERS.names(own):
            folder = UPSCALERS.files(own_name, own)[0].parent
            if describe_upscaler(folder)[1] == factor:
                return own_name, folder
    repo = UPSCALER_REPOS[factor]
    short = repo.rsplit("/", 1)[1]
    for folder in folders:
        found = UPSCALERS.files(short, folder)
        if found:
            return short, found[0].parent
    return repo, hub_snapshot(repo, f"-U {factor}", REPO_FILES, allow_downloads)


def _upscaler_source(name: str, what: str, folders: Sequence[Path], allow_downloads: bool) -> Path:
    if "/" in name or os.sep in name:
        path = Path(name).expanduser()
        if path.is_dir():
            return path
        if path.exists():
            raise InvokeError(f"{what}: {name} is a file; an upscaler is a diffusers folder")
        if HUB_ID.fullmatch(name):
            return hub_snapshot(name, what, REPO_FILES, allow_downloads)
        raise InvokeError(f"{what}: {name}: no such folder; give an upscaler's folder or a name")
    for folder in folders:
        found = UPSCALERS.files(name, folder)
        if found:
            return found[0].parent
    raise UPSCALERS.not_found(
        f"{what}: {name}", name, folders, "put upscaler folders there, launch with "
        "--upscaler_dir DIR, or give a path or a hub id",
    )  # fmt: skip


def describe_upscaler(folder: Path) -> tuple[str, int, int]:
    """(pipeline class, factor, the multiple a picture's sides must be) of an upscaler folder,
    from its config files alone (nothing is loaded): a folder that is no upscaler is an
    InvokeError naming what it is."""
    index = _upscaler_json(folder / "model_index.json", folder)
    kind = index.get("_class_name")
    if kind not in KINDS:
        what = f"a {kind}" if isinstance(kind, str) else "no diffusers pipeline"
        raise InvokeError(
            f"upscaler {folder}: is {what}, not an upscaler (a {LATENT_X2} or {PIXEL_X4} folder, "
            "as stabilityai/sd-x2-latent-upscaler and stabilityai/stable-diffusion-x4-upscaler)"
        )
    unet = _upscaler_json(folder / "unet" / "config.json", folder)
    vae = _upscaler_json(folder / "vae" / "config.json", folder)
    return (kind, *sides(kind, vae, unet))


def _upscaler_json(path: Path, folder: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvokeError(
            f"upscaler {folder}: has no {path.relative_to(folder)}; give a diffusers folder "
            "(hf download stabilityai/sd-x2-latent-upscaler saves one)"
        ) from None
    except (OSError, ValueError) as err:
        raise InvokeError(f"upscaler {folder}: cannot read {path.name} ({err})") from None
    if not isinstance(data, dict):
        raise InvokeError(f"upscaler {folder}: {path.name} is not a JSON object")
    return data


def find_lora(name: str, folders: Sequence[Path]) -> Path:
    """A prompt's LoRA name -> its file: `name.safetensors` in the first of the folders that
    has one (subfolders included), or the path itself when the name is one (has a / or ends in
    .safetensors). The first folder is the user's: messages name it."""
    what = f"LoRA {name}"
    if "/" in name or os.sep in name or name.lower().endswith(".safetensors"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise InvokeError(f"{what}: no such file; give a .safetensors file or a LoRA name")
        return path
    for folder in folders:
        found = LORAS.files(name, folder)
        if found:
            return found[0]
    raise LORAS.not_found(
        what, name, folders, "put LoRA files there, launch with --lora_dir DIR, or give the "
        "file's path",
    )  # fmt: skip


def find_embedding(name: str, folders: Sequence[Path], allow_pickle: bool) -> Path | None:
    """A prompt's `<name>` -> its embedding file from the first folder that has one, or None:
    then `<name>` is the user's text.

    A pickle file (.pt/.bin) is refused unless pickles were allowed at launch, as models are."""
    found = [p for f in folders if f.is_dir() for p in EMBEDDINGS.files(name, f)]
    if not found:
        return None
    path = found[0]
    if path.suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:
        raise InvokeError(
            f"embedding <{name}> ({path}): {path.suffix} is a pickle file, which can run code "
            "when loaded; launch with --allow-pickle (then only tensors are read), or convert it "
            "to .safetensors"
        )
    return path


def close_embedding(name: str, folders: Sequence[Path]) -> str | None:
    """The embedding a `<name>` that is none probably meant (a typo), for a note."""
    names = sorted({n for f in folders for n in EMBEDDINGS.names(f)})
    close = difflib.get_close_matches(name, names, n=1)
    return close[0] if close else None
