"""The `invoke` command: launch options (click) -> Settings -> a front end.

    invoke                          the interactive invoke> shell
    invoke "a cat -s 20"            one line, then exit
    invoke < prompts.txt            stdin that is not a terminal: one command per line
    invoke --from_file prompts.txt  the same, from a file ("-" = stdin)

Nothing here imports torch: `invoke --help` stays instant. The model loads on the first image.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from contextlib import closing, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from invoke import __version__
from invoke.config.defaults_file import META_KEY, LaunchCommand
from invoke.config.shown_defaults import sampler_help
from invoke.errors import InvokeError
from invoke.line.samplers import SAMPLERS

if TYPE_CHECKING:
    from invoke.config.settings import Settings
    from invoke.line.request import Request

HELP = """Draw pictures with Stable Diffusion models from the terminal.

\b
  invoke                              the interactive invoke> shell
  invoke "a red circle -s 20 -S 42"   run one command line, then exit
  invoke -o shots "a cat" -s 20 -n 3  the words after the launch options form the line
  invoke < prompts.txt                one command per line from stdin
  invoke --from_file prompts.txt      the same from a file ("-" = stdin)
  invoke --dry-run < prompts.txt      check a batch: print each canonical command or its error
  invoke --json --from_file f.txt     for scripts: one JSON object a line per picture or error
  invoke --show-config                each launch setting, its value and where it came from

A command line is a prompt followed by switches (-s steps, -S seed, -n images, -W/-H size,
-C guidance, -A sampler, -I init image, -f strength, ...); type !help in the shell for all of
them. Every image stores the exact command that remakes it (read it back with !fetch FILE).

Launch options you always want go in a defaults file, one a line (e.g. --outdir ~/pictures):
invoke.init beside your models.yaml (invoke --show-config says where); the command line wins.

Without --model the embedded default model is used (see configs/models.yaml): a small model
this project trained on coloured shapes, e.g. "a red circle on a blue background" or "a green
triangle on a white background" (10 colours; circle, square, triangle, diamond, star, cross).
"""


def _launch_request(values: Mapping[str, Any]) -> Request:
    """The launch options that are defaults of line switches, as a Request, and --fnformat:
    checked, raising InvokeError (the defaults file checks each of its lines with this too)."""
    from invoke.line.parse import parse_request

    request = parse_request(f'"" {_line_defaults(values)}')
    if values.get("fnformat") is not None:
        from invoke.outputs import check_fnformat

        check_fnformat(values["fnformat"])
    return request


# Launch options that are defaults of line switches: their switch, or None for a flag.
_LINE_DEFAULTS = {
    "steps": "-s",
    "width": "-W",
    "height": "-H",
    "cfg_scale": "-C",
    "sampler": "-A",
    "strength": "-f",
    "fit": None,
    "grid": None,
    "seamless": None,
}


def _line_defaults(values: Mapping[str, Any]) -> str:
    """Launch defaults as line switches, so one parser validates both."""
    words = []
    for name, switch in _LINE_DEFAULTS.items():
        if switch is not None and values.get(name) is not None:
            words += [switch, str(values[name])]
    for flag in (name for name, switch in _LINE_DEFAULTS.items() if switch is None):
        if values.get(flag):
            words.append(f"--{flag}")
    return " ".join(words)


def _folder_option(*names: str, help: str) -> Any:
    """A launch option naming a folder of things a line can name (LoRAs, embeddings...)."""
    return click.option(
        *names, type=click.Path(path_type=Path, file_okay=False), default=None, help=help
    )


@click.command(
    cls=LaunchCommand,
    check=_launch_request,
    help=HELP,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
        "max_content_width": 100,
    },
)
@click.option(
    "-o",
    "--outdir",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder [outputs/img-samples].",
)
@click.option(
    "--model",
    default=None,
    help="A model name from models.yaml, a diffusers folder, or a .safetensors/.ckpt file "
    "[the models.yaml entry that says default: true].",
)
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    default=None,
    help="The models.yaml to use [your own copy, else configs/models.yaml].",
)
@_folder_option(
    "--lora_dir",
    help="Where withLora(name) and <lora:name> in a prompt find name.safetensors "
    "[loras/ beside your models.yaml copy].",
)
@_folder_option(
    "--embedding_dir",
    "--embedding_path",  # InvokeAI 2.x's name for it
    "embedding_dir",
    help="Where <name> in a prompt finds the textual inversion embedding name.safetensors "
    "[embeddings/ beside your models.yaml copy].",
)
@_folder_option(
    "--controlnet_dir",
    help="Where --controlnet NAME finds the ControlNet NAME (a diffusers folder or "
    "NAME.safetensors) [controlnets/ beside your models.yaml copy].",
)
@_folder_option(
    "--ip_adapter_dir",
    help="Where --ip_adapter NAME finds the IP-Adapter NAME.safetensors, with its "
    "image_encoder/ folder beside it [ip_adapters/ beside your models.yaml copy].",
)
@_folder_option(
    "--upscaler_dir",
    help="Where -U and --upscaler NAME find upscalers (diffusers folders, such as "
    "sd-x2-latent-upscaler and stable-diffusion-x4-upscaler) [upscalers/ beside your "
    "models.yaml copy; else the Hugging Face cache].",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
    default="auto",
    show_default=True,
    help="auto = float16 on CUDA and MPS, float32 on CPU.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    metavar="auto|cpu|mps|cuda|cuda:N",
    callback=lambda ctx, param, value: _check_device(value),
    help="Where the model runs; cuda:N is the Nth CUDA GPU, from 0.",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    default=None,
    metavar="N",
    help="CPU threads for torch [the cores other work leaves free; OMP_NUM_THREADS if set].",
)
@click.option(
    "--from_file",
    "from_file",
    default=None,
    metavar="PATH|-",
    help="Run the command lines of a file ('-' = stdin).",
)
@click.option(
    "--workers",
    default=None,
    metavar="N|auto",
    callback=lambda ctx, param, value: _check_workers(value),
    help="Run the batch on N worker processes (auto: one a GPU), each keeping a model loaded; "
    "this process writes every file, as one process would (needs the [ray] extra).",
)
@click.option(
    "--cluster",
    default=None,
    metavar="auto|ADDR",
    help="Run the batch on a running Ray cluster (auto: RAY_ADDRESS or this machine's); "
    "invoke and the models must be on each node.",
)
@click.option(
    "--dry-run",
    "dry_run",
    is_flag=True,
    help="Print each line's canonical command or its error; generate nothing.",
)
@click.option(
    "--json",
    "json_lines",
    is_flag=True,
    help="For scripts: stdout is one JSON object a line, one per picture and per failed line "
    "(see docs/shell.md); everything else goes to stderr.",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="Print only errors (on stderr): no notes, bars or Outputs: blocks, a batch's summary "
    "only when a line failed; the exit status says how it went.",
)
@click.option("--fnformat", default=None, help="File name template [{prefix}.{seed}.png].")
@click.option("--steps", type=int, default=None, help="Default -s: sampling steps [50].")
@click.option("--width", type=int, default=None, help="Default -W [the model's size].")
@click.option("--height", type=int, default=None, help="Default -H [the model's size].")
@click.option("--cfg_scale", type=float, default=None, help="Default -C: guidance scale [7.5].")
@click.option(
    "--sampler", default=None, metavar="|".join(SAMPLERS[:3]) + "|...", help=sampler_help()
)
@click.option("--strength", type=float, default=None, help="Default -f: img2img strength [0.75].")
@click.option("--fit", is_flag=True, help="Default --fit: scale init images into -W x -H.")
@click.option("--grid", is_flag=True, help="Default -g: also save each command's images as a grid.")
@click.option("--seamless", is_flag=True, help="Default --seamless: tileable pictures.")
@click.option(
    "--offload",
    is_flag=True,
    help="Keep model parts in CPU memory, on the GPU only while used (small GPUs).",
)
@click.option(
    "--compile/--no-compile",
    "compile_unet",
    default=None,
    help="torch.compile the UNet [on CUDA where the work amortizes the compile].",
)
@click.option(
    "--allow-pickle",
    "allow_pickle",
    is_flag=True,
    help="Allow pickle checkpoints (.ckpt/.pt/.bin): they can run code; still loaded "
    "with weights_only=True.",
)
@click.option(
    "--allow-downloads",
    "allow_downloads",
    is_flag=True,
    help="Let hub ids (repo_id models of models.yaml, --controlnet and -U's upscalers) "
    "download from the Hugging Face hub [off: only the local cache is used].",
)
@click.option(
    "--max_loaded_models",
    type=click.IntRange(1, 16),
    default=2,
    show_default=True,
    help="Models kept in memory for a fast !switch.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.option(
    "--show-config",
    "show_config",
    is_flag=True,
    help="Print each launch setting, its value and where it came from (default, the defaults "
    "file's line, the command line), then exit.",
)
@click.version_option(__version__, "--version", prog_name="invoke")
@click.argument("line", nargs=-1, type=click.UNPROCESSED)
def cli(line: tuple[str, ...], show_config: bool, **options: Any) -> None:
    from invoke.line.parse import join_args
    from invoke.shell.report import terminal_text

    ctx = click.get_current_context()
    _stop_on_a_bad_defaults_file(ctx)
    settings = _settings(options)
    if show_config:
        _show_config(ctx, settings)
    from invoke.session import Session
    from invoke.shell import batch

    from_file, dry_run, debug = options["from_file"], options["dry_run"], settings.debug
    batch_file = None if line or from_file in (None, "-") else _open_batch_file(from_file)
    is_batch = batch_file is not None or from_file == "-" or not sys.stdin.isatty()
    if not line and not is_batch and (dry_run or options["json_lines"]):
        which = "--dry-run checks" if dry_run else "--json reports"
        raise click.UsageError(f"{which} a batch: give lines on stdin or --from_file, or a line")
    spread = options["workers"] is not None or options["cluster"] is not None
    if spread:
        _check_spread(options, line=bool(line), is_batch=is_batch, dry_run=dry_run)
    reporter, text = _reporter(options, dry_run)
    try:
        if spread:
            from invoke.events import WithoutBars

            runner = Session(settings, reporter=WithoutBars(reporter), remote=True)
        else:
            runner = Session(settings, reporter=reporter, dry_run=dry_run)
    except InvokeError as exc:
        # models.yaml's problems come one a line: each line shown safe, the breaks kept.
        lines = f"invoke: {exc}".split("\n")
        click.echo("\n".join(terminal_text(line) for line in lines), err=True)
        sys.exit(2)
    if line:
        line_text = join_args(list(line))
        sys.exit(batch.run_one(runner, line_text, dry_run=dry_run, debug=debug, **text))
    if is_batch:
        from invoke.reading import batch_lines

        # Line by line as they arrive: a line runs when it is complete (a live producer piping
        # into invoke gets its pictures as it goes), and no more than a line is held.
        stream = batch_file if batch_file is not None else nullcontext(sys.stdin.buffer)
        with stream as source, closing(batch_lines(source)) as lines:
            if spread:
                status = _on_workers(runner, lines, options, reporter, debug, text)
            else:
                status = batch.run_batch(runner, lines, dry_run=dry_run, debug=debug, **text)
        sys.exit(status)
    from invoke.shell import repl

    sys.exit(repl.run_repl(runner, debug=debug))


def _settings(options: Mapping[str, Any]) -> Settings:
    """The launch options as Settings (a launch default's mistake: a usage error)."""
    from invoke.config.settings import DEFAULT_OUTDIR, Settings
    from invoke.shell.report import terminal_text

    switches = {name: options[name] for name in _LINE_DEFAULTS}
    try:
        launch = _launch_request({**switches, "fnformat": options["fnformat"]})
    except InvokeError as exc:
        raise click.UsageError(terminal_text(f"launch default {exc}")) from exc
    return Settings(
        outdir=options["outdir"] or DEFAULT_OUTDIR,
        model=options["model"],
        config=options["config"],
        precision=options["precision"],
        device=options["device"],
        threads=options["threads"],
        fnformat=options["fnformat"] or Settings.fnformat,
        defaults=launch,
        debug=options["debug"],
        offload=options["offload"],
        allow_pickle=options["allow_pickle"],
        allow_downloads=options["allow_downloads"],
        compile=options["compile_unet"],
        max_loaded_models=options["max_loaded_models"],
        lora_dir=options["lora_dir"],
        embedding_dir=options["embedding_dir"],
        controlnet_dir=options["controlnet_dir"],
        ip_adapter_dir=options["ip_adapter_dir"],
        upscaler_dir=options["upscaler_dir"],
    )


def _reporter(options: Mapping[str, Any], dry_run: bool) -> tuple[Any, dict[str, Any]]:
    """The reporter --json, --quiet and --dry-run ask for, and where a batch's text goes
    (`out`, `err`, `records` for batch.run_batch and run_one): with --json, everything but the
    JSON records goes to stderr; with --quiet, only errors are printed."""
    from invoke.shell.dispatch import print_err
    from invoke.shell.report import JsonReporter, TerminalReporter

    quiet = options["quiet"]
    if options["json_lines"]:
        reporter = JsonReporter(quiet=quiet)
        return reporter, {"out": _nowhere if quiet else print_err, "records": reporter}
    reporter = TerminalReporter(progress=not dry_run, quiet=quiet)
    return reporter, {"out": _nowhere, "records": reporter} if quiet else {}


def _check_workers(value: str | None) -> str | None:
    if value is None or value == "auto" or (value.isdecimal() and 1 <= int(value) <= 1024):
        return value
    raise click.BadParameter(f"{value!r} is not a count of workers (1 to 1024) or auto")


def _check_spread(options: Mapping[str, Any], *, line: bool, is_batch: bool, dry_run: bool):
    """--workers/--cluster run a batch: said in one line (exit 2) where there is none, or
    where Ray is not installed."""
    from invoke.distributed import ray_missing

    switch = "--workers" if options["workers"] is not None else "--cluster"
    if line or not is_batch:
        raise click.UsageError(
            f"{switch} runs a batch: give --from_file FILE or pipe lines on stdin"
        )
    if dry_run:
        raise click.UsageError(f"{switch} draws on workers; --dry-run draws nothing: drop one")
    hint = ray_missing(switch)
    if hint is not None:
        click.echo(f"invoke: {hint}", err=True)
        sys.exit(2)


def _on_workers(runner, lines, options, reporter, debug: bool, text: dict[str, Any]) -> int:
    """The batch on workers (invoke/distributed/): started, run, shut down whatever happens."""
    from invoke.distributed import driver
    from invoke.shell import batch

    try:
        spread = driver.start(
            runner,
            workers=options["workers"],
            cluster=options["cluster"],
            note=reporter.note,
            progress=reporter.workers_progress,
        )
    except InvokeError as exc:
        click.echo(terminal_text_of(f"invoke: {exc}"), err=True)
        return 2
    summary = ""
    try:
        status = batch.run_batch(runner, spread.lines(lines), debug=debug, **text)
    finally:
        summary = spread.close()
    reporter.note(summary)
    return status


def terminal_text_of(text: str) -> str:
    from invoke.shell.report import terminal_text

    return terminal_text(text)


def _nowhere(text: str) -> None:
    """Where --quiet sends what is not an error."""


def _check_device(value: str) -> str:
    """--device's form (whether that device is there is found when the model loads)."""
    if re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", value):
        return value
    raise click.BadParameter(f"{value!r} is not one of auto, cpu, mps, cuda or cuda:N (N from 0)")


def _stop_on_a_bad_defaults_file(ctx: click.Context) -> None:
    """The defaults file's mistake, in one line, exit 2: said here, not while it was read, so
    that --help and --version still work."""
    problem = ctx.meta[META_KEY].problem
    if problem:
        click.echo(f"invoke: {problem}", err=True)
        sys.exit(2)


def _show_config(ctx: click.Context, settings: Settings) -> None:
    """--show-config: each setting, its value and where it came from; then exit."""
    from invoke.config.defaults_file import show_config

    for text in show_config(ctx, settings):
        click.echo(text)
    sys.exit(0)


def _open_batch_file(from_file: str) -> BinaryIO:
    """--from_file's file, opened before anything else (a FIFO or a device refused unread)."""
    from invoke.reading import open_file

    try:
        return open_file(
            from_file,
            f"--from_file: {from_file}",
            "give a file of command lines (a stream goes on stdin: ... | invoke)",
        )
    except InvokeError as exc:
        click.echo(f"invoke: {exc}", err=True)
        sys.exit(2)


def main() -> None:
    from invoke import interrupts

    interrupts.terminate_like_ctrl_c()  # `kill` keeps what Ctrl-C keeps: no half-written file
    try:
        cli(prog_name="invoke")
    except BrokenPipeError:
        # `invoke --dry-run < lines | head`: the reader left; stop quietly, as Unix tools do.
        sys.stderr.close()
        sys.exit(1)


if __name__ == "__main__":
    main()
