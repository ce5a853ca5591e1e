"""The invoke> shell, driven for real through prompt_toolkit's pipe input, with a fake runner."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from prompt_toolkit.validation import ValidationError

from invoke.line.parse import parse_request
from invoke.line.request import Request
from invoke.line.table import SWITCHES
from invoke.shell.completer import ShellCompleter
from invoke.shell.dispatch import COMMANDS, ShellContext, command
from invoke.shell.help import help_lines
from invoke.shell.repl import banner, run_repl
from invoke.shell.runner import Runner, prompt_text
from invoke.shell.validator import LineValidator
from tests.helpers import FakeRunner, batch

ENTER = "\r"
CTRL_C = "\x03"
CTRL_D = "\x04"
UP = "\x1b[A"


def shell(runner: FakeRunner, keys: str, later: str = "") -> tuple[int, list[str], list[str]]:
    """Type `keys` (then, after a pause, `later`) into a real PromptSession; the shell's printed
    lines come back."""
    out: list[str] = []
    err: list[str] = []
    opening = banner(runner.active_model())
    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        # Pausing lets prompt_toolkit validate while typing, as it does for a person.
        typist = threading.Timer(0.5, pipe.send_text, [later])
        # A shell stuck on a line it refuses would hang the test: clear the line and leave.
        rescue = threading.Timer(10, pipe.send_text, [CTRL_C + CTRL_D])
        typist.start()
        rescue.start()
        try:
            status = run_repl(
                runner, input=pipe, output=DummyOutput(), out=out.append, err=err.append
            )
        finally:
            typist.cancel()
            rescue.cancel()
    assert out[:1] == [opening]  # the shell opens with its banner; the rest is the test's
    return status, out[1:], err


@pytest.fixture
def runner(tmp_path: Path) -> FakeRunner:
    return FakeRunner(tmp_path / "outputs")


def prompts(runner: FakeRunner) -> list[str]:
    return [r.prompt for r in runner.requests]


def test_a_line_generates_and_ctrl_d_leaves(runner):
    status, _, err = shell(runner, "a red circle -s 20 -S 42" + ENTER + CTRL_D)
    assert status == 0
    assert err == []
    assert runner.requests == [Request(prompt="a red circle", steps=20, seed=42)]


def test_q_leaves(runner):
    status, _, _ = shell(runner, "a cat" + ENTER + "q" + ENTER + "a dog" + ENTER + CTRL_D)
    assert status == 0
    assert prompts(runner) == ["a cat"]


def test_history_is_kept_across_two_runs_in_the_same_outdir(runner):
    shell(runner, "a cat -s 5" + ENTER + CTRL_D)
    assert (runner.outdir / ".invoke_history").is_file()
    _, out, _ = shell(runner, UP + ENTER + "!history" + ENTER + CTRL_D)
    assert prompts(runner) == ["a cat", "a cat"]  # the up arrow found the first run's line
    # prompt_toolkit does not store a line twice in a row
    assert out == ["[1] a cat -s 5", "[2] !history"]


def test_fetch_puts_the_exact_command_in_the_buffer_and_enter_runs_it(tmp_path):
    stored = '"a kitten\'s toy" -s 7 -S 3 -A k_euler'
    runner = FakeRunner(tmp_path / "outputs", {"000001.3.png": stored})
    image = tmp_path / "000001.3.png"
    image.write_bytes(b"")
    _, _, err = shell(runner, f"!fetch {image}" + ENTER + ENTER + "!history" + ENTER + CTRL_D)
    assert err == []
    assert runner.requests == [parse_request(stored)]
    assert runner.requests[0].prompt == "a kitten's toy"
    history = (runner.outdir / ".invoke_history").read_text(encoding="utf-8")
    assert f"+{stored}\n" in history  # the line that ran is the exact command


def test_fetch_a_bare_name_looks_in_the_outdir(runner):
    runner.outdir.mkdir()
    (runner.outdir / "000002.9.png").write_bytes(b"")
    runner.stored["000002.9.png"] = "a dog -s 9"
    shell(runner, "!fetch 000002.9.png" + ENTER + ENTER + CTRL_D)
    assert (prompts(runner), runner.requests[0].steps) == (["a dog"], 9)


def test_recall_a_numbered_line_into_the_buffer(runner):
    keys = "a cat -s 5" + ENTER + "a dog" + ENTER + "!1" + ENTER + ENTER + CTRL_D
    _, _, err = shell(runner, keys)
    assert err == []
    assert [(r.prompt, r.steps) for r in runner.requests] == [
        ("a cat", 5),
        ("a dog", None),
        ("a cat", 5),
    ]


def test_recall_of_a_line_that_does_not_exist(runner):
    _, _, err = shell(runner, "a cat" + ENTER + "!9" + ENTER + CTRL_D)
    assert err == ["!9: there is no history line 9; history has 1..2"]


def test_search_shows_matching_lines_with_their_numbers(runner):
    keys = "a Red cat" + ENTER + "a dog" + ENTER + "a red car" + ENTER + "!search red" + ENTER
    _, out, _ = shell(runner, keys + CTRL_D)
    assert out == ["[1] a Red cat", "[3] a red car"]


def test_clear_forgets_the_history_also_for_the_next_run(runner):
    shell(runner, "a cat" + ENTER + "!clear" + ENTER + CTRL_D)
    _, out, _ = shell(runner, "!history" + ENTER + CTRL_D)
    assert out == ["[1] !history"]


def test_errors_print_one_line_and_the_shell_goes_on(runner):
    keys = (
        "a missing init" + ENTER + "!frobnicate" + ENTER + "crash" + ENTER + "a dog" + ENTER
    ) + CTRL_D
    status, _, err = shell(runner, keys)
    assert status == 0
    assert prompts(runner) == ["a dog"]
    assert err[0] == "-I/--init_img: missing.png does not exist; give an image file"
    assert err[1].startswith("!frobnicate: unknown command")
    assert (
        err[2]
        == "unexpected error: RuntimeError: kaput second line (run with --debug for the traceback)"
    )


def test_a_line_with_a_bad_switch_is_not_accepted(runner):
    # The validator keeps the bad line in the buffer; Ctrl-C clears it, then a good line runs.
    keys = "a cow -f 1.5" + ENTER + CTRL_C + "a dog" + ENTER + CTRL_D
    _, _, err = shell(runner, keys)
    assert prompts(runner) == ["a dog"]
    assert err == []
    history = (runner.outdir / ".invoke_history").read_text(encoding="utf-8")
    assert "a cow" not in history


def test_enter_on_a_bad_line_takes_the_cursor_to_the_bad_switch(runner):
    # Ctrl-K cuts from the cursor to the end of the line: what is left shows where it stood.
    _, _, err = shell(runner, "a cow -s 20 -f 1.5 -S 3", later=ENTER + "\x0b" + ENTER + CTRL_D)
    assert err == []
    assert runner.requests == [Request(prompt="a cow", steps=20)]


def test_ctrl_c_during_generation_returns_to_the_prompt(runner):
    status, _, err = shell(runner, "interrupt me" + ENTER + "a dog" + ENTER + CTRL_D)
    assert status == 0
    assert err == ["stopped (Ctrl-C); finished images were kept"]
    assert prompts(runner) == ["a dog"]


def test_ctrl_c_at_the_prompt_clears_the_line(runner):
    shell(runner, "a ca" + CTRL_C + "a dog" + ENTER + CTRL_D)
    assert prompts(runner) == ["a dog"]


def test_replay_runs_a_file_inside_the_shell(runner, tmp_path):
    batch = tmp_path / "prompts.txt"
    batch.write_text("a cat -s 3\n\n# note\na cow -f 1.5\na dog\n", encoding="utf-8")
    _, out, err = shell(runner, f"!replay {batch}" + ENTER + "a pig" + ENTER + CTRL_D)
    assert prompts(runner) == ["a cat", "a dog", "a pig"]
    assert out == ["invoke> a cat -s 3", "invoke> a cow -f 1.5", "invoke> a dog"]
    assert err[0].startswith("line 4: -f/--strength")
    assert err[1] == "3 lines run, 1 failed (line 4)"


def test_the_shell_opens_with_a_banner_naming_the_model_and_the_way_out(runner):
    printed: list[str] = []
    with create_pipe_input() as pipe:
        pipe.send_text(CTRL_D)
        run_repl(runner, input=pipe, output=DummyOutput(), out=printed.append)
    assert printed == ["invoke · model fake (embedded, 64 px) on cpu · !help for help, q to quit"]


@pytest.mark.parametrize("word", ["help", "?", "-h", "--help", " HELP "])
def test_help_words_show_help_and_draw_nothing(runner, word):
    status, out, err = shell(runner, word + ENTER + CTRL_D)
    assert status == 0 and err == []
    assert runner.requests == []  # not a 50-step picture of the word "help"
    assert out == help_lines(runner.line_defaults())


def test_help_is_grouped_with_every_switch_and_command_and_its_default(runner):
    _, out, _ = shell(runner, "!help" + ENTER + CTRL_D)
    assert out == help_lines(runner.line_defaults())
    text = "\n".join(out)
    titles = [line for line in out if line and not line.startswith(" ")]
    assert [t.split(":")[0].split(" ")[0] for t in titles[:-1]] == [
        "Generation", "img2img,", "ControlNet,", "Models", "Files", "Shell"
    ]  # fmt: skip
    assert "Other" not in titles  # every switch and command has its group
    for cmd in COMMANDS.values():
        assert cmd.usage.split()[0] in text
    for switch in SWITCHES:
        assert ", ".join(switch.names) in text
    # the active model's own defaults: the default model's size and sampler, not SD's
    assert "  -s, --steps N             sampling steps [default: 50]" in out
    assert "k_euler (the active model's)]" in text and "[default: 64 (the active model's)]" in text


@pytest.mark.parametrize("columns", [80, 60])
def test_help_wraps_to_the_screen_and_never_breaks_a_word(runner, columns):
    lines = help_lines(runner.line_defaults(), columns)
    assert max(len(line) for line in lines) <= columns
    # A word cut at the edge would be two words here: the same words as on an endless line.
    unwrapped = help_lines(runner.line_defaults(), 10_000)
    assert " ".join(lines).split() == " ".join(unwrapped).split()
    assert len(lines) > len(unwrapped)


def test_help_is_paged_on_a_small_screen_and_q_stops_it(runner):
    printed: list[str] = []
    with create_pipe_input() as pipe:
        # !help, Space for the second page, q to stop; then the shell takes lines again
        pipe.send_text("!help" + ENTER + " " + "q" + "a cat" + ENTER + CTRL_D)
        status = run_repl(
            runner, input=pipe, output=DummyOutput(), out=printed.append,
            screen=lambda: (80, 11),
        )  # fmt: skip
    assert status == 0
    full = help_lines(runner.line_defaults(), 80)
    assert printed[1:] == full[:20]  # two pages of 10 rows (the 11th asks for more)
    assert prompts(runner) == ["a cat"]  # the pager's keys were its own


@pytest.mark.parametrize(
    ("asked", "first", "shown"),
    [
        ("-f", "-f, --strength STRENGTH", "    default: 0.75; 0.9 with --outcrop"),
        ("--fit", "-T, -fit, --fit", "    default: off"),
        ("--sampler", "-A, -m, --sampler SAMPLER", "    default: k_euler (the active model's)"),
        ("!fetch", "!fetch FILE | !fetch 'PATTERN' OUTFILE", None),
        ("replay", "!replay FILE", None),
    ],
)
def test_help_with_a_switch_or_a_command_shows_that_entry(runner, asked, first, shown):
    _, out, err = shell(runner, f"!help {asked}" + ENTER + CTRL_D)
    assert err == []
    assert out[0] == first and len(out) < 10  # one entry (the sampler list takes four lines)
    assert shown is None or shown in out


def test_help_with_an_unknown_name_suggests_one(runner):
    _, out, err = shell(runner, "!help --strenght" + ENTER + "!help --zzz" + ENTER + CTRL_D)
    assert out == []
    assert err == [
        "!help: --strenght is not a switch or a ! command; did you mean !help --strength?",
        "!help: --zzz is not a switch or a ! command; !help lists them all",
    ]


def test_a_sampler_typo_gets_a_suggestion_before_enter_and_in_a_batch(runner):
    text = "a cat -A k_eulr"
    with pytest.raises(ValidationError) as caught:
        LineValidator().validate(Document(text, len(text)))
    assert caught.value.message.endswith("; did you mean k_euler?")
    status, _, err = batch(runner, [text])
    assert status == 1 and runner.requests == []
    assert err[0].startswith("line 1: -A/--sampler: k_eulr is not one of ddim, ")
    assert err[0].endswith("; did you mean k_euler?")


def test_help_words_in_a_batch_are_one_error_each_not_a_picture(runner):
    status, out, err = batch(runner, ["help", "a cat", "-h"])
    assert status == 1 and out == ["invoke> help", "invoke> a cat", "invoke> -h"]
    assert prompts(runner) == ["a cat"]
    assert err[0] == (
        "line 1: help: help is for the interactive shell (type !help at invoke>, or run invoke "
        "--help); here a line is a prompt and its switches, so nothing was drawn"
    )
    assert err[1].startswith("line 3: -h: help is for the interactive shell")


def test_help_words_are_not_flagged_while_typed():
    for text in ("-h", "--help", "?", "help"):
        LineValidator().validate(Document(text, len(text)))  # no "did you mean -H?"


def test_a_new_command_is_one_decorated_function(runner):
    seen: list[str] = []

    @command("echo_test", "!echo_test WORDS", "Say WORDS back.")
    def _echo(ctx: ShellContext, args: str) -> None:
        seen.append(args)

    try:
        shell(runner, "!echo_test hello there" + ENTER + CTRL_D)
        assert seen == ["hello there"]
        assert any(line.startswith("  !echo_test WORDS") for line in help_lines())
    finally:
        del COMMANDS["echo_test"]


def test_prompt_names_the_model_when_the_runner_says(runner):
    assert prompt_text(runner) == "invoke> "
    runner.label = "(sd-1.5) invoke> "
    assert prompt_text(runner) == "(sd-1.5) invoke> "


def test_the_shell_asks_the_runner_for_its_prompt_before_every_line(runner, monkeypatch):
    """A line that changes the model (as !switch does) changes the very next prompt shown."""
    shown: list[str] = []
    real_prompt = PromptSession.prompt

    def spy(self, message, *args, **kwargs):
        shown.append(message)
        return real_prompt(self, message, *args, **kwargs)

    monkeypatch.setattr(PromptSession, "prompt", spy)
    real_generate = runner.generate

    def generate_then_switch(request: Request) -> list[Path]:
        runner.label = f"({request.prompt}) invoke> "
        return real_generate(request)

    monkeypatch.setattr(runner, "generate", generate_then_switch)
    shell(runner, "sd-1.5" + ENTER + "sdxl" + ENTER + CTRL_D)
    assert shown == ["invoke> ", "(sd-1.5) invoke> ", "(sdxl) invoke> "]


def test_an_unwritable_outdir_costs_the_history_not_the_shell(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    runner = FakeRunner(blocker / "outputs")  # a folder inside a file cannot exist
    status, _, _ = shell(runner, "a cat" + ENTER + "a dog" + ENTER + "!2" + ENTER + ENTER + CTRL_D)
    assert status == 0
    assert prompts(runner) == ["a cat", "a dog", "a dog"]
    assert capsys.readouterr().err.count("cannot write the history") == 1


# -- validator ------------------------------------------------------------------------------------


def validate(text: str) -> ValidationError | None:
    try:
        LineValidator().validate(Document(text, len(text)))
    except ValidationError as exc:
        return exc
    return None


def test_validator_names_the_bad_switch_and_puts_the_cursor_on_it():
    error = validate("a cow -s 20 -f 1.5 -S 3")
    assert error is not None
    assert error.message.startswith("-f/--strength") and "1.5" in error.message
    assert error.cursor_position == len("a cow -s 20 ")


def test_validator_finds_glued_and_long_spellings():
    error = validate("a cow -s 20 -Akx")
    assert error is not None and error.cursor_position == len("a cow -s 20 ")
    error = validate("a cow --steps=abc")
    assert error is not None and error.cursor_position == len("a cow ")


def test_validator_passes_good_lines_and_shell_commands():
    assert validate("a cat -s 20 -S 42 -A k_euler") is None
    assert validate("") is None
    assert validate("# a comment") is None
    assert validate("!fetch 'x/*.png' out.txt") is None
    assert validate("!12") is None


def test_validator_checks_dream_lines():
    error = validate("!dream a cow -f 1.5")
    assert error is not None and error.cursor_position == len("!dream a cow ")


# -- completer ------------------------------------------------------------------------------------


def complete(text: str, runner: FakeRunner | None = None) -> list[str]:
    document = Document(text, len(text))
    found = ShellCompleter(runner).get_completions(
        document, CompleteEvent(completion_requested=True)
    )
    return [text[: len(text) + c.start_position] + c.text for c in found]


def test_switch_names_complete():
    assert complete("a cat --st") == ["a cat --steps", "a cat --strength"]
    assert "a cat -s" in complete("a cat -") and "a cat --init_img" in complete("a cat -")


def test_sampler_names_complete_after_the_sampler_switch():
    assert complete("a cat -A k_euler") == ["a cat -A k_euler", "a cat -A k_euler_a"]
    assert complete("a cat -m dd") == ["a cat -m ddim", "a cat -m ddpm"]
    assert complete("a cat -A dpmpp_2m_k") == ["a cat -A dpmpp_2m_k"]
    assert complete("a cat -Ak_dpmpp") == ["a cat -Ak_dpmpp_2", "a cat -Ak_dpmpp_2_a"]


def test_seeds_of_this_session_complete_after_the_seed_switch(runner):
    assert complete("a cat -S ", runner) == []
    runner.seeds = [42, 7, 42, 1234]
    assert complete("a cat -S ", runner) == ["a cat -S 1234", "a cat -S 42", "a cat -S 7"]
    assert complete("a cat --seed 4", runner) == ["a cat --seed 42"]


def test_prompt_words_do_not_complete():
    assert complete("a ca") == []
    assert complete("a cat -s 2") == []


def test_paths_complete_after_path_switches_and_file_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "cat.png").write_bytes(b"")
    (tmp_path / "prompts.txt").write_text("", encoding="utf-8")
    assert complete("a cat -I pics/c") == ["a cat -I pics/cat.png"]
    assert complete("a cat -M pics/c") == ["a cat -M pics/cat.png"]
    assert complete("a cat -o pi") == ["a cat -o pics"]
    assert complete("!fetch pics/") == ["!fetch pics/cat.png"]
    assert complete("!replay pro") == ["!replay prompts.txt"]
    assert complete("!dream a cat -I pics/c") == ["!dream a cat -I pics/cat.png"]


def test_shell_command_names_complete():
    assert complete("!fe") == ["!fetch"]
    assert set(complete("!")) >= {"!history", "!search", "!clear", "!replay", "!help", "!dream"}


def test_commands_are_listed_in_their_order_of_old():
    """!replay is registered by batch.py, yet !help, the completer and the unknown-command error
    list it where they always have: right after !fetch."""
    assert list(COMMANDS)[:8] == [
        "history", "NN", "search", "clear", "fetch", "replay", "help", "dream"
    ]  # fmt: skip
    assert complete("!") [:7] == [
        "!history", "!search", "!clear", "!fetch", "!replay", "!help", "!dream"
    ]  # fmt: skip


def test_folder_names_complete_from_the_runner(runner):
    runner.listed = {"loras": ["ink"], "embeddings": ["sty"], "controlnets": ["edges"]}
    runner.listed["upscalers"] = ["x2"]
    runner.listed["ip_adapters"] = ["ip-adapter_sd15"]
    assert complete("a cat withLora(i", runner) == ["a cat withLora(ink"]
    assert complete("a cat <s", runner) == ["a cat <sty>"]
    assert complete("a cat --controlnet e", runner) == ["a cat --controlnet edges"]
    assert complete("a cat --upscaler x", runner) == ["a cat --upscaler x2"]
    assert complete("a cat --ip_adapter ip", runner) == ["a cat --ip_adapter ip-adapter_sd15"]
    assert complete("a cat withLora(i") == []  # no runner, no names


# -- the Runner protocol --------------------------------------------------------------------------


def protocol_members(protocol: type) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")} | set(
        protocol.__annotations__
    )


def test_the_fake_runner_and_the_session_implement_the_whole_protocol(runner):
    from invoke.session import Session

    members = protocol_members(Runner)
    assert {"generate", "upscale_file", "loras", "change_models", "outdir", "entry"} <= members
    assert all(hasattr(runner, name) for name in members)
    methods = members - set(Runner.__annotations__)
    assert all(callable(getattr(Session, name, None)) for name in methods)


def test_refiner_names_complete_from_the_model_list(runner):
    names = runner.model_names()
    assert names  # the fake runner's active model
    typed = names[0][:1]
    assert f"a cat --refiner {names[0]}" in complete(f"a cat --refiner {typed}", runner)
    assert complete(f"a cat --refiner {typed}") == []  # no runner, no names
