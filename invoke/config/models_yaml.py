"""models.yaml: the models known by name. Reading it (every problem reported at once, each naming
the file), picking the model a launch asks for, where a model's files are (a folder, a file, a
hub snapshot), and changing the user's copy without losing their comments.
"""

from __future__ import annotations

import codecs
import copy
import difflib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from invoke import CONFIGS_DIR, atomic
from invoke.config.settings import SIZE_MULTIPLE, Settings
from invoke.config.user_dir import user_config_path
from invoke.errors import InvokeError, ModelError
from invoke.reading import not_a_file, read_file

SHIPPED_CONFIG = CONFIGS_DIR / "models.yaml"  # the model list that ships; never changed
# Bounds on reading one (a model list is a few KB, two levels deep): what is beyond them is no
# model list, and would cost minutes or memory to load.
MAX_MODELS_FILE = 1_000_000  # bytes
MAX_YAML_VALUES = 100_000  # values, counting each one an alias (*name) repeats
MAX_YAML_DEPTH = 32  # levels of nesting
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's when built: 4x faster

# models.yaml: the keys an entry may have, and what each one means (also the error hints).
MODEL_KEYS = {
    "description": "a line shown by !models",
    "path": "a local diffusers folder",
    "file": "a single .safetensors or .ckpt checkpoint",
    "repo_id": "a Hugging Face hub id, used from the local cache",
    "embedded": "true for the model that ships inside the package",
    "family": "sd-1, sd-2, sd-2-v, sdxl, sdxl-refiner or kandinsky-2.2 (detected when omitted)",
    "config": "a diffusers config folder for a single file (default: the family's shipped one)",
    "width": "native width in pixels",
    "height": "native height in pixels",
    "vae": "a VAE folder, model folder or VAE file to use instead of the model's own",
    "precision": "auto, float32, float16 or bfloat16",
    "default": "true on the model used without --model",
}
SOURCE_KEYS = ("path", "file", "repo_id", "embedded")
PRECISIONS = ("auto", "float32", "float16", "bfloat16")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
PICKLE_SUFFIXES = CHECKPOINT_SUFFIXES[1:]  # files torch.load reads: they can run code
# Names are typed after !switch and looked up before paths by --model: no spaces, no slashes.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
MODEL_NAME_RULE = "letters, digits and . _ + - (no spaces or slashes)"
# A Hugging Face hub repo id, owner/name: what a name that is no path may be (--controlnet, -U,
# !import_model).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# What a hub snapshot needs for a diffusers pipeline: the folder layout, not root checkpoints.
REPO_FILES = ("model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors")


@dataclass(frozen=True)
class ModelEntry:
    """One entry of models.yaml: where a model's files are and how to use them.

    Exactly one source: `path` (a diffusers folder), `file` (one .safetensors/.ckpt file),
    `repo_id` (a hub id, from the local Hugging Face cache) or `embedded` (the shipped model).
    """

    name: str
    description: str = ""
    path: Path | None = None
    file: Path | None = None
    repo_id: str | None = None
    embedded: bool = False
    family: str | None = None  # None = detected from the files by the backend
    width: int | None = None
    height: int | None = None
    vae: Path | None = None
    config: Path | None = None  # a single file's diffusers config folder
    precision: str | None = None  # None = the launch option's
    default: bool = False
    listed: bool = True  # False for a `--model PATH` that is in no models.yaml

    @property
    def source(self) -> str:
        """Where the model comes from, in the user's words."""
        if self.embedded:
            return "embedded in the package"
        return str(self.path or self.file or self.repo_id)


EMBEDDED_ENTRY = ModelEntry(
    "default", "Embedded default model, ships inside the package", embedded=True, default=True
)


class ModelsFileError(ModelError):
    """A models.yaml that cannot be used: one line per problem, each naming the file."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {problem}" for problem in problems))


def config_path(settings: Settings) -> Path | None:
    """--config wins; then the user's copy; then the shipped one (absent when not a checkout)."""
    if settings.config is not None:
        problem = not_a_file(settings.config)
        if problem:
            raise InvokeError(f"--config: {settings.config}: {problem}; give a models.yaml file")
        return settings.config
    user = user_config_path()
    problem = not_a_file(user)
    if problem not in (None, "no such file"):
        # A copy that is there but cannot be read (a folder, a link loop) is not silently passed
        # over for the shipped list: the user would wonder where their models went.
        raise InvokeError(f"{user}: {problem}; your models.yaml must be a file: fix or remove it")
    for candidate in (user, SHIPPED_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load_model_entries(path: Path | None) -> dict[str, ModelEntry]:
    """Read and check models.yaml; without one, the embedded model is the only entry."""
    if path is None:
        return {EMBEDDED_ENTRY.name: EMBEDDED_ENTRY}
    return parse_model_entries(read_models_file(path), path)


def read_models_file(path: Path) -> dict[str, Any]:
    """models.yaml as YAML data (a mapping of names to entries), unchecked."""
    return _read_models_text(path)[1]


def _read_models_text(path: Path) -> tuple[str, dict[str, Any]]:
    """models.yaml's text and its YAML data, read once (at most MAX_MODELS_FILE bytes)."""
    data = read_file(path, str(path), MAX_MODELS_FILE, "a model list is a few KB", ModelError)
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text = data.decode("utf-16")  # what Windows editors call "Unicode"
        else:
            text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModelsFileError(path, ["not UTF-8 text"]) from exc
    try:
        problem = _shape_problem(text)
        if problem:
            raise ModelsFileError(path, [problem])
        raw = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or type(exc).__name__
        raise ModelsFileError(path, [f"not valid YAML{where} ({what})"]) from exc
    if raw is None:
        return text, {}
    if not isinstance(raw, dict):
        raise ModelsFileError(
            path, ["expected named model entries at the top level, e.g. `sd-1.5:` then settings"]
        )
    return text, raw


@dataclass
class _Open:
    """A collection open in the YAML event stream (see _shape_problem)."""

    mapping: bool
    label: str  # the key it is the value of ("" at the top)
    anchor: str | None
    start: int  # values counted up to it, itself included
    expect_key: bool = True
    keys: dict[str, int] = field(default_factory=dict)  # key -> line
    last_key: str = ""


def _shape_problem(text: str) -> str | None:
    """What would make models.yaml costly to load or silently wrong, in one pass over its YAML
    events (linear in the text, no recursion): nesting deeper than MAX_YAML_DEPTH, aliases that
    expand beyond MAX_YAML_VALUES values (a "billion laughs" file), a name or key given twice
    (YAML would keep the last one without a word)."""
    open_: list[_Open] = []
    sizes: dict[str, int] = {}  # anchor -> the values it stands for
    count = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if not isinstance(event, yaml.NodeEvent):
            if isinstance(event, yaml.CollectionEndEvent):
                done = open_.pop()
                if done.anchor:
                    sizes[done.anchor] = count - done.start + 1  # with itself
            continue
        line = event.start_mark.line + 1
        label = ""
        if open_ and open_[-1].mapping:
            frame = open_[-1]
            if frame.expect_key and isinstance(event, yaml.ScalarEvent) and event.value != "<<":
                if event.value in frame.keys:
                    return _given_twice(
                        frame, event.value, frame.keys[event.value], line, len(open_) == 1
                    )
                frame.keys[event.value] = line
                frame.last_key = event.value
            label = "" if frame.expect_key else frame.last_key
            frame.expect_key = not frame.expect_key
        count += sizes.get(event.anchor, 1) if isinstance(event, yaml.AliasEvent) else 1
        if count > MAX_YAML_VALUES:
            return (
                f"has more than {MAX_YAML_VALUES} values once its aliases (*name) are expanded "
                f"(line {line}); a model list needs far fewer"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            open_.append(
                _Open(isinstance(event, yaml.MappingStartEvent), label, event.anchor, count)
            )
            if len(open_) > MAX_YAML_DEPTH:
                return (
                    f"is nested more than {MAX_YAML_DEPTH} levels deep (line {line}); a model "
                    "list is names, each with its settings under it"
                )
        elif isinstance(event, yaml.ScalarEvent) and event.anchor:
            sizes[event.anchor] = 1
    return None


def _given_twice(frame: _Open, key: str, first: int, again: int, top: bool) -> str:
    lines = f"lines {first} and {again}"
    if top:
        return f"model name {key} is given twice ({lines}); give each model its own name"
    return f"{frame.label + ': ' if frame.label else ''}{key} is given twice ({lines}); keep one"


def parse_model_entries(raw: dict[str, Any], path: Path) -> dict[str, ModelEntry]:
    """Check every entry; all problems are reported at once, one line each."""
    problems: list[str] = []
    entries: dict[str, ModelEntry] = {}
    for name, body in raw.items():
        entry = _parse_entry(name, body, path.parent, problems)
        if entry is not None:
            entries[entry.name] = entry
    defaults = [
        name for name, body in raw.items() if isinstance(body, dict) and body.get("default")
    ]
    if len(defaults) > 1:
        problems.append(
            f"{len(defaults)} entries say `default: true` ({', '.join(map(str, defaults))}); "
            f"keep it on one"
        )
    if not raw:
        problems.append("no models listed; add one, e.g. `default: {embedded: true}`")
    if problems:
        raise ModelsFileError(path, problems)
    return entries


def _parse_entry(name: Any, body: Any, base: Path, problems: list[str]) -> ModelEntry | None:
    """One models.yaml entry, or None when it has problems (each added to `problems`)."""
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        problems.append(f"model name {name} reads as a number; quote it: '{name}':")
        return None
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        problems.append(f"model name {name!r}: use {MODEL_NAME_RULE}")
        return None
    if not isinstance(body, dict):
        problems.append(f"{name}: expected settings under the name (description, path, ...)")
        return None
    found = len(problems)
    for key in body:
        if key not in MODEL_KEYS:
            near = difflib.get_close_matches(str(key), MODEL_KEYS, n=1)
            hint = f"did you mean {near[0]}?" if near else f"known keys: {', '.join(MODEL_KEYS)}"
            problems.append(f"{name}: unknown key {key!r}; {hint}")
    entry = _EntryReader(name, body, base, problems).entry()
    sources = [key for key in SOURCE_KEYS if body.get(key) not in (None, False)]
    if not sources:
        problems.append(
            f"{name}: no source; give one of path: (a diffusers folder), file: (a .safetensors "
            f"or .ckpt file), repo_id: (a hub id) or embedded: true"
        )
    elif len(sources) > 1:
        problems.append(f"{name}: has {' and '.join(sources)}; give exactly one source")
    return entry if len(problems) == found else None


def family_names() -> tuple[str, ...]:
    """The model families models.yaml's `family:` may name: the backend's registry (read when a
    models.yaml entry names one, so `invoke --help` still imports no torch)."""
    from invoke.backend.families import FAMILIES

    return tuple(FAMILIES)


@dataclass
class _EntryReader:
    """Reads the values of one models.yaml entry, adding each problem (`name: ...`) to
    `problems`; a value with a problem reads as None."""

    name: str
    body: dict[Any, Any]
    base: Path  # relative paths are relative to the models.yaml folder
    problems: list[str]

    def entry(self) -> ModelEntry:
        name, problems = self.name, self.problems
        description = self.value("description", (str, int, float), "text")
        repo_id = self.value("repo_id", str, "a hub id like owner/name")
        if repo_id is not None and not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo_id):
            problems.append(f"{name}: repo_id {repo_id!r} is not a hub id like owner/name")
        file = self.folder_or_file("file")
        if file is not None and file.suffix.lower() not in CHECKPOINT_SUFFIXES:
            problems.append(
                f"{name}: file {file.name} is not a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}); "
                f"a diffusers folder goes under path:"
            )
        return ModelEntry(
            name=name,
            description="" if description is None else str(description),
            path=self.folder_or_file("path"),
            file=file,
            repo_id=repo_id,
            embedded=bool(self.value("embedded", bool, "true or false")),
            family=self.choice("family", family_names()) if "family" in self.body else None,
            width=self.size("width"),
            height=self.size("height"),
            vae=self.folder_or_file("vae"),
            config=self.folder_or_file("config"),
            precision=self.choice("precision", PRECISIONS),
            default=bool(self.value("default", bool, "true or false")),
        )

    def value(self, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        got = self.body.get(key)
        if got is None:
            return None
        if isinstance(got, bool) != (kind is bool) or not isinstance(got, kind):
            self.problems.append(f"{self.name}: {key} must be {what}, not {got!r}")
            return None
        return got

    def folder_or_file(self, key: str) -> Path | None:
        text = self.value(key, str, "a path")
        if text is None:
            return None
        if not text.strip():
            self.problems.append(f"{self.name}: {key} is empty; give a path")
            return None
        where = Path(text).expanduser()
        if where.is_absolute():
            return where
        try:
            return (self.base / where).resolve()
        except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
            self.problems.append(f"{self.name}: {key} {text} is a symlink loop; give a real path")
            return None

    def choice(self, key: str, allowed: tuple[str, ...]) -> str | None:
        got = self.value(key, str, f"one of {', '.join(allowed)}")
        if got is not None and got not in allowed:
            self.problems.append(f"{self.name}: {key} {got!r} is not one of {', '.join(allowed)}")
            return None
        return got

    def size(self, key: str) -> int | None:
        got = self.value(key, int, f"a whole number of pixels (a multiple of {SIZE_MULTIPLE})")
        if got is not None and (got < SIZE_MULTIPLE or got % SIZE_MULTIPLE):
            self.problems.append(
                f"{self.name}: {key} {got} must be a positive multiple of {SIZE_MULTIPLE}"
            )
            return None
        return got


def default_entry(entries: dict[str, ModelEntry]) -> ModelEntry:
    """The `default: true` entry, else the first one."""
    return next((e for e in entries.values() if e.default), next(iter(entries.values())))


def pick_model(settings: Settings, entries: dict[str, ModelEntry] | None = None) -> ModelEntry:
    """The entry `--model` names (a name, a diffusers folder or a checkpoint file), else the
    `default: true` one."""
    if entries is None:
        entries = load_model_entries(config_path(settings))
    wanted = settings.model
    if wanted is None:
        return default_entry(entries)
    if wanted in entries:
        return entries[wanted]
    where = Path(wanted).expanduser()
    if where.exists():
        return entry_for_path(where, taken=entries, switch="--model")
    known = ", ".join(sorted(entries))
    raise ModelError(
        f"--model: {wanted} is neither a model in models.yaml ({known}) nor a path to a "
        f"diffusers folder or a .safetensors/.ckpt file"
    )


def entry_for_path(where: Path, taken: Iterable[str] = (), switch: str = "--model") -> ModelEntry:
    """An unlisted model given by its folder or file, named after it (unique among `taken`)."""
    where = where.expanduser().resolve()
    if where.is_file():
        if where.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise ModelError(
                f"{switch}: {where} is not a checkpoint file; give a diffusers folder or a "
                f"{', '.join(CHECKPOINT_SUFFIXES)} file"
            )
        base, source = where.stem, {"file": where}
    elif where.is_dir():
        base, source = where.name, {"path": where}
    else:
        raise ModelError(f"{switch}: {where} does not exist; give a diffusers folder or a file")
    return ModelEntry(
        name=unique_model_name(base, taken), description=str(where), listed=False, **source
    )


def unique_model_name(base: str, taken: Iterable[str]) -> str:
    """`base` made a valid model name not in `taken`: `sd15`, `sd15-2`, ..."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", base).strip("-._+") or "model"
    used = set(taken)
    name, n = cleaned, 1
    while name in used:
        n += 1
        name = f"{cleaned}-{n}"
    return name


def model_source(entry: ModelEntry, allow_downloads: bool = False) -> Path:
    """The folder or file to load for a non-embedded entry; a repo_id is looked up in the local
    Hugging Face cache (downloaded only when allowed)."""
    if entry.path is not None:
        return entry.path
    if entry.file is not None:
        return entry.file
    if entry.repo_id is None:
        raise ModelError(f"model {entry.name}: has no path, file or repo_id")
    return hub_snapshot(entry.repo_id, f"model {entry.name}", REPO_FILES, allow_downloads)


def hub_snapshot(
    repo_id: str,
    what: str,
    patterns: Sequence[str],
    allow_downloads: bool = False,
    then: str | None = None,
) -> Path:
    """The local Hugging Face cache's copy of `repo_id` (the files matching `patterns`),
    downloaded only when allowed; `what` names it in messages ("model sd-1.5"), `then` says what
    to do once it is downloaded [or: launch with --allow-downloads]."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            repo_id, allow_patterns=list(patterns), local_files_only=not allow_downloads
        )
    except LocalEntryNotFoundError as exc:
        how = then
        if how is None:
            how = "" if allow_downloads else " or launch with --allow-downloads"
        raise ModelError(
            f"{what}: {repo_id} is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); download it once with "
            f"`hf download {repo_id}`{how}"
        ) from exc
    except ValueError as exc:  # huggingface_hub's HFValidationError: no id it could hold
        raise ModelError(
            f"{what}: {repo_id} is not a Hugging Face repo id (owner/name: letters, digits, "
            f"- _ and ., neither starting nor ending with - or ., no -- or ..)"
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(
            f"{what}: cannot download {repo_id} ({type(exc).__name__}); "
            f"check the id and the network, or download it with `hf download {repo_id}`"
        ) from exc
    return Path(folder)


def model_status(entry: ModelEntry) -> str:
    """ "ok" when the entry's files are on this machine, else "missing" (nothing is loaded)."""
    if entry.embedded:
        return "ok"
    if entry.path is not None:
        return "ok" if entry.path.is_dir() else "missing"
    if entry.file is not None:
        return "ok" if entry.file.is_file() else "missing"
    try:
        model_source(entry, allow_downloads=False)
    except ModelError:
        return "missing"
    return "ok"


# -- changing models.yaml -------------------------------------------------------------------------

WRITTEN_HEADER = (
    "# The models invoke knows by name; written by invoke's !import_model, !edit_model and\n"
    "# !del_model (edit by hand too). The format is described in invoke's configs/models.yaml.\n\n"
)


def writable_config_path(settings: Settings) -> Path:
    """Where model commands write: the file --config names, else the user's own copy. Never the
    shipped configs/models.yaml."""
    if settings.config is None:
        return user_config_path()
    if settings.config.resolve() == SHIPPED_CONFIG.resolve():
        raise ModelError(
            f"--config {settings.config}: the shipped model list is never changed; copy it and "
            f"name the copy with --config, or leave --config out to change your own copy at "
            f"{user_config_path()}"
        )
    return settings.config


def change_models_file(settings: Settings, change: Callable[[dict[str, Any]], None]) -> Path:
    """Apply `change` to the YAML data of the models.yaml in use and write the result to the
    writable copy (created from the file in use on first change), atomically. Returns its path.
    Only the values that changed are rewritten: the rest of the text, comments included, stays
    byte for byte (a line-level edit checked by loading the result back; no round-trip YAML
    library: ruamel.yaml's keeps comments by hanging them on the value before them, so adding a
    key or deleting an entry moves or drops the comments of the entry after it)."""
    target = writable_config_path(settings)
    source = config_path(settings)
    text = ""
    before: dict[str, Any] = {}
    raw: dict[str, Any] = {
        "default": {
            "description": EMBEDDED_ENTRY.description,
            "embedded": True,
            "default": True,
        }
    }
    if source is not None:
        text, before = _read_models_text(source)  # read now: another process may have changed it
        parse_model_entries(before, source)  # a file broken by hand is reported, not rewritten
        raw = copy.deepcopy(before)  # `change` may change entries in place
        if source.resolve().parent != target.resolve().parent:
            raw = _anchored(raw, source.parent)
    change(raw)
    parse_model_entries(raw, target)  # never write a file that would not load
    copied = source is None or source.resolve() != target.resolve()  # the first change
    spliced = _spliced(text, before, raw)
    if spliced is None:
        text = WRITTEN_HEADER + _dumped(raw)
    elif copied and not spliced.startswith(WRITTEN_HEADER):
        text = WRITTEN_HEADER + spliced
    else:
        text = spliced
    write_atomically(target, text)
    return target


def _dumped(raw: dict[str, Any]) -> str:
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=100)


def _spliced(text: str, before: dict[str, Any], after: dict[str, Any]) -> str | None:
    """`text` (the YAML of `before`) turned into the YAML of `after` entry by entry: an unchanged
    entry keeps its text; a changed one keeps its text too but for the keys that changed
    (`_edited_entry`); a deleted one goes with its own leading comments (the `#` lines right above
    its name); a new one is added at the end. All other comments and blank lines stay, byte for
    byte. None where the text is too unusual for that (a flow-style list, duplicate names...):
    the result must load back as `after`, in its order."""
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if "\r\n" in text else "\n"
    starts = [i for i, line in enumerate(lines) if line.strip() and line[0] not in " \t#"]
    names = []
    for start in starts:
        try:
            parsed = yaml.safe_load(lines[start])
        except yaml.YAMLError:
            return None
        if not isinstance(parsed, dict) or len(parsed) != 1:
            return None
        names.extend(parsed)
    if names != list(before):
        return None
    out: list[str] = []
    done = 0  # lines before this one are in `out` or left out
    for name, start, following in zip(names, starts, [*starts[1:], len(lines)], strict=True):
        lead = start
        while lead > done and lines[lead - 1].startswith("#"):
            lead -= 1
        stop = following  # the body ends at its last indented line
        while stop > start + 1 and (lines[stop - 1].startswith("#") or not lines[stop - 1].strip()):
            stop -= 1
        out += lines[done:lead]
        if name not in after and (not out or not out[-1].strip()):
            while stop < following and not lines[stop].strip():
                stop += 1  # the blank lines that set it apart go with it
        if name in after:
            out += lines[lead:start]
            entry = "".join(lines[start:stop])
            if after[name] != before[name]:
                edited = _edited_entry(entry, name, before[name], after[name], newline)
                entry = edited or _dumped({name: after[name]}).replace("\n", newline)
            out.append(entry)
        done = stop
    out += lines[done:]
    result = "".join(out)
    added = {name: body for name, body in after.items() if name not in before}
    if added:
        if result and not result.endswith("\n"):
            result += newline
        if "\n\n" in result.replace("\r", "") and not result.replace("\r", "").endswith("\n\n"):
            result += newline  # the file sets entries apart with blank lines
        result += _dumped(added).replace("\n", newline)
    try:
        loaded = yaml.safe_load(result)
    except yaml.YAMLError:
        return None
    return result if loaded == after and list(loaded) == list(after) else None


def _edited_entry(text: str, name: str, old: Any, new: Any, newline: str) -> str | None:
    """One entry's text (its name line and body) with only the keys that changed rewritten: a
    changed value is replaced where it stands (its anchor, the comment after it and the lines
    around it kept), a removed key loses its own lines only, a new key goes under the last one.
    None where the entry is not a plain block of `key: value` lines (flow style, aliases, merge
    keys) or the result would not load back as `new`: the entry is then written whole."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # marks count characters, not bytes
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode) or len(root.value) != 1:
        return None
    body = root.value[0][1]
    if not (isinstance(body, yaml.MappingNode) and isinstance(old, dict) and isinstance(new, dict)):
        return None
    pairs = body.value
    plain = all(
        isinstance(key, yaml.ScalarNode)
        and (isinstance(value, yaml.ScalarNode) or value.flow_style)
        for key, value in pairs
    )
    if body.flow_style or not plain or [key.value for key, _ in pairs] != list(old):
        return None
    added = [key for key in new if key not in old]
    edits: list[tuple[int, int, str]] = []  # (start, end, new text), applied from the end
    for i, (key, value) in enumerate(pairs):
        touched = key.value not in new or new[key.value] != old[key.value]
        if (
            touched or (added and i == len(pairs) - 1)
        ) and value.start_mark.index < key.end_mark.index:
            return None  # an alias (`vae: *x`): its node is the anchor's, its text is elsewhere
        if key.value not in new:
            start = text.rfind("\n", 0, key.start_mark.index) + 1
            edits.append((start, _line_end(text, _value_end(text, value)), ""))
        elif new[key.value] != old[key.value]:
            edits.append(_new_value(text, value, new[key.value]))
    if added:
        indent = " " * pairs[0][0].start_mark.column
        at = _line_end(text, _value_end(text, pairs[-1][1]))
        lines = "".join(f"{indent}{_flow(key)}: {_flow(new[key])}{newline}" for key in added)
        edits.append((at, at, lines if text[:at].endswith("\n") else newline + lines))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    try:
        return text if yaml.safe_load(text) == {name: new} else None
    except yaml.YAMLError:
        return None


def _value_end(text: str, node: yaml.Node) -> int:
    """Where a value's text ends (a block scalar's mark is at the next line with text)."""
    end = node.end_mark.index
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        end = node.start_mark.index + len(text[node.start_mark.index : end].rstrip())
    return end


def _line_end(text: str, index: int) -> int:
    """The index just past the line end of the line holding `index`."""
    found = text.find("\n", index)
    return len(text) if found < 0 else found + 1


def _new_value(text: str, node: yaml.Node, value: Any) -> tuple[int, int, str]:
    """The edit that puts `value` where `node`'s text is, keeping its anchor and, for a block
    scalar (`description: >  # note`), the comment on its first line."""
    start, end = node.start_mark.index, _value_end(text, node)
    anchor = re.match(r"&\S+[ \t]+", text[start:end])
    start += anchor.end() if anchor else 0
    kept = ""
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        header = text[start : _line_end(text, start)]
        comment = re.search(r"[ \t]+#.*?(?=\r?\n|$)", header)
        kept = comment.group() if comment else ""
    return start, end, _flow(value) + kept


def _flow(value: Any) -> str:
    """`value` as YAML on one line, as a block mapping's value (quoted only where it must be)."""
    if isinstance(value, (dict, list)):
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True)
        return text.rstrip("\n")
    text = yaml.safe_dump({0: value}, default_flow_style=False, width=1 << 30, allow_unicode=True)
    text = text.removeprefix("0: ").rstrip("\n")
    # a string of several lines: one double-quoted line (JSON's escapes are YAML's too)
    return json.dumps(value, ensure_ascii=False) if "\n" in text else text


def _anchored(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths made absolute, so they still point at the same files from another folder."""
    moved: dict[str, Any] = {}
    for name, body in raw.items():
        if isinstance(body, dict):
            body = dict(body)
            for key in ("path", "file", "vae", "config"):
                text = body.get(key)
                if isinstance(text, str) and text and not Path(text).expanduser().is_absolute():
                    body[key] = str((base / text).resolve())
        moved[name] = body
    return moved


def write_atomically(target: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one."""
    try:
        atomic.replace(target, text.encode("utf-8"))
    except atomic.NotOurs as exc:
        # a models.yaml linked from elsewhere (dotfiles) is changed where it lives, by name
        linked = exc.strerror == atomic.LINK
        where = ", or name the file it points to with --config" if linked else ""
        raise ModelError(f"cannot write {target}: {atomic.why(exc)}{where}") from None
    except OSError as exc:
        raise ModelError(f"cannot write {target}: {exc.strerror}") from exc
