"""Test-table rows of unchanged models are cached across studies and seeds (evo_core/_row_cache.py):
a second seed's study scores only its merged models; the opt-out scores every row and writes
nothing; what a row depends on is in its key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import evo_core._lifecycle as lifecycle
from evo_core._row_cache import TableRowCache, cache_root

SMALL = ["objective.search.limit=12", "+objective.test.limit=16", "merge=task_arithmetic", "space.warm_start_trials=2",
         "n_trials=4"]


@pytest.fixture
def scored_on_test(monkeypatch) -> list[str]:
    """Every model the objective scores on the test split, in order, as a digest of its weights."""
    calls: list[str] = []
    build = lifecycle.build_objective

    def counting_build(*args, **kwargs):
        objective = build(*args, **kwargs)
        score_items = objective.score_items

        def counted(model, split, *rest, **options):
            if split.startswith("test"):
                weights = torch.cat([p.detach().flatten()[:64].float() for p in model.parameters()])
                calls.append(f"{weights.sum().item():.6f}/{weights.abs().sum().item():.6f}")
            return score_items(model, split, *rest, **options)

        objective.score_items = counted
        return objective

    monkeypatch.setattr(lifecycle, "build_objective", counting_build)
    return calls


def run_ps(run_cli, tmp_path: Path, name: str, *extra: str) -> tuple[dict, str]:
    proc = run_cli("evo_ps", f"run_dir={tmp_path / name}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}", *SMALL, *extra)
    return json.loads((tmp_path / name / "test_table.json").read_text()), proc.stdout


@pytest.mark.slow
def test_second_seed_scores_only_the_merged_models(tmp_path, run_cli, scored_on_test, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("EVO_CACHE_DIR", str(cache))
    first, out = run_ps(run_cli, tmp_path, "seed0", "seed=0")
    rows = list(first)
    assert rows == ["base", "ja", "math_wiz", "math_abel", "best_uniform", "best_merge"]
    assert len(scored_on_test) == 6, scored_on_test
    unchanged = scored_on_test[:4]
    assert len(list((cache / "test_rows").glob("*.json"))) == 4  # base and the 3 sources, not the merges

    scored_on_test.clear()
    second, out = run_ps(run_cli, tmp_path, "seed1", "seed=1")
    assert len(scored_on_test) == 2, scored_on_test  # best_uniform and best_merge only
    assert not set(scored_on_test) & set(unchanged)
    for row in ("base", "ja", "math_wiz", "math_abel"):
        assert second[row] == first[row]
        assert f"table   {row} on test: cached" in out
    assert "table   best_merge on test ..." in out

    # the opt-out scores every row again and leaves the cache as it was
    scored_on_test.clear()
    before = sorted(p.stat().st_mtime_ns for p in (cache / "test_rows").iterdir())
    third, _ = run_ps(run_cli, tmp_path, "seed1_nocache", "seed=1", "cache.test_rows=false")
    assert len(scored_on_test) == 6
    assert sorted(p.stat().st_mtime_ns for p in (cache / "test_rows").iterdir()) == before
    assert {row: third[row] for row in rows[:4]} == {row: first[row] for row in rows[:4]}

    # another generation setting is another key: the unchanged models are scored again
    scored_on_test.clear()
    run_ps(run_cli, tmp_path, "seed1_short", "seed=1", "objective.options.max_new_tokens=12")
    assert len(scored_on_test) == 6


def test_cache_dir_setting_then_env_then_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EVO_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root(str(tmp_path / "set")) == tmp_path / "set"
    assert cache_root(None) == tmp_path / "env"
    monkeypatch.delenv("EVO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(None) == tmp_path / "xdg" / "evomerge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root(None) == Path.home() / ".cache" / "evomerge"


def make_cache(tmp_path: Path, **objective) -> TableRowCache:
    options = {"name": "mgsm_ja", "fitness": "acc_ja", "search": {"limit": 5}, "options": {"max_new_tokens": 40}}
    return TableRowCache(enabled=True, directory=str(tmp_path), objective=options | objective, tokenizer="tok")


def test_key_follows_what_the_scores_depend_on(tmp_path):
    data = tmp_path / "test.tsv"
    data.write_text("q\ta\n")
    cache = make_cache(tmp_path)
    key = cache.key(model="m", split="test", spec={"source": "tsv", "path": str(data)}, n_items=1)
    same = [make_cache(tmp_path, fitness="acc"), make_cache(tmp_path, search={"limit": 9})]  # no score changes
    assert {c.key(model="m", split="test", spec={"source": "tsv", "path": str(data)}, n_items=1) for c in same} == {key}
    others = [cache.key(model="m2", split="test", spec={"source": "tsv", "path": str(data)}, n_items=1),
              cache.key(model="m", split="test", spec={"source": "tsv", "path": str(data)}, n_items=2),
              cache.key(model="m", split="test", spec={"source": "tsv", "path": str(data), "limit": 1}, n_items=1),
              make_cache(tmp_path, options={"max_new_tokens": 12}).key(
                  model="m", split="test", spec={"source": "tsv", "path": str(data)}, n_items=1)]
    data.write_text("q\tb\n")  # the same path, other items
    others.append(cache.key(model="m", split="test", spec={"source": "tsv", "path": str(data)}, n_items=1))
    assert len({key, *others}) == len(others) + 1


def test_rows_round_trip_and_a_damaged_row_is_scored_again(tmp_path):
    cache = make_cache(tmp_path)
    key = cache.key(model="m", split="test", spec={}, n_items=2)
    assert cache.get(key) is None
    cache.put(key, {"acc": [1.0, 0.0]}, label="base on test")
    assert cache.get(key) == {"acc": [1.0, 0.0]}
    cache.path(key).write_text("{not json")
    assert cache.get(key) is None
    off = TableRowCache(enabled=False, directory=str(tmp_path / "off"), objective={}, tokenizer="tok")
    off.put(key, {"acc": [1.0]}, label="base on test")
    assert off.get(key) is None and not (tmp_path / "off").exists()


def test_an_unwritable_cache_is_one_line_and_the_run_goes_on(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = TableRowCache(enabled=True, directory=str(blocker), objective={}, tokenizer="tok")  # a file, not a dir
    cache.put(cache.key(model="m", split="test", spec={}, n_items=1), {"acc": [1.0]}, label="base on test")
    out = capsys.readouterr().out
    assert out.startswith("cache   could not keep the base on test row in ") and out.count("\n") == 1
