"""One command line -> pictures on disk, in seven stages, each one call into one module:

    1 resolve   settings.resolve fills every switch; the seed, prompt, canvas and images are found
    2 plan      plan.plan turns the line into passes (seeds, -n, -v, the -I feedback loop)
    3 prepare   prepare.JobMaker reads the images and finds the files: a plain-data Job per pass
    4 run       the active model draws the Job (model_cache, backend/)
    5 upscale   upscaling.Upscaling enlarges each picture (-U)
    6 save      outputs.OutputFolder writes each picture with the command that remakes it
    7 report    the Reporter is told (notes, bars, the `Outputs:` block): the shell prints

The session is the `Runner` the shell drives. It remembers what this session made (seeds and
files, for `-S -N` and `-I -1`) and holds the model cache.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke import caveats, interrupts, outputs, plan
from invoke.config.libraries import (
    CONTROLNETS,
    EMBEDDINGS,
    IP_ADAPTERS,
    LORAS,
    UPSCALERS,
    Library,
)
from invoke.config.lookup import Lookup
from invoke.config.settings import Settings, resolve
from invoke.config.shown_defaults import ActiveModel, switch_defaults
from invoke.errors import InvokeError
from invoke.events import Reporter, Saved, Step, Tokens, WithoutNotes
from invoke.images import resolve_image_path
from invoke.jobs import JobRunner, LocalRunner
from invoke.latents_file import latents_file
from invoke.line.request import Request
from invoke.model_cache import ModelCache
from invoke.prepare import JobMaker, init_canvas, outcrop_canvas, prompt_from_init
from invoke.saving import Saver
from invoke.upscaling import Upscaling

if TYPE_CHECKING:
    from PIL import Image

    from invoke.backend.job import Job
    from invoke.backend.upscale import Upscaler


def outdir_for(request: Request, settings: Settings) -> Path:
    """Where a line's pictures go: its -o, else the launch's --outdir."""
    return Path(request.outdir).expanduser() if request.outdir else settings.outdir


def output_folder(request: Request, settings: Settings) -> outputs.OutputFolder:
    """The folder a line saves into, with its file-name format and PNG compression."""
    compression = request.png_compression
    return outputs.OutputFolder(
        outdir_for(request, settings),
        fnformat=request.fnformat or settings.fnformat,
        png_compression=compression if compression is not None else settings.png_compression,
    )


def listing_of(library: Library) -> Callable[[Session], tuple[list[Path], list[str]]]:
    """A Runner listing method: the library's folders and the names in them."""

    def listing(session: Session) -> tuple[list[Path], list[str]]:
        return session.lookup.listing(library)

    listing.__doc__ = f"The {library.what} folders and the names in them (!{library.default})."
    return listing


class Session:
    """Turns requests into images and files; implements the shell's Runner protocol."""

    def __init__(
        self,
        settings: Settings,
        *,
        reporter: Reporter,
        dry_run: bool = False,
        remote: bool = False,
    ) -> None:
        """`remote`: Jobs run elsewhere (--workers sets `jobs`), so no model loads here."""
        self.settings = settings
        self.outdir = settings.outdir
        self.dry_run = dry_run
        self.reporter = WithoutNotes(reporter) if dry_run else reporter
        self._note = self.reporter.note
        self.models = ModelCache(settings, self._note, dry_run=dry_run, remote=remote)
        # A line without -S draws its seed here (--workers: the seed its planning drew)
        self.fresh_seed: Callable[[], int] = lambda: secrets.randbelow(plan.SEED_LIMIT)
        self.caveats = caveats.Teller(reporter.note, self.models)  # in a --dry-run too
        self.lookup = Lookup(settings, self.models.unloaded_folder)
        self.jobs: JobRunner = LocalRunner(self.models)
        self.upscaling = Upscaling(
            settings, self.lookup, reporter, self._note, self.models.active_precision
        )
        self.saver = Saver(self.models, self.lookup, self._note)

    # -- the Runner protocol: drawing ----------------------------------------------------------

    def canonical(self, request: Request) -> str:
        """The complete command a line stands for, without loading the model or drawing."""
        resolved, _ = self._resolve(request, self.models.size_multiple, self._sampler())
        self.lookup.loras(resolved)  # an unknown LoRA name fails here too
        self.lookup.embeddings(resolved)  # and a pickled embedding without --allow-pickle
        self.lookup.controlnets(resolved)  # and an unknown ControlNet
        self.lookup.ip_adapter(resolved)  # and an unknown IP-Adapter
        self.models.check_companion(resolved.refiner)  # and an unknown --refiner
        resolved = self.lookup.with_upscaler(resolved)  # and a missing upscaler, another factor
        outdir = self._outdir_for(resolved)
        for image in [*(unit.control_image for unit in resolved.controls), resolved.ip_image]:
            if image not in (None, "-1"):
                resolve_image_path(image, outdir)
        init = None
        if resolved.init_img is not None and resolved.init_img != "-1":
            init = resolve_image_path(resolved.init_img, outdir)
        self.caveats.tell(request, resolved, init)
        if init is not None:
            resolved = outcrop_canvas(request, resolved, init, self.size_multiple, self._note)
            resolved = init_canvas(resolved, init, self.size_multiple, lambda _: None)
        return resolved.to_command()

    def generate(self, request: Request) -> list[Path]:
        if self.caveats.model() is None and self.models.loads:
            self.models.model  # noqa: B018 - loads it: its size and sampler are in its weights
        line = plan_line(self, request, self._note, tell=True)  # stages 1 and 2
        saved: list[Saved] = []
        try:
            self._draw(line.resolved, line.passes, line.maker, line.folder, saved)
        finally:
            if saved:
                self.reporter.outputs(self.saver.commands, saved)
        return [s.path for s in saved]

    def finishing(self) -> bool:
        return self.jobs.finishing()

    def plan_jobs(self, request: Request) -> list[Job]:
        """The Jobs `generate(request)` would hand the JobRunner now, worked out without a note,
        a file or a model (--workers plans lines ahead of their turn): those of its passes that
        need no picture of the line's own. Raises InvokeError where generate would."""
        line = plan_line(self, request, lambda _: None, tell=False)
        passes = [p for p in line.passes if not isinstance(p.init, plan.FromPass)]
        return [line.maker.job(p.noises, p.init) for p in passes]

    def _draw(self, resolved, passes, maker: JobMaker, folder, saved: list[Saved]) -> None:
        """Stages 3-6 for each pass, then the grid."""
        made: list[tuple[Image.Image, Request]] = []
        by_pass: list[Path] = []  # the first picture each pass saved: a later pass's init
        prefix = ""
        upscaler, from_latents = None, False  # from_latents: Upscaling.takes_latents
        count = sum(len(p.noises) for p in passes)  # the line's pictures, for the bar's label
        for pass_ in passes:
            if isinstance(pass_.init, plan.FromPass):
                pass_ = pass_.with_init(by_pass[pass_.init.index])
            job = maker.job(pass_.noises, pass_.init)  # 3 prepare
            if not prefix:
                # Only once the first job is ready (init image read, model loaded, its LoRAs
                # merged, the upscaler loaded), so a line that fails early uses up no prefix.
                for note in self.jobs.prepare(job):
                    self._note(note)
                if resolved.upscale:
                    upscaler = self.upscaling.load(resolved, (job.width, job.height))
                    space = self.models.latent_space()
                    from_latents = self.upscaling.takes_latents(upscaler, resolved, job, space)
                prefix = folder.reserve_prefix()
                self.saver.commands += 1
            label = image_label(len(made), len(job.noises), count)
            images = self._run(job, pass_.requests, folder, prefix, label)  # 4 run
            for i, (image, image_request) in enumerate(zip(images, pass_.requests, strict=True)):
                if upscaler is not None:  # 5 upscale
                    which = (i, len(images)) if from_latents else None  # its final latents
                    image = self._upscale(upscaler, image, image_request, folder, prefix, which)
                path = self.saver.save(folder, prefix, image, image_request, saved=saved)  # 6 save
                made.append((image, image_request))
                if i == 0:
                    by_pass.append(path)
            if interrupts.stop_requested() and not self.jobs.finishing():
                break
        if resolved.grid and len(made) > 1:
            self.saver.save_grid(folder, prefix, [m[0] for m in made], [m[1] for m in made])

    def _resolve(self, request: Request, multiple: int, sampler: str) -> tuple[Request, list]:
        return resolve(
            request,
            self.settings,
            self.native_size,
            multiple,
            model_defaults=Request(sampler=sampler),
        )

    def _sampler(self) -> str:
        return self.models.default_sampler()

    def _outdir_for(self, request: Request) -> Path:
        return outdir_for(request, self.settings)

    def _image_path(self, value: str | None, switch: str, outdir: Path) -> Path | None:
        """An image switch's file: -1 is the previous output, a bare name may be in outdir."""
        if value is None:
            return None
        if value == "-1":
            return plan.previous_file(switch, self.saver.files)
        return resolve_image_path(value, outdir)

    def _output_folder(self, request: Request) -> outputs.OutputFolder:
        return output_folder(request, self.settings)

    def _run(self, job: Job, requests, folder, prefix: str, label: str) -> list[Any]:
        """Stage 4: the job drawn, with a bar (`label`) and any intermediates."""
        if job.init_image is not None:
            self._note(
                f"img2img: {job.steps_taken} of {job.steps} steps at strength {job.strength:.2f}"
            )
        bar = self.reporter.progress(job.steps_taken, label)
        self.saver.finals = []  # this job's, from its last step
        every = job.intermediate_every
        dumps = (
            [folder.intermediates(prefix, outputs.file_seed(r)) for r in requests] if every else []
        )

        def on_step(step: Step) -> None:
            if step.step > 0:
                bar.advance()
            self.saver.keep_final(step)
            if dumps and step.latents is not None:
                for dump, latents, picture in zip(dumps, step.latents, step.pictures, strict=True):
                    dump.save_step(step.step, step.timestep, latents, picture)

        try:
            images = self.jobs.run(job, on_step, self._event)
        finally:
            bar.close()
        for dump in dumps:
            dump.finish()
        return images

    def _event(self, event: object) -> None:
        if isinstance(event, Tokens):
            self.reporter.tokens(event)

    def _upscale(self, upscaler: Upscaler, image, request: Request, folder, prefix: str, which):
        """Stage 5 (`which`: its final latents' place, for -U 2 to take them). If it fails (out of
        memory) or a second Ctrl-C stops it, the picture as drawn is kept, saved without -U."""
        try:
            latents = None if which is None else self.saver.final(*which)
            return self.upscaling.upscale(upscaler, image, request, latents)
        except (KeyboardInterrupt, InvokeError):
            plain = replace(request, upscale=(), upscaler=None)
            path = self.saver.save(folder, prefix, image, plain, saved=[])
            self._note(f"not upscaled; the picture as drawn is {path}: {plain.to_command()}")
            raise

    # -- the Runner protocol: !fix -U -------------------------------------------------------------

    def canonical_upscale(self, request: Request) -> str:
        """`!fix FILE -U` for --dry-run: its complete command, the upscaler resolved, --latents
        named when FILE's latents would be upscaled."""
        resolved = self.lookup.with_upscaler(request)
        outdir = self._outdir_for(resolved)
        return self.upscaling.file_latents(resolved, outdir, self.saver.files)[0].to_fix_command()

    def upscale_file(self, request: Request) -> list[Path]:
        """`!fix FILE -U`: FILE enlarged (nothing is drawn), saved as a new picture whose command
        is the !fix line that makes it again (Upscaling.upscale_file)."""
        assert request.init_img is not None and request.upscale
        fresh = secrets.randbelow(plan.SEED_LIMIT)
        seeded = replace(request, seed=plan.base_seed(request, self.saver.seeds, fresh))
        resolved = self.lookup.with_upscaler(seeded)
        folder, outdir = self._output_folder(resolved), self._outdir_for(resolved)
        saved: list[Saved] = []
        try:
            self.upscaling.upscale_file(resolved, folder, outdir, self.saver, saved)
        finally:
            if saved:
                self.reporter.outputs(self.saver.commands, saved)
        return [s.path for s in saved]

    # -- the Runner protocol: what the session knows ---------------------------------------------

    def fetch(self, path: str) -> str:
        """The picture's command, less the output folder and file names it may carry (the
        user's to choose, said in a note)."""
        command, notes = outputs.fetched_command(Path(path).expanduser())
        for note in notes:
            self._note(note)
        return command

    def recent_seeds(self) -> list[int]:
        """Seeds of this session's images, oldest first (tab completion after -S)."""
        return list(self.saver.seeds)

    def loras(self) -> tuple[list[Path], list[str]]:
        """The LoRA folders and the names in them (!loras, tab completion in a prompt)."""
        return self.lookup.listing(LORAS)

    def embeddings(self) -> tuple[list[Path], list[str]]:
        """The embedding folders and the names in them (!embeddings, `<name>` completion)."""
        return self.lookup.listing(EMBEDDINGS)

    controlnets = listing_of(CONTROLNETS)  # !controlnets, --controlnet's completion
    ip_adapters = listing_of(IP_ADAPTERS)  # !ip_adapters, --ip_adapter's completion

    def upscalers(self) -> tuple[list[Path], list[str]]:
        """The upscaler folders and the names in them (!upscalers, --upscaler)."""
        return self.lookup.listing(UPSCALERS)

    def prompt_label(self) -> str:
        return f"({self.entry.name}) invoke> "

    def active_model(self) -> ActiveModel:
        return self.models.active_model()

    def line_defaults(self) -> dict[str, str]:
        return switch_defaults(self.models.active_model(), self.settings)

    # -- the Runner protocol: the model list (model_cache.py) -------------------------------------

    @property
    def entry(self):
        return self.models.entry

    @property
    def native_size(self) -> tuple[int, int]:
        return self.models.native_size

    @property
    def size_multiple(self) -> int:
        return self.models.size_multiple

    @property
    def model(self):
        return self.models.model

    def model_names(self) -> list[str]:
        return self.models.model_names()

    def model_entry(self, name: str):
        return self.models.model_entry(name)

    def model_state(self, name: str) -> str:
        return self.models.model_state(name)

    def switch(self, name: str):
        return self.models.switch(name)

    def models_file_name(self) -> str:
        return self.models.models_file_name()

    def change_models(self, change) -> Path:
        return self.models.change_models(change)

    def reload_models(self) -> None:
        self.models.reload_models()


@dataclass(frozen=True)
class PlannedLine:
    """A line after stages 1 and 2: resolved, its passes planned, stage 3's JobMaker ready."""

    resolved: Request
    passes: tuple[plan.Pass, ...]
    maker: JobMaker
    folder: outputs.OutputFolder


def plan_line(
    session: Session, request: Request, note: Callable[[str], None], *, tell: bool
) -> PlannedLine:
    """Stages 1 and 2 of `request` on the session as it is now; what a person should know goes
    to `note`, and the caveats too when `tell` (a line about to run, not one planned ahead)."""
    resolved, notes = session._resolve(request, session.size_multiple, session._sampler())
    for text in notes:
        note(text)
    if resolved.hires_fix:
        note(plan.hires_note(resolved, session.native_size, session.size_multiple))
    for text in session.lookup.near_misses(resolved):
        note(text)
    resolved = session.lookup.with_upscaler(resolved)
    outdir = session._outdir_for(resolved)
    folder = session._output_folder(resolved)
    fresh = session.fresh_seed()
    resolved = replace(resolved, seed=plan.base_seed(resolved, session.saver.seeds, fresh))
    init = session._image_path(resolved.init_img, "-I/--init_img", outdir)
    resolved = latents_file(resolved, outdir, session.saver.files, session.models.entry.name)
    if tell:
        session.caveats.tell(request, resolved, init)
    resolved = prompt_from_init(resolved, init, note)
    resolved = outcrop_canvas(request, resolved, init, session.size_multiple, note)
    resolved = init_canvas(resolved, init, session.size_multiple, note)
    resolved = control_paths(resolved, lambda v, s: session._image_path(v, s, outdir))
    passes = plan.plan(resolved, init, session.jobs.batch())
    first = plan.first_pass(resolved, session.native_size, session.size_multiple)
    maker = JobMaker(
        resolved,
        session.lookup,
        note,
        multiple=session.size_multiple,
        outdir=outdir,
        first_pass=first,
    )
    return PlannedLine(resolved, passes, maker, folder)


def image_label(done: int, drawing: int, count: int) -> str:
    """The bar's label: which of the line's `count` pictures are being drawn, `done` made."""
    if count == 1:
        return "image"
    if drawing == 1:
        return f"image {done + 1}/{count}"
    return f"images {done + 1}-{done + drawing}/{count}"


def control_paths(
    resolved: Request, image_path: Callable[[str | None, str], Path | None]
) -> Request:
    """Each ControlNet unit's image and the image prompt as paths (`image_path(value, switch)`
    finds them), resolved once: -1 stays the image it was when the line started, in every pass
    and in every image's command."""
    control = image_path(resolved.control_image, "--control_image")
    if control is not None:
        resolved = replace(resolved, control_image=str(control))
    prompt = image_path(resolved.ip_image, "--ip_image")
    if prompt is not None:
        resolved = replace(resolved, ip_image=str(prompt))
    more = tuple(
        replace(u, control_image=str(image_path(u.control_image, "--control_image")))
        for u in resolved.more_controls
    )
    return replace(resolved, more_controls=more) if more else resolved
