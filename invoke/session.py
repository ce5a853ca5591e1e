"""One command line -> jobs -> files: seeds, -n, variations, feedback loops, earlier outputs.

The session is the `Runner` the front ends drive. It owns what a session remembers (seeds and
files made so far, for `-S -1` and `-I -1`) and loads the model once, on the first image.
"""

from __future__ import annotations

import gc
import json
import random
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from invoke import interrupts, outputs
from invoke.backend.job import (
    Control,
    EmbeddingFile,
    Job,
    Lora,
    Noise,
    StepInfo,
    hires_first_pass,
    img2img_steps,
)
from invoke.errors import InvokeError, ModelError
from invoke.events import Tokens
from invoke.images import (
    init_image_size,
    load_control_image,
    load_init_image,
    load_mask,
    outcrop_seam,
    outcrop_size,
    resolve_image_path,
)
from invoke.parse import parse_request
from invoke.prompt_syntax import embedding_names, split_loras
from invoke.request import SEAMLESS_AXES, Request, Variation
from invoke.settings import (
    CONTROLNETS,
    EMBEDDED_MODEL_DIR,
    EMBEDDINGS,
    LORAS,
    SIZE_MULTIPLE,
    UPSCALERS,
    Library,
    ModelEntry,
    Settings,
    change_models_file,
    close_embedding,
    config_path,
    describe_upscaler,
    find_controlnet,
    find_embedding,
    find_lora,
    find_upscaler,
    load_model_entries,
    model_source,
    model_status,
    pick_model,
    resolve,
)

if TYPE_CHECKING:
    from PIL import Image

    from invoke.backend.model import Model
    from invoke.backend.upscale import Upscaler

# Images per UNet batch for `-n` on CUDA: big enough to pay, small enough to interrupt. Elsewhere
# batching buys little, and one image at a time keeps every printed command an exact remake (a
# batch's arithmetic differs from a single image's in the last bits).
CUDA_BATCH = 8
SEED_LIMIT = 2**32
EMBEDDED_NATIVE_SIZE = (64, 64)
# A checkpoint file's size before it is read (--dry-run): the family's usual training size.
FAMILY_SIZES = {"sd-2-v": 768, "sdxl": 1024, "sdxl-refiner": 1024}  # others: 512


@dataclass(frozen=True)
class Pass:
    """One backend job and, for each image it makes, the per-image request that remakes it."""

    job: Job
    requests: tuple[Request, ...]


class Session:
    """Turns requests into images and files; implements the shell's Runner protocol."""

    def __init__(
        self,
        settings: Settings,
        *,
        dry_run: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
        progress: bool = True,
    ) -> None:
        self.settings = settings
        self.outdir = settings.outdir
        self.dry_run = dry_run
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.progress = progress and not dry_run
        self.entries: dict[str, ModelEntry] = load_model_entries(config_path(settings))
        self.entry: ModelEntry = pick_model(settings, self.entries)
        # `--model PATH` outside models.yaml: still listed by !models and a !switch target.
        self._unlisted = {} if self.entry.listed else {self.entry.name: self.entry}
        # Loaded models, least recently used first; at most settings.max_loaded_models.
        self._loaded: OrderedDict[str, Model] = OrderedDict()
        # Models that could not load: (entry, files' fingerprint) when it was tried, the error.
        self._failed: dict[str, tuple[tuple[ModelEntry, Any], ModelError]] = {}
        self._seeds: list[int] = []  # every image's seed, in order: -S -1 is the last
        self._files: list[Path] = []  # every image written: -I -1 is the last
        self._commands = 0  # command lines that made images: the N of "[N.M]"
        self._lora_hash_cache: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> hash
        # The last upscaler -U loaded, with its folder's fingerprint: one changed is loaded again.
        self._upscaler: tuple[tuple[Any, ...], Upscaler] | None = None

    # -- the Runner protocol ------------------------------------------------------------------

    def canonical(self, request: Request) -> str:
        """The complete command a line stands for, without loading the model or drawing."""
        resolved, _ = resolve(
            request,
            self.settings,
            self.native_size,
            self.size_multiple,
            model_defaults=Request(sampler=self._default_sampler()),
        )
        self._loras(resolved)  # an unknown LoRA name fails here too
        self._embeddings(resolved)  # and a pickled embedding without --allow-pickle
        self._controlnet(resolved)  # and an unknown ControlNet
        resolved = self._with_upscaler(resolved)  # and a missing upscaler, or another factor
        outdir = self._outdir_for(resolved)
        if resolved.control_image not in (None, "-1"):
            resolve_image_path(resolved.control_image, outdir)
        if resolved.init_img is not None and resolved.init_img != "-1":
            resolve_image_path(resolved.init_img, outdir)
            resolved = self._outcrop_size(request, resolved, outdir)
        return resolved.to_command()

    def recent_seeds(self) -> list[int]:
        """Seeds of this session's images, oldest first (tab completion after -S)."""
        return list(self._seeds)

    def loras(self) -> tuple[list[Path], list[str]]:
        """The LoRA folders and the names in them (!loras, tab completion in a prompt)."""
        return self._listing(LORAS)

    def embeddings(self) -> tuple[list[Path], list[str]]:
        """The embedding folders and the names in them (!embeddings, completion of `<name>`)."""
        return self._listing(EMBEDDINGS)

    def controlnets(self) -> tuple[list[Path], list[str]]:
        """The ControlNet folders and the names in them (!controlnets, completion after
        --controlnet)."""
        return self._listing(CONTROLNETS)

    def upscalers(self) -> tuple[list[Path], list[str]]:
        """The upscaler folders and the names in them (!upscalers, completion after
        --upscaler)."""
        return self._listing(UPSCALERS)

    def _listing(self, library: Library) -> tuple[list[Path], list[str]]:
        folders = self._folders(library)
        return folders, sorted({name for folder in folders for name in library.names(folder)})

    def _folders(self, library: Library) -> list[Path]:
        """Where a prompt's names are looked up: the user's folder (or the launch option's),
        then the active model's own, when its folder ships one (the default model ships
        loras/outline.safetensors)."""
        folders = [library.folder(self.settings)]
        model_folder = self._unloaded_folder()
        if model_folder is not None and (model_folder / library.default).is_dir():
            folders.append(model_folder / library.default)
        return folders

    def fetch(self, path: str) -> str:
        return outputs.read_command(Path(path).expanduser())

    def generate(self, request: Request) -> list[Path]:
        model = self.model  # loaded first: its size and default sampler fill the line
        resolved, notes = resolve(
            request,
            self.settings,
            self.native_size,
            model.size_multiple,
            model_defaults=Request(sampler=model.default_sampler),
        )
        for note in notes:
            self._note(note)
        if resolved.hires_fix:
            self._note(self._hires_note(resolved))
        self._note_near_misses(resolved)
        resolved = self._with_upscaler(resolved)
        outdir = self._outdir_for(resolved)
        folder = self._output_folder(resolved)
        resolved = replace(resolved, seed=self._base_seed(resolved))
        resolved = self._fill_prompt_from_init(resolved, outdir)
        resolved = self._outcrop_size(request, resolved, outdir)
        written: list[tuple[Path, str]] = []
        made: list[tuple[Image.Image, Request]] = []
        prefix = ""
        upscaler = None
        try:
            for pass_ in self._passes(resolved, outdir, written):
                if not prefix:
                    # Only once the first job is ready (init image read, model loaded, its
                    # LoRAs merged, the upscaler loaded), so a line that fails early does not
                    # use up a prefix.
                    for note in self.model.prepare(pass_.job):
                        self._note(note)
                    if resolved.upscale:
                        upscaler = self._load_upscaler(
                            resolved, (pass_.job.width, pass_.job.height)
                        )
                    prefix = folder.reserve_prefix()
                    self._commands += 1
                images = self._run(pass_, resolved, folder, prefix)
                for image, image_request in zip(images, pass_.requests, strict=True):
                    if upscaler is not None:
                        image = self._upscale(upscaler, image, image_request, folder, prefix)
                    path = self._save(folder, prefix, image, image_request)
                    written.append((path, image_request.to_command()))
                    made.append((image, image_request))
                if interrupts.stop_requested():
                    break
            if resolved.grid and len(made) > 1:
                self._save_grid(folder, prefix, [m[0] for m in made], [m[1] for m in made])
        finally:
            self._print_outputs(written)
        return [path for path, _ in written]

    def _output_folder(self, request: Request) -> outputs.OutputFolder:
        return outputs.OutputFolder(
            self._outdir_for(request),
            fnformat=request.fnformat or self.settings.fnformat,
            png_compression=(
                request.png_compression
                if request.png_compression is not None
                else self.settings.png_compression
            ),
        )

    def canonical_upscale(self, request: Request) -> str:
        """`!fix FILE -U` for --dry-run: its complete command, the upscaler resolved."""
        return self._with_upscaler(request).to_fix_command()

    def upscale_file(self, request: Request) -> list[Path]:
        """`!fix FILE -U`: the init image's own pixels enlarged (nothing is drawn), saved as a new
        picture whose command is the !fix line that makes it again."""
        assert request.init_img is not None and request.upscale
        resolved = self._with_upscaler(replace(request, seed=self._base_seed(request)))
        source = Path(resolved.init_img)
        folder = self._output_folder(resolved)
        upscaler = self._load_upscaler(resolved)
        written: list[tuple[Path, str]] = []
        try:
            loaded = load_init_image(
                source, *init_image_size(source, 1), multiple=upscaler.multiple
            )
            for note in loaded.notes:
                self._note(f"{source.name}: {note}")
            if loaded.mask is not None:
                self._note(f"{source.name}: its transparency is not kept by the upscale")
            image = loaded.image
            upscaler.check_size(*image.size)
            prefix = folder.reserve_prefix()
            self._commands += 1
            large = self._upscale(upscaler, image, resolved, None, prefix)
            command = resolved.to_fix_command()
            path = self._save(folder, prefix, large, resolved, command=command)
            written.append((path, command))
        finally:
            self._print_outputs(written)
        return [path for path, _ in written]

    # -- model ----------------------------------------------------------------------------------

    @property
    def native_size(self) -> tuple[int, int]:
        """The active model's size: models.yaml's width/height, else the model's own."""
        entry = self.entry
        if entry.width and entry.height:
            return (entry.width, entry.height)
        size = self._size_of_files()
        return (entry.width or size[0], entry.height or size[1])

    def _size_of_files(self) -> tuple[int, int]:
        model = self._loaded.get(self.entry.name)
        if model is None and self.entry.file is not None and not self.dry_run:
            model = self.model  # a checkpoint's size is only known once it is read
        if model is not None:
            size = model.native_size
            return (size, size) if isinstance(size, int) else size
        if self.entry.embedded and not (EMBEDDED_MODEL_DIR / "model_index.json").is_file():
            return EMBEDDED_NATIVE_SIZE
        if self.entry.file is not None:  # --dry-run: the family's usual size, or SD 1.x's
            side = FAMILY_SIZES.get(self.entry.family or "", 512)
            return (side, side)
        return _native_size_from_files(self._model_source(self.entry))

    @property
    def size_multiple(self) -> int:
        """Pixels per latent cell: the loaded model's, else read from its folder's configs, so a
        --dry-run rounds sizes and --outcrop as the real run will (the default model's is 4)."""
        model = self._loaded.get(self.entry.name)
        if model is not None:
            return model.size_multiple
        folder = self._unloaded_folder()
        return SIZE_MULTIPLE if folder is None else _cell_from_files(folder)

    def _default_sampler(self) -> str:
        """The sampler a line without -A gets: the loaded model's, else read from its folder
        (the default model's training.json names one), so --dry-run prints what a run would."""
        from invoke.backend.families import default_sampler, recommended_sampler

        model = self._loaded.get(self.entry.name)
        if model is not None:
            return model.default_sampler
        folder = self._unloaded_folder()
        if folder is None:
            return default_sampler(self.entry.family or "sd-1")
        # Kandinsky is the family whose default differs: its folder has a MoVQ, not a VAE.
        kandinsky = "kandinsky-2.2" if (folder / "movq").is_dir() else "sd-1"
        return default_sampler(self.entry.family or kandinsky, recommended_sampler(folder))

    def _unloaded_folder(self) -> Path | None:
        """The active model's diffusers folder on this machine, to read configs from without
        loading it; None for a single checkpoint file (known only once read), the stand-in test
        model (embedded_model_dir) or a model that is not here (loading will say so)."""
        entry = self.entry
        if entry.file is not None:
            return None
        if entry.embedded:
            return (
                EMBEDDED_MODEL_DIR if (EMBEDDED_MODEL_DIR / "model_index.json").is_file() else None
            )
        try:
            return model_source(entry)  # the local copy only: never downloads for this
        except ModelError:
            return None

    @property
    def model(self) -> Model:
        """The active model: loaded on first use, kept (LRU) for a fast !switch back."""
        name = self.entry.name
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name]
        # Make room first: two big models at once may not fit where one does.
        while self._loaded and len(self._loaded) >= max(1, self.settings.max_loaded_models):
            dropped, _ = self._loaded.popitem(last=False)
            gc.collect()
            self._note(f"model {dropped} unloaded (--max_loaded_models)")
        # A model that failed to load fails the same way until its files change: a batch of
        # many lines on a broken model says why on each line without loading it again each time.
        source = self._model_source(self.entry)
        tried = (self.entry, _fingerprint(source))
        failed = self._failed.get(name)
        if failed is not None and failed[0] == tried:
            raise failed[1]
        try:
            self._loaded[name] = self._load(self.entry)
        except ModelError as err:
            self._failed[name] = (tried, err)
            raise
        self._failed.pop(name, None)
        return self._loaded[name]

    def _load(self, entry: ModelEntry) -> Model:
        from invoke.backend.loading import load_model

        started = time.perf_counter()
        model = load_model(
            self._model_source(entry),
            device=self.settings.device,
            precision=self._precision(entry),
            name=entry.name,
            offload=self.settings.offload,
            allow_pickle=self.settings.allow_pickle,
            compile=self.settings.compile,
            family=entry.family,
            config=entry.config,
            vae=entry.vae,
        )
        self._note(
            f"model {entry.name} loaded on {model.device} "
            f"({str(model.dtype).removeprefix('torch.')}) "
            f"in {time.perf_counter() - started:.1f}s"
        )
        return model

    def _precision(self, entry: ModelEntry) -> str:
        """The launch option's precision when given, else the entry's own, else auto."""
        if self.settings.precision == "auto" and entry.precision is not None:
            return entry.precision
        return self.settings.precision

    @property
    def model_hash(self) -> str:
        """The active model's sha256 when the backend gives one (sd-metadata.model_hash)."""
        model = self._loaded.get(self.entry.name)
        return model.model_hash if model is not None else ""

    def _model_source(self, entry: ModelEntry) -> Path:
        if entry.embedded:
            return embedded_model_dir()
        return model_source(entry, self.settings.allow_downloads)

    # -- the model list (!models, !switch, !import_model, ...) -------------------------------------

    def prompt_label(self) -> str:
        return f"({self.entry.name}) invoke> "

    def model_names(self) -> list[str]:
        """models.yaml's names, then a `--model PATH` model that is in no list."""
        return [*self.entries, *(n for n in self._unlisted if n not in self.entries)]

    def model_entry(self, name: str) -> ModelEntry:
        found = self.entries.get(name) or self._unlisted.get(name)
        if found is None:
            raise ModelError(
                f"model {name}: not in {self.models_file_name()}; the models are "
                f"{', '.join(self.model_names())} (see !models)"
            )
        return found

    def model_state(self, name: str) -> str:
        """active, loaded, not loaded or missing (files not on this machine)."""
        entry = self.model_entry(name)
        if name in self._loaded:
            return "active" if name == self.entry.name else "loaded"
        if model_status(entry) != "ok":
            return "missing"
        return "active" if name == self.entry.name else "not loaded"

    def switch(self, name: str) -> ModelEntry:
        """Make `name` the active model, loading it now (unless --dry-run) so a model that
        cannot load leaves the active one in place."""
        entry = self.model_entry(name)
        if entry.name == self.entry.name:
            return entry
        source = self._model_source(entry)
        if not source.exists():
            raise ModelError(f"model {name}: {source} does not exist (see !models)")
        previous = self.entry
        self.entry = entry
        if not self.dry_run:
            try:
                self.model.name  # noqa: B018 - loads it: the error is the switch's
            except BaseException:
                self.entry = previous
                raise
        return entry

    def models_file_name(self) -> str:
        path = config_path(self.settings)
        return str(path) if path is not None else "the built-in model list"

    def change_models(self, change: Callable[[dict[str, Any]], None]) -> Path:
        """Change models.yaml (the user's copy) and use the result; returns the file written."""
        written = change_models_file(self.settings, change)
        self.reload_models()
        return written

    def reload_models(self) -> None:
        """Read models.yaml again; loaded models whose entry went or changed source are dropped."""
        entries = load_model_entries(config_path(self.settings))
        for name in list(self._loaded):
            old, new = self.entries.get(name), entries.get(name)
            if old is not None and (new is None or _source_of(new) != _source_of(old)):
                del self._loaded[name]
        self.entries = entries
        if self.entry.listed:
            self.entry = entries.get(self.entry.name, self.entry)

    # -- request -> passes ----------------------------------------------------------------------

    def _outdir_for(self, request: Request) -> Path:
        return Path(request.outdir).expanduser() if request.outdir else self.outdir

    def _base_seed(self, request: Request) -> int:
        if request.seed is None:
            return secrets.randbelow(SEED_LIMIT)
        if request.seed >= 0:
            return request.seed
        back = -request.seed
        if back > len(self._seeds):
            made = len(self._seeds)
            raise InvokeError(
                f"-S/--seed: {request.seed} means the seed of the image {back} back, but this "
                f"session has made {made}; give a seed 0..{SEED_LIMIT - 1}"
            )
        return self._seeds[-back]

    def _init_path(self, request: Request, outdir: Path) -> Path | None:
        return self._image_path(request.init_img, "-I/--init_img", outdir)

    def _image_path(self, value: str | None, switch: str, outdir: Path) -> Path | None:
        """An image switch's file: -1 is the previous output, a bare name may be in outdir."""
        if value is None:
            return None
        if value == "-1":
            if not self._files:
                raise InvokeError(f"{switch}: -1 means the previous output, but none exists yet")
            return self._files[-1]
        return resolve_image_path(value, outdir)

    def _fill_prompt_from_init(self, request: Request, outdir: Path) -> Request:
        """No prompt text with an init image: take the prompt stored in the image."""
        if request.prompt.strip():
            return request
        path = self._init_path(request, outdir)
        if path is None:
            raise InvokeError('no prompt: type what to draw first, e.g. "a red circle -s 20"')
        try:
            stored = parse_request(outputs.read_command(path))
        except InvokeError as exc:
            raise InvokeError(f"{exc}; or type a prompt before -I") from exc
        self._note(f'prompt from {path.name}: "{stored.prompt}"')
        return replace(request, prompt=stored.prompt)

    def _outcrop_size(self, line: Request, request: Request, outdir: Path) -> Request:
        """--outcrop: -W/-H become the grown canvas's size, so the printed line, sd-metadata and
        the file name's {width}/{height} tell the picture's real size (and the remake agrees)."""
        if not request.outcrop:
            return request
        path = self._init_path(request, outdir)
        assert path is not None  # validate() refuses --outcrop without -I
        source = init_image_size(path, self.size_multiple)
        width, height = outcrop_size(source, request.outcrop)
        given = (line.width, line.height)
        if given != (None, None) and given != (width, height):
            self._note(
                f"-W/-H: with --outcrop the size is {path.name}'s {source[0]}x{source[1]} plus the "
                f"pixels added, {width}x{height}; the line's -W/-H are not used"
            )
        added = " ".join(f"{side} {pixels}" for side, pixels in request.outcrop)
        seam = outcrop_seam(self.size_multiple)
        self._note(
            f"outcrop: {path.name} {source[0]}x{source[1]} grown to {width}x{height} ({added}); "
            f"the new area and a {seam}-pixel strip of the old edge are painted"
        )
        return replace(request, width=width, height=height)

    def _passes(self, request: Request, outdir: Path, written: list[tuple[Path, str]]):
        """Yield the jobs of one command line, lazily: a feedback pass needs the last file."""
        count = request.iterations or 1
        base = request.seed
        assert base is not None
        chain = tuple((v.seed, v.weight) for v in request.with_variations)
        amount = request.variation_amount or 0.0
        init_path = self._init_path(request, outdir)
        control_path = self._image_path(request.control_image, "--control_image", outdir)
        if control_path is not None:
            # Resolved once: -1 stays the image it was when the line started, in every pass and
            # in every image's command.
            request = replace(request, control_image=str(control_path))

        if amount > 0 and init_path is not None:
            # The InvokeAI img2img guide's loop: output k is the init image of pass k+1, each
            # pass with variation noise around the base seed. Each file names its own init.
            source = init_path
            for k in range(count):
                seed = derive_seed(base, k + 1)
                noise = Noise(base, (*chain, (seed, amount)))
                image_request = self._image_request(request, noise, source)
                yield Pass(self._job(request, (noise,), source), (image_request,))
                source = written[-1][0]
            return

        if amount > 0:
            noises = [
                Noise(base, (*chain, (derive_seed(base, k + 1), amount))) for k in range(count)
            ]
        else:
            noises = [Noise(derive_seed(base, k), chain if k == 0 else ()) for k in range(count)]
        size = CUDA_BATCH if self.model.device.type == "cuda" else 1
        for start in range(0, count, size):
            batch = tuple(noises[start : start + size])
            requests = tuple(self._image_request(request, n, init_path) for n in batch)
            yield Pass(self._job(request, batch, init_path), requests)

    def _image_request(self, request: Request, noise: Noise, init: Path | None) -> Request:
        """The per-image request: exactly what remakes this one image, nothing about outputs."""
        return replace(
            request,
            seed=noise.seed,
            with_variations=tuple(Variation(s, w) for s, w in noise.variations),
            init_img=str(init) if init is not None else None,
            iterations=None,
            variation_amount=None,
            grid=False,
            outdir=None,
            log_tokenization=False,
            save_intermediates=None,
            intermediates=None,
            fnformat=None,
            png_compression=None,
        )

    def _first_pass(self, request: Request) -> tuple[int, int] | None:
        """--hires_fix's first-pass size against the model's native size (models.yaml's
        width/height, else the model's own: the size -W/-H default to)."""
        if not request.hires_fix or request.init_img is not None:
            return None
        assert request.width and request.height
        return hires_first_pass(request.width, request.height, self.native_size, self.size_multiple)

    def _hires_note(self, request: Request) -> str:
        assert request.width and request.height and request.steps
        first = self._first_pass(request)
        if first is None:
            native = "x".join(map(str, self.native_size))
            return (
                f"hires_fix: {request.width}x{request.height} is not larger than the model's "
                f"native {native}; one pass, as without --hires_fix"
            )
        strength = request.strength if request.strength is not None else 0.75
        taken = img2img_steps(request.steps, strength)
        return (
            f"hires_fix: {first[0]}x{first[1]} first, then its latents upscaled to "
            f"{request.width}x{request.height} and redrawn at strength {strength:g} "
            f"({taken} of {request.steps} steps)"
        )

    def _job(self, request: Request, noises: tuple[Noise, ...], init: Path | None) -> Job:
        assert request.steps and request.width and request.height
        init_image = mask = None
        width, height = request.width, request.height
        if init is not None:
            loaded = load_init_image(
                init,
                request.width,
                request.height,
                request.fit,
                self.size_multiple,
                outcrop=request.outcrop,
            )
            for note in loaded.notes:
                self._note(f"{init.name}: {note}")
            init_image, mask = loaded.image, loaded.mask
            width, height = init_image.size
            if request.init_mask is not None:
                mask_path = resolve_image_path(request.init_mask, self._outdir_for(request))
                mask_notes: list[str] = []
                mask = load_mask(mask_path, init_image.size, request.invert_mask, mask_notes)
                for note in mask_notes:
                    self._note(f"{mask_path.name}: {note}")
        prompt, loras = self._loras(request)
        control = self._control(request, width, height)
        return Job(
            prompt=prompt,
            skip_normalize=request.skip_normalize,
            steps=request.steps,
            cfg_scale=request.cfg_scale if request.cfg_scale is not None else 7.5,
            sampler=request.sampler or "k_lms",
            width=width,
            height=height,
            noises=noises,
            init_image=init_image,
            mask=mask,
            strength=request.strength if request.strength is not None else 0.75,
            intermediate_every=request.save_intermediates or 0,
            log_tokenization=request.log_tokenization,
            seamless_axes=(request.seamless_axes or SEAMLESS_AXES) if request.seamless else (),
            first_pass=self._first_pass(request),
            loras=loras,
            embeddings=self._embeddings(request),
            control=control,
        )

    def _loras(self, request: Request) -> tuple[str, tuple[Lora, ...]]:
        """The prompt without its LoRA references, and their files (an unknown name is an
        InvokeError that lists the names there are)."""
        prompt, uses = split_loras(request.prompt)
        folders = self._folders(LORAS)
        loras = []
        for use in uses:
            path = find_lora(use.name, folders)
            info = path.stat()
            loras.append(Lora(use.name, str(path), use.weight, (info.st_size, info.st_mtime_ns)))
        return prompt, tuple(loras)

    def _controlnet(self, request: Request) -> Path | None:
        """The weights file of the line's ControlNet (an unknown one is an InvokeError that
        lists those there are)."""
        if request.controlnet is None:
            return None
        folders = self._folders(CONTROLNETS)
        return find_controlnet(request.controlnet, folders, self.settings.allow_downloads)

    def _control(self, request: Request, width: int, height: int) -> Control | None:
        """The job's ControlNet and its image, at the picture's size."""
        weights = self._controlnet(request)
        if weights is None:
            return None
        assert request.controlnet is not None and request.control_image is not None
        path = Path(request.control_image)  # resolved by _passes
        image, notes = load_control_image(path, (width, height), request.control_processor)
        for note in notes:
            self._note(f"{path.name}: {note}")
        info = weights.stat()
        return Control(
            name=request.controlnet,
            path=str(weights),
            image=image,
            weight=1.0 if request.control_weight is None else request.control_weight,
            start=request.control_start or 0.0,
            end=1.0 if request.control_end is None else request.control_end,
            stamp=(info.st_size, info.st_mtime_ns),
        )

    def _upscaler_folder(self, request: Request) -> tuple[str, Path] | None:
        """The line's upscaler (-U, and --upscaler or the default for its factor) as the line
        records it and its folder, checked to be an upscaler of the line's factor; None
        without -U."""
        if not request.upscale:
            return None
        factor = request.upscale[0]
        model_folder = self._unloaded_folder()
        own = None if model_folder is None else model_folder / UPSCALERS.default
        name, folder = find_upscaler(
            request.upscaler,
            factor,
            self._folders(UPSCALERS),
            own=own if own is not None and own.is_dir() else None,
            allow_downloads=self.settings.allow_downloads,
        )
        made = describe_upscaler(folder)[1]
        if made != factor:
            raise InvokeError(
                f"--upscaler: {name} enlarges {made}x, not {factor}x; use -U {made}, "
                f"or an upscaler that makes {factor}x"
            )
        return name, folder

    def _with_upscaler(self, request: Request) -> Request:
        """-U without --upscaler names the upscaler it resolves to, so the picture's command
        says which one made it (a later upscalers/ folder or model does not change it)."""
        found = self._upscaler_folder(request)
        return request if found is None else replace(request, upscaler=found[0])

    def _load_upscaler(self, request: Request, size: tuple[int, int] | None = None) -> Upscaler:
        """The line's upscaler, loaded (and kept for the next line) on the device and in the
        precision the model gets, and refused now if the pictures' size does not suit it,
        before anything is drawn."""
        from invoke.backend.device import pick_device, pick_dtype
        from invoke.backend.upscale import Upscaler

        found = self._upscaler_folder(request)
        assert found is not None
        name, folder = found
        key = (folder.resolve(), _fingerprint(folder))
        if self._upscaler is None or self._upscaler[0] != key:
            self._upscaler = None  # the old one's memory goes before the new one loads
            gc.collect()
            device = pick_device(self.settings.device)
            dtype = pick_dtype(self._precision(self.entry), device)
            started = time.monotonic()
            upscaler = Upscaler(folder, device, dtype, name=name, offload=self.settings.offload)
            self._upscaler = (key, upscaler)
            self._note(
                f"upscaler {name} loaded ({upscaler.factor}x, "
                f"{upscaler.steps} steps a picture) in {time.monotonic() - started:.1f}s"
            )
        upscaler = self._upscaler[1]
        if size is not None:
            upscaler.check_size(*size)
        return upscaler

    def _upscale(
        self,
        upscaler: Upscaler,
        image: Image.Image,
        request: Request,
        folder: outputs.OutputFolder | None,
        prefix: str,
    ) -> Image.Image:
        """The picture made larger by -U. If it fails (out of memory) or a second Ctrl-C stops
        it, the picture as drawn is kept (given the folder: a file upscaled is kept already),
        saved under the command that makes it without -U."""
        from invoke.parse import split_prompt
        from invoke.prompt_syntax import parse_weighting, plain_text

        assert request.upscale and request.seed is not None
        factor, strength = request.upscale
        parts = split_prompt(request.prompt, request.skip_normalize)
        prompt = ", ".join(plain_text(parse_weighting(text)) for text, _ in parts.positive)
        negative = plain_text(parse_weighting(parts.negative))
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=upscaler.steps,
                desc=f"upscale {factor}x",
                unit="step",
                file=self.err,
                leave=False,
            )

        def on_step(step: int, total: int) -> None:
            if bar is not None:
                bar.update(1)

        try:
            return upscaler.upscale(
                image,
                prompt=prompt,
                negative=negative,
                seed=request.seed,
                strength=strength,
                on_step=on_step,
            )
        except (KeyboardInterrupt, InvokeError):
            if folder is None:
                raise
            plain = replace(request, upscale=(), upscaler=None)
            path = self._save(folder, prefix, image, plain)
            self._note(f"not upscaled; the picture as drawn is {path}: {plain.to_command()}")
            raise
        finally:
            if bar is not None:
                bar.close()

    def _embeddings(self, request: Request) -> tuple[EmbeddingFile, ...]:
        """The embedding files the prompt's `<name>` words stand for; a `<name>` with no file
        in the folder is text (a pickle without --allow-pickle is an InvokeError)."""
        folders = self._folders(EMBEDDINGS)
        found = []
        for name in embedding_names(request.prompt):
            path = find_embedding(name, folders, self.settings.allow_pickle)
            if path is not None:
                info = path.stat()
                found.append(EmbeddingFile(name, str(path), (info.st_size, info.st_mtime_ns)))
        return tuple(found)

    def _note_near_misses(self, request: Request) -> None:
        """A `<name>` that is text but nearly an embedding's name is probably a typo: say so
        (the line still runs, with the text)."""
        folders = self._folders(EMBEDDINGS)
        for name in embedding_names(request.prompt):
            if find_embedding(name, folders, allow_pickle=True) is not None:
                continue
            close = close_embedding(name, folders)
            if close is not None:
                self._note(
                    f"<{name}> is text: no embedding of that name in {folders[0]}; "
                    f"did you mean <{close}>?"
                )

    # -- running and saving ---------------------------------------------------------------------

    def _run(
        self, pass_: Pass, request: Request, folder: outputs.OutputFolder, prefix: str
    ) -> list[Image.Image]:
        job = pass_.job
        model = self.model
        if job.init_image is not None:
            self._note(
                f"img2img: {job.steps_taken} of {job.steps} steps at strength {job.strength:.2f}"
            )
        bar = self._progress_bar(job)
        every = job.intermediate_every
        dumps = (
            [folder.intermediates(prefix, outputs.file_seed(r)) for r in pass_.requests]
            if every
            else []
        )

        def on_step(info: StepInfo) -> None:
            if info.step > 0 and bar is not None:
                bar.update(1)
            if dumps and (info.step % every == 0 or info.step == info.total):
                decode = request.intermediates == "decode"
                pictures = model.decode(info.latents) if decode else model.preview(info.latents)
                latents = info.latents.float().cpu().numpy()
                for i, dump in enumerate(dumps):
                    dump.save_step(info.step, info.timestep, latents[i], pictures[i])

        def print_tokens(event: object) -> None:
            # -t is output the user asked for, so it is printed, as InvokeAI did.
            if isinstance(event, Tokens):
                print(f">> Tokens ({event.count}): {event.shown}")
                if event.dropped_count:
                    print(f">> Tokens dropped ({event.dropped_count}): {event.dropped}")

        try:
            images = model.generate(job, on_step=on_step, on_event=print_tokens)
        finally:
            if bar is not None:
                bar.close()
        for dump in dumps:
            dump.finish()
        return images

    def _progress_bar(self, job: Job) -> Any:
        if not self.progress:
            return None
        from tqdm import tqdm

        label = "image" if len(job.noises) == 1 else f"{len(job.noises)} images"
        return tqdm(total=job.steps_taken, desc=label, unit="step", file=self.err, leave=False)

    def _save(
        self,
        folder: outputs.OutputFolder,
        prefix: str,
        image: Image.Image,
        request: Request,
        command: str | None = None,
    ) -> Path:
        """Save with the request's command, or `command` (a !fix upscale: then the upscaler is
        the model that made it)."""
        path = folder.save_image(
            image,
            request,
            prefix,
            model_id=self.entry.name if command is None else str(request.upscaler),
            model_hash=self.model_hash if command is None else "",
            command=command,
            lora_hashes=self._lora_hashes(request) if command is None else {},
        )
        assert request.seed is not None
        self._seeds.append(request.seed)
        self._files.append(path)
        return path

    def _save_grid(
        self,
        folder: outputs.OutputFolder,
        prefix: str,
        images: list[Image.Image],
        requests: list[Request],
    ) -> None:
        # Each image is saved on its own too, so the grid's name says what it is.
        name = f"{prefix}.{outputs.file_seed(requests[0])}.grid.png"
        path = folder.save_grid(
            images,
            requests,
            prefix,
            model_id=self.entry.name,
            model_hash=self.model_hash,
            name=name,
            lora_hashes=self._lora_hashes(requests[0]),
        )
        self._note(f"grid: {path}")

    def _lora_hashes(self, request: Request) -> dict[str, str]:
        """Each LoRA's hash by the name the prompt gives it, computed once per file version."""
        from invoke.backend.hashing import lora_hash

        hashes = {}
        for lora in self._loras(request)[1]:
            stat = Path(lora.path).stat()
            key = (lora.path, stat.st_size, stat.st_mtime_ns)
            if key not in self._lora_hash_cache:
                self._lora_hash_cache[key] = lora_hash(Path(lora.path))
            hashes[lora.name] = self._lora_hash_cache[key]
        return hashes

    def _print_outputs(self, written: list[tuple[Path, str]]) -> None:
        if not written:
            return
        print("Outputs:", file=self.out)
        for i, (path, command) in enumerate(written, start=1):
            label = f"{self._commands}" if len(written) == 1 else f"{self._commands}.{i}"
            print(f"[{label}] {path}: {command}", file=self.out)
        self.out.flush()

    def _note(self, text: str) -> None:
        if not self.dry_run:
            print(f">> {text}", file=self.err)


def _source_of(entry: ModelEntry) -> tuple[object, ...]:
    return (
        entry.path,
        entry.file,
        entry.repo_id,
        entry.embedded,
        entry.vae,
        entry.config,
        entry.precision,
        entry.family,
    )


def _fingerprint(source: Path, depth: int = 3) -> tuple[tuple[str, int, int], ...]:
    """(path, size, modification time) of a model file, or of the files of a model folder down
    to `depth` levels (a diffusers folder's weights sit at the second): what changes when the
    user fixes a model's files."""
    found: list[tuple[str, int, int]] = []
    pending = [(source, 0)]
    while pending:
        path, level = pending.pop()
        try:
            info = path.stat()
        except OSError:
            continue
        found.append((str(path), info.st_size, info.st_mtime_ns))
        if path.is_dir() and level < depth:
            try:
                pending.extend((child, level + 1) for child in path.iterdir())
            except OSError:
                continue
    return tuple(sorted(found))


def derive_seed(base: int, k: int) -> int:
    """Image k's seed in a command: the base for k = 0, then a fixed function of (base, k),
    so `-S 42 -n 3` makes the same three images every time."""
    if k == 0:
        return base
    return random.Random(base * 1_000_003 + k).randrange(SEED_LIMIT)


def embedded_model_dir() -> Path:
    """The shipped default model; until one is trained, a tiny random test model built once."""
    if (EMBEDDED_MODEL_DIR / "model_index.json").is_file():
        return EMBEDDED_MODEL_DIR
    from invoke.backend.testmodel import build_test_model

    cache = _cache_dir() / "test-model-v1"
    if not (cache / "model_index.json").is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = cache.with_name(f"{cache.name}.tmp-{secrets.token_hex(4)}")
        build_test_model(staging, seed=0)
        try:
            staging.rename(cache)
        except OSError:  # another process built it first: theirs is identical
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return cache


def _cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "invoke-dream"


def _native_size_from_files(folder: Path) -> tuple[int, int]:
    """A diffusers folder's native size, read from its configs without loading weights."""
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
    except (OSError, ValueError):
        return (512, 512)  # the loader will say what is wrong with the folder
    sample = unet.get("sample_size", 64)
    factor = _vae_cell(vae)
    if isinstance(sample, list):
        return (sample[1] * factor, sample[0] * factor)
    return (sample * factor, sample * factor)


def _cell_from_files(folder: Path) -> int:
    """A diffusers folder's pixels per latent cell without loading it (Model.size_multiple):
    its VAE's, or the square of Kandinsky's MoVQ cell, as its pipeline rounds sides."""
    for part, squared in (("vae", False), ("movq", True)):
        try:
            config = json.loads((folder / part / "config.json").read_text())
        except (OSError, ValueError):
            continue
        cell = _vae_cell(config)
        return cell * cell if squared else cell
    return SIZE_MULTIPLE


def _vae_cell(config: dict[str, Any]) -> int:
    """Each down block of the VAE but the last halves the image."""
    return 2 ** (len(config.get("block_out_channels", [0, 0, 0, 0])) - 1)
