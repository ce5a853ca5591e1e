"""Where a line's names are found: LoRAs, embeddings, ControlNets, IP-Adapters and upscalers,
in the user's folders (or the launch options') and then in the active model's own folder when it
ships one (the default model ships loras/outline.safetensors).

Nothing here loads a model: a name that is not there is an InvokeError listing those that are,
before anything is drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from invoke.backend.job import EmbeddingFile, Lora
from invoke.config.libraries import (
    CONTROLNETS,
    EMBEDDINGS,
    IP_ADAPTERS,
    LORAS,
    UPSCALERS,
    Library,
    close_embedding,
    describe_upscaler,
    find_controlnet,
    find_embedding,
    find_ip_adapter,
    find_lora,
    find_upscaler,
)
from invoke.config.settings import Settings
from invoke.errors import InvokeError
from invoke.line.request import Request


class Lookup:
    """The library folders of a session; `model_folder` gives the active model's folder (None
    for a checkpoint file or a model not on this machine)."""

    def __init__(self, settings: Settings, model_folder: Callable[[], Path | None]) -> None:
        self.settings = settings
        self.model_folder = model_folder
        self._hashes: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> LoRA hash

    def folders(self, library: Library) -> list[Path]:
        """The user's folder (or the launch option's), then the active model's own."""
        folders = [library.folder(self.settings)]
        own = self._own(library)
        if own is not None:
            folders.append(own)
        return folders

    def _own(self, library: Library) -> Path | None:
        model_folder = self.model_folder()
        if model_folder is None or not (model_folder / library.default).is_dir():
            return None
        return model_folder / library.default

    def listing(self, library: Library) -> tuple[list[Path], list[str]]:
        """The folders and the names in them (!loras, tab completion...)."""
        folders = self.folders(library)
        return folders, sorted({name for folder in folders for name in library.names(folder)})

    def loras(self, request: Request) -> tuple[Lora, ...]:
        """The files of the prompt's LoRA references (an unknown name is an InvokeError that
        lists the names there are)."""
        folders = self.folders(LORAS)
        loras = []
        for use in request.parsed_prompt.loras:
            path = find_lora(use.name, folders)
            info = path.stat()
            loras.append(Lora(use.name, str(path), use.weight, (info.st_size, info.st_mtime_ns)))
        return tuple(loras)

    def embeddings(self, request: Request) -> tuple[EmbeddingFile, ...]:
        """The embedding files the prompt's `<name>` words stand for; a `<name>` with no file
        in the folder is text (a pickle without --allow-pickle is an InvokeError)."""
        folders = self.folders(EMBEDDINGS)
        found = []
        for name in request.parsed_prompt.embeddings:
            path = find_embedding(name, folders, self.settings.allow_pickle)
            if path is not None:
                info = path.stat()
                found.append(EmbeddingFile(name, str(path), (info.st_size, info.st_mtime_ns)))
        return tuple(found)

    def near_misses(self, request: Request) -> list[str]:
        """A `<name>` that is text but nearly an embedding's name is probably a typo: the notes
        that say so (the line still runs, with the text)."""
        folders = self.folders(EMBEDDINGS)
        notes = []
        for name in request.parsed_prompt.embeddings:
            if find_embedding(name, folders, allow_pickle=True) is not None:
                continue
            close = close_embedding(name, folders)
            if close is not None:
                notes.append(
                    f"<{name}> is text: no embedding of that name in {folders[0]}; "
                    f"did you mean <{close}>?"
                )
        return notes

    def controlnet(self, request: Request) -> Path | None:
        """The weights file of the line's (first) ControlNet (an unknown one is an InvokeError
        that lists those there are)."""
        found = self.controlnets(request)
        return found[0] if found else None

    def controlnets(self, request: Request) -> tuple[Path, ...]:
        """The weights file of each of the line's ControlNet units, in the line's order."""
        folders = self.folders(CONTROLNETS)
        return tuple(
            find_controlnet(unit.controlnet, folders, self.settings.allow_downloads)
            for unit in request.controls
            if unit.controlnet is not None
        )

    def ip_adapter(self, request: Request) -> tuple[Path, Path] | None:
        """The line's IP-Adapter file and its image encoder's folder; None without one (an
        unknown name is an InvokeError that lists those there are)."""
        if request.ip_adapter is None:
            return None
        return find_ip_adapter(request.ip_adapter, self.folders(IP_ADAPTERS))

    def upscaler(self, request: Request) -> tuple[str, Path] | None:
        """The line's upscaler (-U, and --upscaler or the default for its factor) as the line
        records it and its folder, checked to be an upscaler of the line's factor; None
        without -U."""
        if not request.upscale:
            return None
        factor = request.upscale[0]
        name, folder = find_upscaler(
            request.upscaler,
            factor,
            self.folders(UPSCALERS),
            own=self._own(UPSCALERS),
            allow_downloads=self.settings.allow_downloads,
        )
        made = describe_upscaler(folder)[1]
        if made != factor:
            raise InvokeError(
                f"--upscaler: {name} enlarges {made}x, not {factor}x; use -U {made}, "
                f"or an upscaler that makes {factor}x"
            )
        return name, folder

    def with_upscaler(self, request: Request) -> Request:
        """-U without --upscaler names the upscaler it resolves to, so the picture's command
        says which one made it (a later upscalers/ folder or model does not change it)."""
        found = self.upscaler(request)
        return request if found is None else replace(request, upscaler=found[0])

    def lora_hashes(self, request: Request) -> dict[str, str]:
        """Each LoRA's hash by the name the prompt gives it (A1111's "Lora hashes"), computed
        once per file version."""
        from invoke.backend.hashing import lora_hash

        hashes = {}
        for lora in self.loras(request):
            stat = Path(lora.path).stat()
            key = (lora.path, stat.st_size, stat.st_mtime_ns)
            if key not in self._hashes:
                self._hashes[key] = lora_hash(Path(lora.path))
            hashes[lora.name] = self._hashes[key]
        return hashes
