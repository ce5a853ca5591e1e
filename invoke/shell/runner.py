"""What the shell needs from the rest of the program: the one `Runner` protocol.

The shell only makes text and calls these members; `invoke.session.Session` implements them all.
Every member the shell uses is declared here, so the shell calls them directly (it probes for
none), and its tests drive it with a fake that implements the whole protocol (tests/helpers.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from invoke.config.models_yaml import ModelEntry
from invoke.config.shown_defaults import ActiveModel
from invoke.line.request import Request
from invoke.shell.report import terminal_text

DEFAULT_PROMPT = "invoke> "


class Runner(Protocol):
    outdir: Path  # where history lives (<outdir>/.invoke_history); bare file names are found here
    entry: ModelEntry  # the active model

    # -- command lines --------------------------------------------------------------------------

    def generate(self, request: Request) -> list[Path]:
        """Run one request: progress bar, files, prints the `Outputs:` block. Raises InvokeError on
        bad input; KeyboardInterrupt propagates after finished images are kept."""
        ...

    def finishing(self) -> bool:
        """After a first Ctrl-C: whether pictures already being drawn (by --workers) are still
        to be written; the batch runs on through their lines, then stops."""
        ...

    def canonical(self, request: Request) -> str:
        """The resolved canonical command(s) for --dry-run (no model loaded); raises InvokeError."""
        ...

    def fetch(self, path: str) -> str:
        """The command stored in a PNG (Dream, sd-metadata or A1111 parameters); raises
        InvokeError."""
        ...

    def upscale_file(self, request: Request) -> list[Path]:
        """`!fix FILE -U`: the init image's own pixels enlarged, saved as a new picture."""
        ...

    def canonical_upscale(self, request: Request) -> str:
        """`!fix FILE -U` for --dry-run: its complete command, the upscaler resolved."""
        ...

    # -- what the prompt and tab completion offer -----------------------------------------------

    def prompt_label(self) -> str:
        """The whole prompt text shown before the cursor, e.g. `(sd-1.5) invoke> `; "" for the
        plain one."""
        ...

    def active_model(self) -> ActiveModel:
        """The active model's name, kind, size, sampler and device (the banner), loading
        nothing."""
        ...

    def line_defaults(self) -> dict[str, str]:
        """Each switch's field -> what a line without it gets here, in words (!help): the
        active model's size and sampler, the launch options' defaults."""
        ...

    def recent_seeds(self) -> list[int]:
        """Every image's seed in this session, oldest first (`-S <Tab>` offers them)."""
        ...

    # Folders of files a line can name (!loras, completion): the folders, and the names in them.
    def loras(self) -> tuple[list[Path], list[str]]: ...
    def embeddings(self) -> tuple[list[Path], list[str]]: ...
    def controlnets(self) -> tuple[list[Path], list[str]]: ...
    def ip_adapters(self) -> tuple[list[Path], list[str]]: ...
    def upscalers(self) -> tuple[list[Path], list[str]]: ...

    # -- the model list (!models, !switch, !import_model, !edit_model, !del_model) ---------------

    def model_names(self) -> list[str]: ...
    def model_entry(self, name: str) -> ModelEntry: ...
    def model_state(self, name: str) -> str: ...
    def switch(self, name: str) -> ModelEntry: ...
    def models_file_name(self) -> str: ...
    def change_models(self, change: Callable[[dict[str, Any]], None]) -> Path:
        """Change the user's models.yaml and use the result; returns the file written."""
        ...


def prompt_text(runner: Runner) -> str:
    """The prompt for the next line; asked every time, because `!switch` may change the model."""
    return terminal_text(runner.prompt_label()) or DEFAULT_PROMPT
