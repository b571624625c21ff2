"""Layering runs one way (core <- searches <- commands; objectives plug into the core; zoo and bench
on top), and importing the core changes nothing process-wide."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ABOVE_THE_CORE = {"objectives", "evo_ps", "evo_dfs", "evo_breed", "zoo", "bench"}
PROJECT_PACKAGES = ("evo_core", *sorted(ABOVE_THE_CORE), "tests")


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    return {name.split(".")[0] for name in names}


def test_the_core_imports_no_search_objective_or_zoo():
    for path in (REPO_ROOT / "evo_core").glob("*.py"):
        assert not imported_packages(path) & ABOVE_THE_CORE, path.name


def test_nothing_imports_a_command_module():
    for path in (p for package in PROJECT_PACKAGES for p in (REPO_ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m for m in modules if m.endswith("__main__")}, path


def test_importing_the_core_has_no_process_wide_effects():
    code = ("import sys, matplotlib, optuna; from omegaconf import OmegaConf; import evo_core;"
            "print(sorted(m for m in ('objectives', 'evo_ps', 'evo_dfs', 'evo_breed', 'zoo') if m in sys.modules),"
            " OmegaConf.has_resolver('project'), optuna.logging.get_verbosity(), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "False", str(20), "False"], out.stdout  # 20: optuna.logging.INFO
