"""A sweep: one line that stands for several, each run as its own line (its own prefix, its own
`Outputs:` block) and each picture's command the expanded line that remakes it alone.

- `{red|blue|green}` in the prompt: one line per alternative. Several groups give the cartesian
  product in reading order, the first group slowest (like nested loops); a group inside an
  alternative expands with it (`{a {b|c}|d}` is `a b`, `a c`, `d`). `\\{`, `\\}` and `\\|` are
  literal and stay escaped in the expanded line, so it remakes the same text.
- `-S 1,2,3`: one line per seed, after the prompt's alternatives (the seed changes fastest).
  `-n N` applies to each.
- `-I 'photos/*.jpg'`: one line per file the glob matches, in sorted order, slowest of all.

At most SWEEP_LIMIT pictures per line, counting -n. Pure but for the glob's file listing.
"""

from __future__ import annotations

import glob
from dataclasses import replace
from pathlib import Path

from invoke.errors import InvokeError
from invoke.line.request import Request

SWEEP_LIMIT = 1000
_ESCAPED = "{}|"
_GLOB = "*?["


# At most this many `{`, `|` and `}` in a prompt: enough for any sweep, and each costs at most
# SWEEP_LIMIT steps, so a hostile prompt is read in linear time.
MARKS_LIMIT = 500

# An expansion being built: the text so far as a chain of (earlier, piece), so adding a piece to
# each of the (at most SWEEP_LIMIT) expansions costs one step each, however long they are.
_Chain = tuple["_Chain | None", str] | None


def _text(chain: _Chain) -> str:
    pieces = []
    while chain is not None:
        chain, piece = chain
        pieces.append(piece)
    return "".join(reversed(pieces))


def alternatives(text: str, limit: int = SWEEP_LIMIT) -> list[str]:
    """The prompts a `{a|b}` prompt stands for, in order; raises InvokeError past `limit` or on
    an unbalanced brace. One left-to-right pass with a stack, no regex."""
    # Each open group: its finished alternatives' texts, and the expansions before it.
    stack: list[tuple[list[str], list[_Chain]]] = []
    current: list[_Chain] = [None]  # the expansions of the text read so far at this depth
    literal: list[str] = []  # plain text not yet added to `current`
    marks = 0

    def flushed(chains: list[_Chain]) -> list[_Chain]:
        piece = "".join(literal)
        literal.clear()
        return [(c, piece) for c in chains] if piece else chains

    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPED:
            literal.append(text[i : i + 2])
            i += 2
            continue
        if ch not in "{|}":
            literal.append(ch)
            i += 1
            continue
        marks += 1
        if marks > MARKS_LIMIT:
            raise InvokeError(
                f"prompt: more than {MARKS_LIMIT} of {{ | }} in one line; "
                "write \\{ \\| \\} for literal ones"
            )
        current = flushed(current)
        if ch == "{":
            stack.append(([], current))
            current = [None]
        elif stack and ch == "|":
            stack[-1][0].extend(_text(c) for c in current)
            _check_count(len(stack[-1][0]), limit)
            current = [None]
        elif stack:
            done, before = stack.pop()
            done.extend(_text(c) for c in current)
            _check_count(len(before) * len(done), limit)
            current = [(b, d) for b in before for d in done]
        else:
            raise InvokeError(
                f"prompt: a {ch!r} outside any {{...}} group at character {i + 1}; "
                f"write \\{ch} for a literal {ch}"
            )
        i += 1
    if stack:
        raise InvokeError(
            "prompt: a '{' is never closed; close it with '}' (e.g. {red|blue}) "
            "or write \\{ for a literal brace"
        )
    return [_text(c) for c in flushed(current)]


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise InvokeError(
            f"this line expands to {count} pictures, more than the {limit} one line may make; "
            "split it into several lines"
        )


def has_glob(value: str | None) -> bool:
    return value is not None and value != "-1" and any(ch in value for ch in _GLOB)


def init_files(pattern: str) -> list[str]:
    """The files an -I glob names, sorted; an existing file whose name has `*?[` is itself."""
    if Path(pattern).expanduser().exists():
        return [pattern]
    found = sorted(glob.glob(str(Path(pattern).expanduser())))
    if not found:
        raise InvokeError(
            f"-I/--init_img: {pattern!r} matches no file; check the folder and the pattern"
        )
    return found


def check(request: Request) -> None:
    """What can be said of a sweep as it is typed (the shell's validator): its groups and its
    size, files aside. Raises InvokeError."""
    prompts = alternatives(request.prompt) if request.prompt else [""]
    seeds = len(request.seed) if isinstance(request.seed, tuple) else 1
    _check_count(len(prompts) * seeds * (request.iterations or 1), SWEEP_LIMIT)


def expand(request: Request, seeds: list[int] | None = None) -> list[Request]:
    """The lines `request` stands for, in order. `seeds`: this session's seeds, oldest first,
    so that a sweep's `-S -N` is the seed it meant when the line was typed."""
    prompts = alternatives(request.prompt or "") if request.prompt else [request.prompt]
    seed = request.seed
    seed_list: list[int | None] = list(seed) if isinstance(seed, tuple) else [seed]
    files: list[str | None] = [request.init_img]
    if has_glob(request.init_img):
        files = list(init_files(request.init_img))
    count = len(prompts) * len(seed_list) * len(files)
    _check_count(count * (request.iterations or 1), SWEEP_LIMIT)
    if count == 1 and not isinstance(seed, tuple) and files == [request.init_img]:
        return [replace(request, prompt=prompts[0])]
    if request.init_img == "-1":
        raise InvokeError(
            "-I/--init_img: -1 in a sweep would change with each picture; name the file"
        )
    if isinstance(seed, int) and seed < 0 and seeds is not None:
        if -seed > len(seeds):
            raise InvokeError(
                f"-S/--seed: {seed} means the seed of the image {-seed} back, but this "
                f"session has made {len(seeds)}"
            )
        seed_list = [seeds[seed]]
    return [
        replace(request, prompt=p, seed=s, init_img=f)
        for f in files
        for p in prompts
        for s in seed_list
    ]
