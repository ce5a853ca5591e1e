"""The session's models: the list from models.yaml, the active one, and the loaded ones.

Models load on first use and stay loaded (least recently used first out, at most
--max_loaded_models), so `!switch` back is instant. A model that failed to load fails the same
way, without loading again, until its files change.
"""

from __future__ import annotations

import gc
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.config import model_files
from invoke.config.models_yaml import (
    ModelEntry,
    change_models_file,
    config_path,
    entry_for_path,
    load_model_entries,
    model_source,
    model_status,
    pick_model,
)
from invoke.config.settings import EMBEDDED_MODEL_DIR, Settings
from invoke.config.shown_defaults import ActiveModel, model_kind
from invoke.errors import ModelError

if TYPE_CHECKING:
    from invoke.backend.model import Model


def embedded_model_dir() -> Path:
    """The default model shipped inside the package; its absence is a broken install."""
    if not (EMBEDDED_MODEL_DIR / "model_index.json").is_file():
        raise ModelError(
            f"the default model is missing: {EMBEDDED_MODEL_DIR} has no model_index.json; "
            f"reinstall invoke-dream, or name another model with --model"
        )
    return EMBEDDED_MODEL_DIR


# The default model's text encoder was saved by transformers >= 5.6, whose CLIPTextModel has no
# `text_model.` level; older ones load none of its weights, and draw noise without an error.
EMBEDDED_NEEDS_TRANSFORMERS = (5, 6)


def transformers_version() -> str:
    from importlib.metadata import version

    return version("transformers")


def check_embedded_transformers() -> None:
    """Refuse, in one line, a transformers that would load the default model wrong."""
    have = transformers_version()
    found = re.match(r"(\d+)\.(\d+)", have)
    if found and (int(found[1]), int(found[2])) < EMBEDDED_NEEDS_TRANSFORMERS:
        need = ".".join(map(str, EMBEDDED_NEEDS_TRANSFORMERS))
        raise ModelError(
            f"the default model needs transformers {need} or newer (this is {have}); "
            f"pip install -U 'transformers>={need}'"
        )


class ModelCache:
    """models.yaml's entries, the active entry and the loaded models."""

    def __init__(
        self,
        settings: Settings,
        note: Callable[[str], None],
        *,
        dry_run: bool,
        remote: bool = False,
    ) -> None:
        self.settings = settings
        self.note = note
        self.dry_run = dry_run
        self.remote = remote  # --workers: models load in the workers; here only files are read
        self.loads = not (dry_run or remote)  # whether a model ever loads in this process
        self.entries: dict[str, ModelEntry] = load_model_entries(config_path(settings))
        self.entry: ModelEntry = pick_model(settings, self.entries)
        # `--model PATH` outside models.yaml: still listed by !models and a !switch target.
        self.unlisted = {} if self.entry.listed else {self.entry.name: self.entry}
        # Loaded models, least recently used first; at most settings.max_loaded_models.
        self.loaded: OrderedDict[str, Model] = OrderedDict()
        # Models that could not load: (entry, files' fingerprint) when it was tried, the error.
        self.failed: dict[str, tuple[tuple[ModelEntry, Any], ModelError]] = {}
        # --refiner paths outside models.yaml, by the text the line gave.
        self.companions: dict[str, ModelEntry] = {}

    # -- the active model ---------------------------------------------------------------------

    @property
    def model(self) -> Model:
        """The active model: loaded on first use, kept (LRU) for a fast !switch back."""
        return self._loaded(self.entry, 1)

    def companion(self, name: str) -> Model:
        """A model the active one works with (--refiner NAME: a models.yaml name or a path),
        loaded beside it, on the same device at the active model's precision: both stay loaded
        (at least two models, whatever --max_loaded_models says)."""
        active = self.model
        entry = self.companion_entry(name)
        if entry.name == self.entry.name:
            return active
        return self._loaded(entry, 2)

    def check_companion(self, name: str | None) -> None:
        """A line's --refiner names a model that is there (--dry-run: nothing loads)."""
        if name is not None:
            self.companion_entry(name)

    def companion_entry(self, name: str) -> ModelEntry:
        """The entry --refiner NAME means: models.yaml's, else a folder or checkpoint path."""
        if name in self.entries or name in self.unlisted:
            return self.model_entry(name)
        if name not in self.companions:
            where = Path(name).expanduser()
            if not where.exists():
                raise ModelError(
                    f"--refiner: {name} is neither a model in {self.models_file_name()} "
                    f"({', '.join(self.model_names())}) nor a path to a diffusers folder or a "
                    ".safetensors/.ckpt file"
                )
            taken = [*self.model_names(), *(e.name for e in self.companions.values())]
            self.companions[name] = entry_for_path(where, taken=taken, switch="--refiner")
        return self.companions[name]

    def _loaded(self, entry: ModelEntry, least: int) -> Model:
        """`entry`'s model, loaded now unless it is (least recently used out, the active one
        never; `least`: how many the cache holds whatever --max_loaded_models says)."""
        name = entry.name
        if name in self.loaded:
            self.loaded.move_to_end(name)
            return self.loaded[name]
        # Make room first: two big models at once may not fit where one does.
        room = max(least, self.settings.max_loaded_models)
        while len(self.loaded) >= room:
            dropped = next((n for n in self.loaded if n != self.entry.name), None)
            if dropped is None:
                break
            del self.loaded[dropped]
            gc.collect()
            self.note(f"model {dropped} unloaded (--max_loaded_models)")
        # A model that failed to load fails the same way until its files change: a batch of
        # many lines on a broken model says why on each line without loading it again each time.
        source = self.source(entry)
        tried = (entry, model_files.fingerprint(source))
        failed = self.failed.get(name)
        if failed is not None and failed[0] == tried:
            raise failed[1]
        try:
            self.loaded[name] = self._load(entry, source)
        except ModelError as err:
            self.failed[name] = (tried, err)
            raise
        self.failed.pop(name, None)
        return self.loaded[name]

    def _load(self, entry: ModelEntry, source: Path) -> Model:
        from invoke.backend.device import use_threads
        from invoke.backend.loading import load_model

        if entry.embedded:
            check_embedded_transformers()
        use_threads(self.settings.threads)
        # Said before the wait, which may be seconds (or minutes, for a big model on a disk).
        self.note(f"loading model {entry.name} ({model_kind(entry)}) on {self.device_name()}...")
        started = time.perf_counter()
        model = load_model(
            source,
            device=self.settings.device,
            # The active model's precision: a companion's latents and UNet meet in one dtype.
            precision=self.precision(self.entry),
            name=entry.name,
            offload=self.settings.offload,
            allow_pickle=self.settings.allow_pickle,
            compile=self.settings.compile,
            family=entry.family,
            config=entry.config,
            vae=entry.vae,
        )
        self.note(
            f"model {entry.name} loaded on {model.device} "
            f"({str(model.dtype).removeprefix('torch.')}) "
            f"in {time.perf_counter() - started:.1f}s"
        )
        return model

    def device_name(self) -> str:
        """Where the active model runs: the loaded model's device, else where --device will put
        it (what `auto` picks on this machine; the option as given when it cannot be had, which
        loading will say)."""
        model = self.loaded_active()
        return str(model.device) if model is not None else _device_for(self.settings.device)

    def active_model(self) -> ActiveModel:
        """The active model as the banner and !help describe it, loading nothing."""
        entry = self.entry
        unread = entry.file is not None and self.loaded_active() is None and not entry.width
        return ActiveModel(
            name=entry.name,
            kind=model_kind(entry),
            size=None if unread else self.native_size,
            sampler=self.default_sampler(),
            device=self.device_name(),
        )

    def loaded_active(self) -> Model | None:
        return self.loaded.get(self.entry.name)

    def active_precision(self) -> str:
        return self.precision(self.entry)

    def precision(self, entry: ModelEntry) -> str:
        """The launch option's precision when given, else the entry's own, else auto."""
        if self.settings.precision == "auto" and entry.precision is not None:
            return entry.precision
        return self.settings.precision

    @property
    def model_hash(self) -> str:
        """The active model's sha256 when the backend gives one (sd-metadata.model_hash)."""
        model = self.loaded_active()
        if model is not None:
            return model.model_hash
        if self.remote:  # the workers' model: the same files, so the same digest
            from invoke.backend.hashing import model_hash

            return model_hash(self.source(self.entry))
        return ""

    def source(self, entry: ModelEntry) -> Path:
        if entry.embedded:
            return embedded_model_dir()
        return model_source(entry, self.settings.allow_downloads)

    # -- what the active model's files say, before it loads (--dry-run) ------------------------

    def unloaded_folder(self) -> Path | None:
        """The active model's diffusers folder on this machine, to read configs from without
        loading it; None for a single checkpoint file (known only once read) or a model that is
        not here (loading will say so)."""
        entry = self.entry
        if entry.file is not None:
            return None
        try:
            if entry.embedded:
                return embedded_model_dir()
            return model_source(entry)  # the local copy only: never downloads for this
        except ModelError:
            return None

    def latent_space(self) -> str | None:
        """The latents the active model's VAE reads, in words: the loaded model's, else its
        folder's config (None: neither to read)."""
        model = self.loaded_active()
        if model is not None:
            return model.latent_space
        return model_files.latent_space(self.unloaded_folder())

    @property
    def native_size(self) -> tuple[int, int]:
        """The active model's size: models.yaml's width/height, else the model's own."""
        entry = self.entry
        if entry.width and entry.height:
            return (entry.width, entry.height)
        size = self._size_of_files()
        return (entry.width or size[0], entry.height or size[1])

    def _size_of_files(self) -> tuple[int, int]:
        model = self.loaded_active()
        if model is None and self.entry.file is not None and self.loads:
            model = self.model  # a checkpoint's size is only known once it is read
        if model is not None:
            size = model.native_size
            return (size, size) if isinstance(size, int) else size
        if self.entry.file is not None:  # --dry-run: the family's usual size, or SD 1.x's
            return model_files.checkpoint_size(self.entry.family)
        if self.entry.embedded and not (EMBEDDED_MODEL_DIR / "model_index.json").is_file():
            return model_files.EMBEDDED_NATIVE_SIZE  # loading will say the install is broken
        return model_files.native_size(self.source(self.entry))

    @property
    def size_multiple(self) -> int:
        """Pixels per latent cell: the loaded model's, else read from its folder's configs, so a
        --dry-run rounds sizes and --outcrop as the real run will (the default model's is 4)."""
        model = self.loaded_active()
        if model is not None:
            return model.size_multiple
        return model_files.cell(self.unloaded_folder())

    def default_sampler(self) -> str:
        """The sampler a line without -A gets: the loaded model's, else read from its folder,
        so --dry-run prints what a run would."""
        model = self.loaded_active()
        if model is not None:
            return model.default_sampler
        return model_files.folder_sampler(self.unloaded_folder(), self.entry.family)

    # -- the model list (!models, !switch, !import_model, ...) -------------------------------

    def model_names(self) -> list[str]:
        """models.yaml's names, then a `--model PATH` model that is in no list."""
        return [*self.entries, *(n for n in self.unlisted if n not in self.entries)]

    def model_entry(self, name: str) -> ModelEntry:
        found = self.entries.get(name) or self.unlisted.get(name)
        if found is None:
            raise ModelError(
                f"model {name}: not in {self.models_file_name()}; the models are "
                f"{', '.join(self.model_names())} (see !models)"
            )
        return found

    def model_state(self, name: str) -> str:
        """active, loaded, not loaded or missing (files not on this machine)."""
        entry = self.model_entry(name)
        if name in self.loaded:
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
        source = self.source(entry)
        if not source.exists():
            raise ModelError(f"model {name}: {source} does not exist (see !models)")
        previous = self.entry
        self.entry = entry
        if self.loads:
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
        for name in list(self.loaded):
            old, new = self.entries.get(name), entries.get(name)
            if old is not None and (new is None or _source_of(new) != _source_of(old)):
                del self.loaded[name]
        self.entries = entries
        if self.entry.listed:
            self.entry = entries.get(self.entry.name, self.entry)


def _device_for(option: str) -> str:
    """Where --device puts a model on this machine; the option as given when it cannot."""
    from invoke.backend.device import pick_device

    try:
        return str(pick_device(option))
    except ModelError:
        return option


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
