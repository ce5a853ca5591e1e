"""A planned pass -> the backend's Job: the files a line names are found and its images read
(init image, mask, control image, image prompt), with no model involved. Also the two resolve
steps that read the init image: its stored prompt (a line with no prompt) and its size
(--outcrop).

Notes for the person (an image resized, a mask inverted...) go to `note`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from invoke import outputs
from invoke.backend.job import Control, ImagePrompt, Job, Noise, Refiner
from invoke.config.lookup import Lookup
from invoke.errors import InitImageError, InvokeError
from invoke.images import (
    init_image_size,
    load_control_image,
    load_init_image,
    load_mask,
    load_prompt_image,
    outcrop_seam,
    outcrop_size,
    resolve_image_path,
)
from invoke.latents_file import load_latents
from invoke.line.parse import parse_request
from invoke.line.request import ControlUnit, Request
from invoke.line.switch_defaults import REFINER_START
from invoke.line.switches import SEAMLESS_AXES, SIZE_MAX

Note = Callable[[str], None]


def prompt_from_init(request: Request, init: Path | None, note: Note) -> Request:
    """No prompt text with an init image: take the prompt stored in the image."""
    if request.prompt.strip():
        return request
    if init is None:
        raise InvokeError('no prompt: type what to draw first, e.g. "a red circle -s 20"')
    try:
        stored = parse_request(outputs.read_command(init))
    except InvokeError as exc:
        raise InvokeError(f"{exc}; or type a prompt before -I") from exc
    note(f'prompt from {init.name}: "{stored.prompt}"')
    return replace(request, prompt=stored.prompt)


def outcrop_canvas(
    line: Request, request: Request, init: Path | None, multiple: int, note: Note
) -> Request:
    """--outcrop: -W/-H become the grown canvas's size, so the printed line, sd-metadata and
    the file name's {width}/{height} tell the picture's real size (and the remake agrees)."""
    if not request.outcrop:
        return request
    assert init is not None  # validate() refuses --outcrop without -I
    source = init_image_size(init, multiple)
    if min(source) < multiple:  # rounded down to nothing: there is no edge to grow from
        raise InitImageError(
            f"init image {init}: under {multiple}×{multiple} once rounded down to a multiple "
            f"of {multiple}; --outcrop needs an image at least that large"
        )
    width, height = outcrop_size(source, request.outcrop)
    added = " ".join(f"{side} {pixels}" for side, pixels in request.outcrop)
    if width > SIZE_MAX or height > SIZE_MAX:
        # The picture's command names its size: one over -W/-H's limit could not be run again.
        raise InitImageError(
            f"-c/--outcrop: {init.name} is {source[0]}x{source[1]} and {added} would make it "
            f"{width}x{height}; a picture is at most {SIZE_MAX} pixels a side (as -W/-H allow), "
            f"so add at most {max(0, SIZE_MAX - source[0])} left and right together and "
            f"{max(0, SIZE_MAX - source[1])} top and bottom"
        )
    given = (line.width, line.height)
    if given != (None, None) and given != (width, height):
        note(
            f"-W/-H: with --outcrop the size is {init.name}'s {source[0]}x{source[1]} plus the "
            f"pixels added, {width}x{height}; the line's -W/-H are not used"
        )
    note(
        f"outcrop: {init.name} {source[0]}x{source[1]} grown to {width}x{height} ({added}); "
        f"the new area and a {outcrop_seam(multiple)}-pixel strip of the old edge are painted"
    )
    return replace(request, width=width, height=height)


def init_canvas(request: Request, init: Path | None, multiple: int, note: Note) -> Request:
    """-I without --fit or --outcrop: the picture is the init image's own size (rounded down)
    whatever -W/-H say, so -W/-H become that size: the printed line, sd-metadata, `parameters`
    and the file name's {width}/{height} tell the picture's real size, and the remake agrees
    (-W/-H size an init image only with --fit). Before, a 512x384 picture drawn from its own
    file stored the model's -W 64 -H 64."""
    if init is None or request.fit or request.outcrop or request.width is None:
        return request
    size = init_image_size(init, multiple)
    if min(size) < multiple:
        return request  # load_init_image says what is wrong with it
    model = (request.width, request.height or 0)
    if size[0] < model[0] or size[1] < model[1]:
        note(
            f"{init.name}: {size[0]}×{size[1]} is smaller than {model[0]}×{model[1]}: results "
            "get poor below the model's size (try --fit with -W/-H)"
        )
    return replace(request, width=size[0], height=size[1])


class JobMaker:
    """Builds the Jobs of one line (its request resolved, its control image a path)."""

    def __init__(
        self,
        request: Request,
        lookup: Lookup,
        note: Note,
        *,
        multiple: int,
        outdir: Path,
        first_pass: tuple[int, int] | None,
    ) -> None:
        self.request = request
        self.lookup = lookup
        self.note = note
        self.multiple = multiple
        self.outdir = outdir
        self.first_pass = first_pass

    def job(self, noises: tuple[Noise, ...], init: Path | None) -> Job:
        request = self.request
        assert request.steps and request.width and request.height
        init_image = mask = None
        width, height = request.width, request.height
        if init is not None:
            init_image, mask = self._init_image(init)
            width, height = init_image.size
        init_latents = None
        if request.latents is not None:
            path = Path(request.latents)
            init_latents = load_latents(path, width, height, self.multiple)
        return Job(
            prompt=request.parsed_prompt,
            steps=request.steps,
            cfg_scale=request.cfg_scale if request.cfg_scale is not None else 7.5,
            sampler=request.sampler or "k_lms",
            width=width,
            height=height,
            noises=noises,
            init_image=init_image,
            mask=mask,
            init_latents=init_latents,
            strength=request.strength if request.strength is not None else 0.75,
            intermediate_every=request.save_intermediates or 0,
            intermediates=request.intermediates or "preview",
            log_tokenization=request.log_tokenization,
            seamless_axes=(request.seamless_axes or SEAMLESS_AXES) if request.seamless else (),
            first_pass=self.first_pass,
            loras=self.lookup.loras(request),
            embeddings=self.lookup.embeddings(request),
            **self._controls(width, height),
            refiner=self._refiner(),
            image_prompt=self._image_prompt(),
        )

    def _refiner(self) -> Refiner | None:
        request = self.request
        if request.refiner is None:
            return None
        return Refiner(request.refiner, request.refiner_start or REFINER_START)

    def _image_prompt(self) -> ImagePrompt | None:
        """--ip_adapter: the adapter's file and image encoder, and the picture it shows."""
        request = self.request
        found = self.lookup.ip_adapter(request)
        if found is None:
            return None
        assert request.ip_adapter is not None and request.ip_image is not None
        adapter, encoder = found
        path = Path(request.ip_image)  # resolved by the session
        image, notes = load_prompt_image(path)
        for note in notes:
            self.note(f"{path.name}: {note}")
        info = adapter.stat()
        return ImagePrompt(
            name=request.ip_adapter,
            path=str(adapter),
            encoder=str(encoder),
            image=image,
            weight=1.0 if request.ip_weight is None else request.ip_weight,
            stamp=(info.st_size, info.st_mtime_ns),
        )

    def _init_image(self, init: Path):
        request = self.request
        loaded = load_init_image(
            init,
            request.width,
            request.height,
            request.fit,
            self.multiple,
            outcrop=request.outcrop,
        )
        for note in loaded.notes:
            self.note(f"{init.name}: {note}")
        mask = loaded.mask
        if request.init_mask is not None:
            mask_path = resolve_image_path(request.init_mask, self.outdir)
            mask_notes: list[str] = []
            mask = load_mask(mask_path, loaded.image.size, request.invert_mask, mask_notes)
            for note in mask_notes:
                self.note(f"{mask_path.name}: {note}")
        return loaded.image, mask

    def _controls(self, width: int, height: int) -> dict[str, object]:
        """The job's ControlNets and their images, at the picture's size: the Job's `control`
        (the first unit) and `more_controls` (the others)."""
        weights = self.lookup.controlnets(self.request)
        controls = tuple(
            self._control(unit, path, width, height)
            for unit, path in zip(self.request.controls, weights, strict=True)
        )
        return {"control": controls[0] if controls else None, "more_controls": controls[1:]}

    def _control(self, unit: ControlUnit, weights: Path, width: int, height: int) -> Control:
        """One unit's ControlNet and its image."""
        assert unit.controlnet is not None and unit.control_image is not None
        path = Path(unit.control_image)  # resolved by the session
        image, notes = load_control_image(path, (width, height), unit.control_processor)
        for note in notes:
            self.note(f"{path.name}: {note}")
        info = weights.stat()
        return Control(
            name=unit.controlnet,
            path=str(weights),
            image=image,
            weight=1.0 if unit.control_weight is None else unit.control_weight,
            start=unit.control_start or 0.0,
            end=1.0 if unit.control_end is None else unit.control_end,
            stamp=(info.st_size, info.st_mtime_ns),
        )
