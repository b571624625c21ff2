"""Layering runs one way (core <- searches <- commands; objectives plug into the core; zoo and bench
on top), no package reaches into another's private modules, and importing the core changes nothing
process-wide."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ABOVE_THE_CORE = {"objectives", "evo_ps", "evo_dfs", "evo_breed", "evo_genome", "zoo", "bench"}
# the loopback test servers: beside the core, importing nothing of the project, imported by tests only
BESIDE = {"evo_servers"}
PROJECT_PACKAGES = ("evo_core", *sorted(ABOVE_THE_CORE), *sorted(BESIDE), "tests")


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    return {name.split(".")[0] for name in names}


def test_the_core_imports_no_search_objective_or_zoo():
    for path in (REPO_ROOT / "evo_core").glob("*.py"):
        assert not imported_packages(path) & ABOVE_THE_CORE, path.name


@pytest.mark.slow
def test_the_test_servers_stand_apart_and_the_old_command_forwards():
    for path in (p for package in PROJECT_PACKAGES for p in (REPO_ROOT / package).rglob("*.py")):
        imported = imported_packages(path)
        if path.is_relative_to(REPO_ROOT / "evo_servers"):
            assert not imported & set(PROJECT_PACKAGES) - BESIDE, path
        elif not path.is_relative_to(REPO_ROOT / "tests"):
            assert not imported & BESIDE, path
    for module in ("evo_servers", "evo_core.servers"):  # the documented command, and the one it replaced
        out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout
        assert out.startswith("usage: python -m evo_servers") and "--pg-port" in out, out


def test_nothing_imports_a_command_module():
    for path in (p for package in PROJECT_PACKAGES for p in (REPO_ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m for m in modules if m.endswith("__main__")}, path


# tests mirror the packages: tests/<package>/ may import that package's private modules (white-box
# tests of its parts); tests/scale tests the core's shared stores. Everything else, tests/conftest.py
# included, uses public names only.
TESTS_OF = {"scale": "evo_core"}


def owner(path: Path) -> str | None:
    """The project package whose privates `path` may import."""
    top, *rest = path.relative_to(REPO_ROOT).parts
    if top != "tests":
        return top
    return TESTS_OF.get(rest[0], rest[0]) if len(rest) > 1 else None


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def private_reaches(path: Path, source: str | None = None) -> list[str]:
    """Imports in `path` (or in `source`, as if it were that file) of another project package's
    private module or name: `import X._y`, `from X._y import z`, `from X import _y` (any private
    part below X counts)."""
    own, found = owner(path), []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            modules = [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules = [(node.module, tuple(alias.name for alias in node.names))]
        else:
            continue
        for module, names in modules:
            top, *below = module.split(".")
            if top in PROJECT_PACKAGES and top != own and any(map(is_private, [*below, *names])):
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {module} {', '.join(names)}".rstrip())
    return found


def test_no_package_imports_another_packages_private_modules():
    reaches = [r for package in PROJECT_PACKAGES for p in sorted((REPO_ROOT / package).rglob("*.py"))
               for r in private_reaches(p)]
    assert not reaches, "\n".join(reaches)


def test_the_private_import_rule_sees_every_form():
    source = ("import evo_ps._merge\nfrom evo_ps._config import PoolConfig\nfrom evo_core import _pool\n"
              "from evo_breed._search import BreedSearch\nfrom evo_ps import PoolConfig\nimport zoo.world\n")
    probe = REPO_ROOT / "evo_breed" / "probe.py"  # a file of evo_breed that is only parsed, never written
    assert [r.split(": ", 1)[1] for r in private_reaches(probe, source)] == [
        "evo_ps._merge", "evo_ps._config PoolConfig", "evo_core _pool"]
    assert owner(REPO_ROOT / "tests" / "scale" / "test_postgres.py") == "evo_core"
    assert owner(REPO_ROOT / "tests" / "evo_ps" / "test_ps_cli.py") == "evo_ps"
    assert owner(REPO_ROOT / "tests" / "conftest.py") is None


def test_importing_the_core_has_no_process_wide_effects():
    code = ("import sys, matplotlib, optuna; from omegaconf import OmegaConf; import evo_core;"
            "print(sorted(m for m in ('objectives', 'evo_ps', 'evo_dfs', 'evo_breed', 'zoo') if m in sys.modules),"
            " OmegaConf.has_resolver('project'), optuna.logging.get_verbosity(), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "False", str(20), "False"], out.stdout  # 20: optuna.logging.INFO
