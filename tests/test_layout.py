"""The shape of the code: small modules, no folder holding most of it, imports that run down the layers and
without cycles, every setting's default defined once and shown by every command that takes it, every objective
documented, and every name docs/walkthrough.md cites importable."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from pathlib import Path

import typer.main

from crl.cli import app
from crl.config import SECTIONS, RunConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "crl"


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p for p in PACKAGE.rglob("*.py")}


def lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_module_over_350_lines():
    assert {name: lines(p) for name, p in modules().items() if lines(p) > 350} == {}


def test_no_folder_holds_a_quarter_of_the_code():
    total = sum(lines(p) for p in modules().values())
    by_folder: dict[str, int] = {}
    for p in modules().values():
        folder = p.relative_to(PACKAGE).parts[0] if len(p.relative_to(PACKAGE).parts) > 1 else "."
        by_folder[folder] = by_folder.get(folder, 0) + lines(p)
    assert max(by_folder.values()) < 0.25 * total, by_folder


def imports(path: Path, name: str) -> set[str]:
    """The crl modules a module imports (at any depth of its body: lazy imports count too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith("crl") and m != name}


def test_imports_have_no_cycles_between_modules():
    known = modules()
    graph = {name: {m for m in imports(p, name) if m in known} for name, p in known.items()}
    # a package's __init__ re-exporting its modules is not a cycle through them
    graph = {name: {m for m in deps if not (name.startswith(m + ".") and known[m].name == "__init__.py")} for name, deps in graph.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*path, node]):
                return True
        state[node] = 2
        return False

    assert not any(visit(n, []) for n in sorted(graph) if state.get(n) is None), cycle


# Top to bottom: a module imports from its own package or from a package on a lower layer, never from one on
# its own layer or above (the command line above the stages, above what runs models and what shows results,
# above the objectives and verifiers, above the data layer, ...).
LAYERS = (
    ("__main__",), ("cli",), ("stages",), ("engine", "views"), ("objectives", "verifiers"), ("data",),
    ("config", "answers"), ("default",), ("io", "progress"), ("locks",), ("errors",),
)


def layer(module: str) -> int:
    package = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if package in names) if package != "__init__" else -1


def test_imports_run_down_the_layers():
    known = modules()
    upward = [
        f"{name} imports {m}"
        for name, path in known.items() if name != "crl"
        for m in imports(path, name) - {"crl"} if m in known and m.split(".")[:2] != name.split(".")[:2] and layer(m) <= layer(name)
    ]
    assert upward == []


def test_every_package_has_its_layer():
    packages = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert packages - {"__init__"} == {name for names in LAYERS for name in names}


def test_every_objective_is_documented_in_the_objectives_page_and_the_readme_table():
    from crl.objectives import ADVANTAGES, AGGREGATIONS, OBJECTIVES

    page, readme = (ROOT / "docs" / "objectives.md").read_text(), (ROOT / "README.md").read_text()
    headed = {n for line in page.splitlines() if line.startswith("#") for n in re.findall(r"`([^`]+)`", line)}
    tabled = {n for line in readme.splitlines() if line.startswith("| `") for n in re.findall(r"`([^`]+)`", line.split("|")[1])}
    assert set(OBJECTIVES) - headed == set() and set(OBJECTIVES) - tabled == set()
    assert {n for n in (*ADVANTAGES, *AGGREGATIONS) if f"`{n}`" not in page} == set()


def test_every_name_the_walkthrough_cites_can_be_imported():
    cited = re.findall(r"`(crl/[\w/]+)\.py:([\w.]+)`", (ROOT / "docs" / "walkthrough.md").read_text())
    assert len(cited) > 30
    for path, name in cited:
        value = importlib.import_module(path.replace("/", "."))
        for attr in name.split("."):
            value = getattr(value, attr)


def setting_names() -> set[str]:
    top = {f.name for f in dataclasses.fields(RunConfig)}
    return top | {f"{s}__{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


def test_every_setting_default_is_defined_once():
    """Every flag that sets a setting defaults to 'not given' and shows the one default of crl/config/settings.py;
    no command defines a default of its own for a setting it takes or a top-level one."""
    settings = setting_names()
    top = {f.name for f in dataclasses.fields(RunConfig)}
    root = typer.main.get_command(app)
    checked = 0
    for name, command in root.commands.items():
        for sub in getattr(command, "commands", {}).values() or [command]:
            exposed = {p.name.rpartition("__")[2] for p in sub.params if p.name in settings}
            for param in sub.params:
                if param.required:  # an argument the user must give has no default to define
                    continue
                if param.name not in settings:
                    assert param.name not in exposed | top, f"crl {name} defines its own default for the setting {param.name}"
                    continue
                section, _, field = param.name.rpartition("__")
                cls = SECTIONS[section] if section else RunConfig
                f = next(x for x in dataclasses.fields(cls) if x.name == field)
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                assert param.default is None, (name, param.name)
                shown = "decided at run time" if default is None else "" if isinstance(default, (tuple, dict)) else str(default)
                assert "[default: " in param.help and shown in param.help, (name, param.name, param.help)
                checked += 1
    assert checked > 60
