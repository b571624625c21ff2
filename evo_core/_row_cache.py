"""Test-table rows of unchanged models, kept across studies and seeds.

The test table scores the search's baselines (the base model, each source) next to its best. Those
models are the same in every run and every seed of a study, and on a real model they cost as much
as the best's row each: a 7B row is minutes. A search names the rows whose model is a fixed input
(`Search.unchanged_model(name)`: a content fingerprint, None for a row to score every time), and
the lifecycle keeps their per-item scores here, under a key of:
- that fingerprint (the model's weights, evo_core/_fingerprint.py, with what the search adds:
  dtype, device, the live architecture the weights are loaded into);
- the tokenizer that prompts it (its model's fingerprint);
- the test split's spec, its item count, and the bytes of a local file it names;
- the objective's name and options (prompt, generation settings, detector, ...), not its fitness;
- the torch and transformers versions (kernels change the floats) and this format's version.
Anything else changed gives another key, so a stale row is never read: it is only left behind.

Where (one JSON file per row): `cache.dir` if set, else $EVO_CACHE_DIR, else $XDG_CACHE_HOME/evomerge
(~/.cache/evomerge), under test_rows/. Never the run dir: rows outlive runs. `cache.test_rows=false`
scores every row every time and leaves the cache alone.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._files import atomic_write_text

FORMAT = 1  # bump when what a row holds, or what its scores mean, changes


def cache_root(configured: str | None) -> Path:
    """The cache directory: `cache.dir`, else $EVO_CACHE_DIR, else the user's cache (XDG) /evomerge."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("EVO_CACHE_DIR"):
        return Path(os.environ["EVO_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "evomerge"


def _local_file_digests(spec: Any) -> dict[str, str]:
    """sha256 of every existing local file a split spec names (a path string, or a `path` value)."""
    paths = [spec] if isinstance(spec, str) else [v for k, v in spec.items() if k == "path" and isinstance(v, str)] \
        if isinstance(spec, Mapping) else []
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths if Path(p).is_file()}


class TableRowCache:
    """get/put of one test-table row's per-item scores; a disabled cache never reads or writes."""

    def __init__(self, *, enabled: bool, directory: str | None, objective: Mapping[str, Any], tokenizer: str):
        import torch
        import transformers

        self.enabled = enabled
        self.root = cache_root(directory) / "test_rows"
        # what every row of this run shares: the objective without its fitness choice (it picks a
        # column and changes no score) and without its splits (a row's own split spec is in its key)
        self._shared = {"format": FORMAT, "torch": torch.__version__, "transformers": transformers.__version__,
                        "tokenizer": tokenizer,
                        "objective": {k: v for k, v in objective.items() if k not in ("fitness", "search", "test")}}

    def key(self, *, model: str, split: str, spec: Any, n_items: int | None) -> str:
        """The row's file name: a hash of everything its scores depend on (module docstring)."""
        text = json.dumps({**self._shared, "model": model, "split": split, "spec": spec, "n_items": n_items,
                           "files": _local_file_digests(spec)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict[str, list[float]] | None:
        """The row's per-item scores, or None (disabled, never stored, or unreadable: scored again)."""
        if not self.enabled:
            return None
        try:
            scores = json.loads(self.path(key).read_text(encoding="utf-8"))["item_scores"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return scores if isinstance(scores, dict) else None

    def put(self, key: str, item_scores: Mapping[str, Sequence[float]], *, label: str) -> None:
        """Store a row (atomically: a reader sees it whole or not at all). A cache that cannot be
        written costs the next run a rescore, never this run: the error is one printed line."""
        if not self.enabled:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path(key), json.dumps(
                {"row": label, "item_scores": {k: list(v) for k, v in item_scores.items()}}) + "\n")
        except OSError as err:
            print(f"cache   could not keep the {label} row in {self.root} ({err.strerror or err}); "
                  f"it is scored again next time", flush=True)
