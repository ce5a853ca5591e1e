"""Model families: what kind of model a folder or a checkpoint holds, and all that differs by it.

One module per family (sd.py: SD 1.x/2.x; sdxl.py: SDXL base and refiner; kandinsky.py: Kandinsky
2.2), each giving `Family` objects; FAMILIES finds them by name. A family says which files it is
(its folders' pipelines, its checkpoints' landmark keys), which parts it has and how they load,
which switches it cannot honour, how it generates a Job, its default size and sampler. Adding a
family is one module and one line in FAMILIES.

The 9-channel inpainting UNets are a property of the model (`Model.inpainting`), not a family: an
inpainting SD 1.5 is still SD 1.x in every other way.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from invoke.backend.components import read_json
from invoke.backend.families import kandinsky, sd, sdxl
from invoke.errors import ModelError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from invoke.backend.job import Job
    from invoke.backend.model import Model, OnEvent, OnStep


class Family(Protocol):
    """One kind of model, as the rest of the backend sees it."""

    name: str  # as models.yaml's `family:` and messages say it
    description: str  # what the user sees in !models and messages
    default_size: int  # the side, in pixels, it was trained at
    default_sampler: str  # for a line that names none, unless the model recommends one
    files: str  # the family whose files it shares (sd-2-v: sd-2; a v-prediction choice)
    label: str  # how "only ... folders are" names the folders it loads
    # (factors, bias) of a latent->RGB fit for its VAE; None: SD 1.x's (model.SD1_LATENT_RGB)
    latent_rgb: tuple[Any, Any] | None

    def is_folder(self, folder: Path, index: dict[str, Any]) -> bool:
        """Whether a diffusers folder (its model_index.json, `index`) holds this family."""
        ...

    def is_checkpoint(self, keys: set[str], v_prediction: bool | None) -> bool:
        """Whether an original-layout checkpoint (its key names) holds this family."""
        ...

    def size_multiple(self, cell: int) -> int:
        """What image sides must be multiples of, for a VAE of `cell` pixels per latent cell."""
        ...

    def components(self, index: dict[str, Any]) -> tuple[str, ...]:
        """The folders a diffusers folder of this family needs."""
        ...

    def load(
        self,
        folder: Path,
        index: dict[str, Any],
        device: torch.device,
        dtype: torch.dtype,
        *,
        offload: bool,
        allow_pickle: bool,
    ) -> dict[str, Any]:
        """The Model's parts from a diffusers folder (its components are there)."""
        ...

    def load_checkpoint(
        self,
        path: Path,
        checkpoint: dict[str, torch.Tensor],
        dtype: torch.dtype,
        config: str | Path | None,
    ) -> tuple[str, dict[str, Any]]:
        """(family name, the Model's parts) from one original-layout checkpoint's weights."""
        ...

    def replace_vae(
        self, parts: dict[str, Any], vae: str | Path, dtype: torch.dtype, allow_pickle: bool
    ) -> None:
        """Put another VAE (models.yaml `vae:`) in `parts`."""
        ...

    def refuse(self, model: Model, job: Job) -> None:
        """InvokeError for a switch this family cannot honour: one line, never ignored."""
        ...

    def generate(
        self, model: Model, job: Job, on_step: OnStep | None, on_event: OnEvent | None
    ) -> list[Image.Image]:
        """The job's pictures (refusals, LoRAs, ControlNet, seamless and memory: run.py)."""
        ...


FAMILIES: dict[str, Family] = {
    f.name: f for f in (*sd.FAMILIES, *sdxl.FAMILIES, *kandinsky.FAMILIES)
}


def check_family(family: str) -> Family:
    if family not in FAMILIES:
        raise ModelError(f"family: {family} is not one of {', '.join(FAMILIES)}")
    return FAMILIES[family]


def folder_family(folder: Path, index: dict[str, Any]) -> str:
    """The family of a diffusers folder, from model_index.json and its parts' configs."""
    for family in FAMILIES.values():
        if family.is_folder(folder, index):
            return family.name
    labels = list(dict.fromkeys(f.label for f in FAMILIES.values()))
    raise ModelError(
        f"model {folder}: a {index.get('_class_name')} is not supported; only "
        f"{', '.join(labels[:-1])} and {labels[-1]} folders are"
    )


def checkpoint_family(keys: Iterable[str], v_prediction: bool | None = None) -> str:
    """The family of an original-layout checkpoint from its key names.

    SD 2.x 768-v and 512-base checkpoints have the same keys; `v_prediction` (from the .yaml
    beside the file, or the user) decides, and without it we assume 768-v as diffusers does.
    """
    names = set(keys)
    for family in FAMILIES.values():
        if family.is_checkpoint(names, v_prediction):
            return family.name
    raise ModelError(
        "not a Stable Diffusion checkpoint in the original layout (no CLIP text encoder keys "
        "such as cond_stage_model.* or conditioner.embedders.*); give a diffusers folder instead"
    )


def default_sampler(family: str, recommended: str | None = None) -> str:
    """The sampler a line that names none gets: the model's makers' recommendation (the default
    model's training.json), else its family's (k_lms as in InvokeAI, except on Kandinsky, whose
    loop cannot run k_lms)."""
    if recommended is not None:
        return recommended
    return FAMILIES[family].default_sampler


def recommended_sampler(folder: Path) -> str | None:
    """The sampler a model folder's training.json recommends (the default model has one)."""
    from invoke.line.samplers import SAMPLERS

    value = read_json(folder / "training.json").get("default_sampler")
    return value if value in SAMPLERS else None
