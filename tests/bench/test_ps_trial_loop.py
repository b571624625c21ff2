"""bench/ps_trial_loop.py end to end on the tiny random models laid out as a zoo: both loops run and,
at density 1 (deterministic), give the very same outputs and fitness; bad input fails in one line."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench" / "ps_trial_loop.py"


@pytest.fixture(scope="module")
def tiny_zoo(tiny_model_dirs, tmp_path_factory) -> Path:
    zoo = tmp_path_factory.mktemp("tiny_zoo")
    for name, tiny in {"base": "base", "ja": "src_a", "math_wiz": "src_b", "math_abel": "src_c"}.items():
        (zoo / name).symlink_to(tiny_model_dirs[tiny], target_is_directory=True)
    return zoo


@pytest.fixture(scope="module")
def ps_trial_loop():
    """The bench as a module, for the cheap input checks (its env defaults undone afterwards)."""
    saved = dict(os.environ)
    spec = importlib.util.spec_from_file_location("ps_trial_loop", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.environ.clear()
    os.environ.update(saved)
    return module


def bench(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args, "--workdir", str(tmp_path)], cwd=REPO_ROOT,
                          text=True, capture_output=True, timeout=600)


@pytest.mark.slow
def test_loops_agree_exactly_at_density_1(tiny_zoo, tmp_path):
    proc = bench("--zoo", str(tiny_zoo), "--trials", "1", "--limit", "6", "--densities", "1", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "max |acc diff| 0.000, max |acc_ja diff| 0.000; identical outputs 12/12" in out, out
    ratio = float(re.search(r"ratio \(b\)/\(a\) = ([\d.]+)x", out)[1])
    ceiling = float(re.search(r"could reach at most \(b\) / \(a\)'s generation = ([\d.]+)x", out)[1])
    assert 0 < ratio <= ceiling
    assert re.search(r"merge only: ours [\d.]+ ms/apply vs torch copy of the same bytes [\d.]+ ms", out), out
    assert not list(tmp_path.iterdir()), "mergekit's per-trial model dirs must be deleted"


@pytest.mark.slow
def test_mergekit_evolve_in_memory_evaluator_runs_and_agrees_in_fp32(tiny_zoo, tmp_path):
    """mergekit 0.1.5's InMemoryMergeEvaluator, with the bench's run-time changes, runs in every
    variant; in float32 and batched it gives our very outputs, and the installed mergekit is untouched."""
    # found, not imported (actors.py imports ray)
    files = [importlib.util.find_spec(name).origin for name in ("mergekit.evo.actors", "mergekit.io.tasks")]
    installed = {file: Path(file).read_bytes() for file in files}
    proc = bench("--zoo", str(tiny_zoo), "--trials", "1", "--limit", "6", "--densities", "1", "--peers",
                 "in_memory_shipped", "in_memory_bf16", "in_memory_fp32", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for tag, label in (("(c)", "in-memory as shipped: bf16, batch 1"), ("(d)", "in-memory, bf16, batched"),
                       ("(e)", "in-memory, fp32, batched")):
        assert re.search(rf"{re.escape(tag)} {re.escape(label)}: [\d.]+ s wall, [\d.]+ s CPU; ratio", out), out
    fp32 = out[out.index("(e) in-memory, fp32, batched:"):]
    assert "max |acc diff| 0.000, max |acc_ja diff| 0.000; identical outputs 12/12" in fp32, out
    assert "(b) on-disk" not in out
    assert {f: Path(f).read_bytes() for f in installed} == installed


def run_kwargs(zoo: Path, **overrides) -> dict:
    return {"zoo": zoo, "method": "dare_ties", "densities": [1.0], "trials": 1, "limit": 4, "batch_size": None,
            "threads": 1, "workdir": None, **overrides}


def test_bad_density_fails_before_any_trial(ps_trial_loop, tiny_zoo, capsys):
    with pytest.raises(ValueError, match=re.escape("dare_ties densities must lie in [0, 1]; got [1.5]")):
        ps_trial_loop.run(**run_kwargs(tiny_zoo, densities=[1.0, 1.5]))
    assert "trial" not in capsys.readouterr().out


@pytest.mark.parametrize("overrides, message", [
    ({"trials": 0}, "must be >= 1"),
    ({"method": "slerp"}, "slerp merges exactly 2 models"),
    ({"method": "nope"}, "unknown merge method 'nope'"),
    ({"peers": ["on_disk", "in_memory_gpu"]}, "--peers: unknown in_memory_gpu; known: on_disk, in_memory_shipped"),
])
def test_bad_arguments_fail_with_one_line(ps_trial_loop, tiny_zoo, overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ps_trial_loop.run(**run_kwargs(tiny_zoo, **overrides))


def test_missing_zoo_fails_in_one_line(ps_trial_loop, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a built zoo"):
        ps_trial_loop.run(**run_kwargs(tmp_path / "nowhere"))
