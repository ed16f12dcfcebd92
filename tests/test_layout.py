"""The house rules of the layout: packages by layer, nothing imported from a layer above,
every import resolvable, reading a run apart from the orchestrator, modules kept small."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "genesis"
# lowest first; a module may import from its own layer and the ones before it
LAYERS = ("errors", "core", "search", "train", "runs", "report", "colony", "serve", "cli")
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    """The layer of `genesis.<layer>...`; None for the package front (`genesis`, `__main__`)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def _genesis_imports(path: Path) -> list[tuple[str, tuple[str, ...], int]]:
    """(module, names, line) of every `from genesis... import` and `import genesis...`,
    at module level and inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "genesis" or node.module.startswith("genesis.")):
            found.append((node.module, tuple(a.name for a in node.names), node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, (), node.lineno) for a in node.names
                      if a.name == "genesis" or a.name.startswith("genesis.")]
    return found


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_no_module_imports_from_a_layer_above_its_own(path):
    own = _layer(_name(path))
    if own is None:
        return  # the public front and `python -m genesis` may import anything
    for module, _, line in _genesis_imports(path):
        theirs = _layer(module)
        assert theirs is not None and theirs <= own, (
            f"{path.relative_to(PACKAGE.parent)}:{line} imports {module} from a layer above "
            f"({LAYERS[own]} < {LAYERS[theirs] if theirs is not None else 'the front'})")


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_every_genesis_import_resolves(path):
    """Lazy imports inside functions too: a name that moved fails here, not in a user's run."""
    for module, names, line in _genesis_imports(path):
        imported = importlib.import_module(module)
        for name in names:
            assert hasattr(imported, name) or importlib.util.find_spec(f"{module}.{name}"), (
                f"{path.relative_to(PACKAGE.parent)}:{line}: {module} has no {name}")


def test_reading_a_run_never_imports_the_orchestrator():
    readers = [p for p in _modules() if _layer(_name(p)) in (LAYERS.index("report"), LAYERS.index("colony"))]
    assert readers
    for path in readers:
        assert all(module != "genesis.runs.api" for module, _, _ in _genesis_imports(path)), path


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_modules_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {lines} lines; split it by what it does"


def test_every_package_is_a_layer():
    packages = {p.parent.relative_to(PACKAGE).parts[0] for p in _modules() if p.parent != PACKAGE}
    assert packages <= set(LAYERS)


def test_the_wheel_ships_every_package_and_the_top_level_data_folders_are_the_one_copy():
    import tomllib

    project = PACKAGE.parent
    setuptools = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {_name(p) for p in PACKAGE.rglob("__init__.py") if "__pycache__" not in p.parts}
    assert set(setuptools["packages"]) == folders | {"genesis.genomes", "genesis.trainers"}
    assert setuptools["package-dir"] == {"genesis.genomes": "genomes", "genesis.trainers": "trainers"}
    assert not (PACKAGE / "genomes").exists() and not (PACKAGE / "trainers").exists()
    from genesis.core.config import resolve_data_file

    assert resolve_data_file("default", "genomes") == project / "genomes" / "default.toml"
    assert resolve_data_file("quick", "trainers") == project / "trainers" / "quick.toml"
