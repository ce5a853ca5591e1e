"""The rules of ../shared/DESIGN.md, read off the source with `ast`: no import cycles, the layer
rules, who prints, how big a class or function may grow, and a torch-free `invoke --help`.

Every import counts, including those inside functions and under `if TYPE_CHECKING:` (a cycle
hidden in a function is still a cycle). Each checker is also run on a small made-up package that
breaks its rule, so a checker that stopped seeing violations would fail here too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "invoke"
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 80

# What each layer may import besides itself and errors.py (every part may raise an InvokeError).
# Names are module paths under invoke/ ("line.prompt" is invoke/line/prompt.py, "line" the whole
# package, "" the package's own __init__: its version and CONFIGS_DIR).
MAY_IMPORT = {
    # pure text <-> values
    "line": {"line"},
    # Jobs in, pictures out: the prompt as values and the sampler table, never text, settings,
    # outputs or a front end
    "backend": {"backend", "events", "atomic", "line.prompt", "line.samplers", ""},
    # writes what it is given: no settings, no backend
    "outputs": {"outputs", "atomic", "line", "reading", ""},
    # pure: values in, passes out (backend.job is plain data)
    "plan": {"plan", "line", "backend.job"},
    # reads an image's header and a model folder's training.json: no settings, no model
    "caveats": {"caveats", "line", "images"},
    # the front ends reach the rest through their Runner protocol (the session)
    "shell": {"shell", "line", "config", "events", "images", "interrupts", "reading", "atomic"},
}
ONLY_FRONT_ENDS_IMPORT_SHELL = "only __main__ starts the front ends"
PRINTERS = ("shell", "__main__")


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under root (a package directory)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for each import of a module in `known`, wherever it sits."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from invoke import outputs` imports the module invoke.outputs
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    found = modules(root)
    known = set(found)
    graph: dict[str, dict[str, int]] = {}
    for name, path in found.items():
        edges = graph.setdefault(name, {})
        for target, line in imports(name, path, known):
            # a package's own __init__ is not an edge back from its modules: importing
            # invoke.backend.x runs invoke/backend/__init__.py, it does not depend on it
            if not name.startswith(target + "."):
                edges.setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def relative(module: str) -> str:
    """invoke.backend.model -> backend.model; invoke -> ''."""
    return module.partition(".")[2]


def within(module: str, names: set[str]) -> bool:
    """Whether a module (relative to invoke/) is one of `names` or inside one of them."""
    return any(module == n or module.startswith(n + ".") for n in names if n) or (
        module == "" and "" in names
    )


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    found = []
    for module, edges in sorted(graph.items()):
        source = relative(module)
        for target, line in sorted(edges.items()):
            imported = relative(target)
            if imported == "errors":
                continue
            for layer, allowed in MAY_IMPORT.items():
                if within(source, {layer}) and not within(imported, allowed):
                    found.append(
                        f"{module}:{line} imports {target} ({layer} may import only "
                        f"{', '.join(sorted(a or 'invoke' for a in allowed))})"
                    )
                    break
            else:
                if within(imported, {"shell"}) and not within(source, {"shell", "__main__"}):
                    found.append(
                        f"{module}:{line} imports {target} ({ONLY_FRONT_ENDS_IMPORT_SHELL})"
                    )
    return found


def prints(root: Path) -> list[str]:
    """print( calls outside the front ends."""
    found = []
    for name, path in modules(root).items():
        if within(relative(name), set(PRINTERS)):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                found.append(f"{name}:{node.lineno} prints (only shell/ and __main__.py do)")
    return found


def oversized(root: Path) -> list[str]:
    found = []
    for name, path in modules(root).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                limit, kind = MAX_CLASS_LINES, "class"
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                limit, kind = MAX_FUNCTION_LINES, "function"
            else:
                continue
            size = node.end_lineno - node.lineno + 1
            if size > limit:
                found.append(f"{name}:{node.lineno} {kind} {node.name} is {size} lines (> {limit})")
    return found


# -- the rules, on invoke/ ----------------------------------------------------------------------


def test_no_import_cycles_in_the_package() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_the_layers_import_only_downward() -> None:
    assert layer_violations(import_graph(PACKAGE)) == []


def test_only_the_shell_and_main_print() -> None:
    assert prints(PACKAGE) == []


def test_no_class_over_300_lines_and_no_function_over_80() -> None:
    assert oversized(PACKAGE) == []


@pytest.mark.parametrize(
    "code",
    [
        "import invoke.__main__",
        "from click.testing import CliRunner; from invoke.__main__ import cli; "
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output",
    ],
    ids=["import", "--help"],
)
def test_the_command_line_and_its_help_import_no_torch(code: str) -> None:
    probe = f"import sys; {code}; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", probe], check=True)


# -- each checker sees a violation of its rule ----------------------------------------------------


def make_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "invoke"
    for relative, text in {"__init__.py": "", **files}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    root = make_package(
        tmp_path,
        {
            "a.py": "from invoke import b\n",
            "b.py": "def f():\n    from invoke.c import g\n",
            "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import invoke.a\n",
        },
    )
    assert cycles(import_graph(root)) == [["invoke.a", "invoke.b", "invoke.c"]]


def test_layers_reaching_up_or_sideways_are_found(tmp_path: Path) -> None:
    root = make_package(
        tmp_path,
        {
            "config/__init__.py": "",
            "config/settings.py": "",
            "shell/__init__.py": "",
            "shell/report.py": "",
            "backend/__init__.py": "",
            "backend/run.py": "from invoke.config.settings import X\nfrom ..shell import report\n",
            "line/__init__.py": "",
            "line/prompt.py": "",
            "line/parse.py": "from invoke.line import prompt\nimport invoke.backend.run\n",
            "session.py": "from invoke import shell\n",
        },
    )
    found = layer_violations(import_graph(root))
    assert [f.split(" (")[0] for f in found] == [
        "invoke.backend.run:1 imports invoke.config.settings",
        "invoke.backend.run:2 imports invoke.shell.report",
        "invoke.line.parse:2 imports invoke.backend.run",
        "invoke.session:1 imports invoke.shell",
    ]


def test_a_print_outside_the_shell_is_found_and_one_inside_is_not(tmp_path: Path) -> None:
    root = make_package(
        tmp_path, {"session.py": "print('hi')\n", "shell/__init__.py": "print('fine')\n"}
    )
    assert prints(root) == ["invoke.session:1 prints (only shell/ and __main__.py do)"]


def test_a_long_function_and_a_long_class_are_found(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(80))
    methods = "".join(f"    def m{i}(self):\n        return {i}\n\n" for i in range(101))
    root = make_package(tmp_path, {"big.py": f"def long():\n{body}\n\nclass Big:\n{methods}"})
    assert oversized(root) == [
        "invoke.big:1 function long is 81 lines (> 80)",
        "invoke.big:84 class Big is 303 lines (> 300)",
    ]
