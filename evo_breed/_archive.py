"""The M2N2 archive: a fixed-size population of models, each with its per-item scores on the search
split, competing for the items (Abrantes, Lange, Tang: "Competition and Attraction Improve Model
Fusion", GECCO 2025; algorithm read from SakanaAI/natural_niches).

    fitness_i  = sum_j s_ij / (sum_k s_kj) ** alpha            competition for resources
    attraction = sum_j max(0, f_2j - f_1j),  f_ij = s_ij / (sum_k s_kj) ** alpha
                 (parent 2 covers parent 1's gaps, each item weighted by its scarcity)

An item nobody scores counts 0 (its denominator is taken as 1). With alpha = 0 the fitness is the
plain score sum and, without attraction, the search is a plain GA. A child enters the archive
only by beating its weakest member (the fitness recomputed over the members plus the child); while
the archive is not full every scored model enters. gen781's rule (`archive.beat_parents`) comes
first: a child whose mean score over the competed items is not above both parents' (`beats_parents`)
enters nowhere, not even as the champion ("only offspring scoring higher than both parents survive
as champions").

`Archive` keeps one worker's replica on disk (run_dir/archive/; the archive itself is the replay
of the study's offer log, evo_breed/_offers.py): one safetensors file per member, written
before `state.json` names it, and `state.json` (atomic) as the replica's truth: members, their
scores, which trials were offered, and the champion (best mean score ever, kept in
`champion.safetensors` even after it leaves the archive). A kill at any moment leaves either the
old or the new state; files no state names are removed on open.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from evo_core import atomic_write_text


def _scarcity(scores: np.ndarray, alpha: float) -> np.ndarray:
    """f_ij = s_ij / (sum_k s_kj) ** alpha, an item nobody scores with denominator 1."""
    z = scores.sum(axis=0)
    z = np.where(z > 0, z, 1.0) ** alpha
    return scores / z[None, :]


def resource_fitness(scores: np.ndarray, alpha: float) -> np.ndarray:
    """Competition for resources: per model (row) sum_j s_ij / (sum_k s_kj) ** alpha."""
    return _scarcity(np.asarray(scores, dtype=float), alpha).sum(axis=1)


def attraction(scores: np.ndarray, alpha: float, first: int) -> np.ndarray:
    """Per candidate partner: sum_j max(0, f_cj - f_first,j), f as in resource_fitness."""
    f = _scarcity(np.asarray(scores, dtype=float), alpha)
    return np.maximum(0.0, f - f[first][None, :]).sum(axis=1)


def _normalized(weights: np.ndarray) -> np.ndarray:
    total = weights.sum()
    return weights / total if total > 0 else np.full(len(weights), 1.0 / len(weights))


def pick_parents(scores: np.ndarray, rng: np.random.Generator, *, alpha: float, use_attraction: bool = True,
                 attraction_weight: float = 1.0, selection: str = "proportional",
                 tournament_size: int = 3) -> tuple[int, int]:
    """Two archive rows: parent 1 by fitness (proportional, or the best of `tournament_size` drawn
    at random); parent 2 by attraction to parent 1 (mixed with fitness: attraction_weight w gives
    p = w attraction + (1 - w) fitness, each normalized), or like parent 1 without attraction.
    All-zero weights fall back to uniform draws."""
    fitness = resource_fitness(scores, alpha)
    n = len(fitness)

    def by_fitness() -> int:
        if selection == "tournament":
            entrants = rng.choice(n, size=min(tournament_size, n), replace=False)
            return int(entrants[np.argmax(fitness[entrants])])
        return int(rng.choice(n, p=_normalized(fitness)))

    first = by_fitness()
    if not use_attraction:
        return first, by_fitness()
    pull = attraction(scores, alpha, first)
    probs = _normalized(pull) if pull.sum() > 0 else _normalized(fitness)
    if attraction_weight < 1.0:
        probs = attraction_weight * probs + (1 - attraction_weight) * _normalized(fitness)
    return first, int(rng.choice(n, p=probs / probs.sum()))


def beats_parents(child: Sequence[float], parent_means: Sequence[float]) -> bool:
    """gen781's survival rule: the child's mean over the competed items above every parent's."""
    return all(float(np.mean(child)) > p for p in parent_means)


def place_for(scores: np.ndarray, child: np.ndarray, *, alpha: float, capacity: int) -> int | None:
    """Where a child goes: a new row while the archive has room, else the row of the weakest member
    if the child is not itself the weakest (fitness over members + child; ties evict the member
    listed first), else None."""
    if len(scores) < capacity:
        return len(scores)
    fitness = resource_fitness(np.vstack([scores, child[None, :]]), alpha)
    worst = int(np.argmin(fitness))
    return worst if worst < len(scores) else None


@dataclass
class Member:
    id: str                      # "base", a source name, "u0" (initial uniform merge), "c17" (child of trial 17)
    scores: list[float]          # per item of each resource metric, in order, search split
    mean: float
    trial: list[Any]             # [study name, trial number]
    parents: list[str] = field(default_factory=list)


class Archive:
    """The archive of one run, on disk under `root` (see the module docstring)."""

    def __init__(self, root: Path, *, capacity: int, alpha: float):
        self.root, self.capacity, self.alpha = Path(root), capacity, alpha
        self.members: list[Member] = []
        self.offered: dict[str, list[int]] = {}  # study name -> trial numbers already offered
        self.champion: Member | None = None
        self.evicted: list[str] = []              # ids that left the archive, in order
        state = self.root / "state.json"
        if state.exists():
            data = json.loads(state.read_text())
            self.members = [Member(**m) for m in data["members"]]
            self.offered = data["offered"]
            self.champion = Member(**data["champion"]) if data["champion"] else None
            self.evicted = data.get("evicted", [])
        (self.root / "members").mkdir(parents=True, exist_ok=True)
        named = {f"{m.id}.safetensors" for m in self.members}
        for file in (self.root / "members").iterdir():  # written before a kill, never named by a state
            if file.name not in named:
                file.unlink()
        for leftover in self.root.glob(".champion.safetensors.tmp-*"):
            leftover.unlink()
        missing = [m.id for m in self.members if not self.path(m.id).is_file()]
        if missing:
            raise ValueError(f"{self.root}: archive members {missing} have no weights file; "
                             f"the run dir was changed by hand: use another run_dir")

    def path(self, member_id: str) -> Path:
        return self.root / "members" / f"{member_id}.safetensors"

    @property
    def scores(self) -> np.ndarray:
        return np.array([m.scores for m in self.members], dtype=float)

    def was_offered(self, study: str, number: int) -> bool:
        return number in self.offered.get(study, ())

    def weights(self, member_id: str) -> dict[str, torch.Tensor]:
        return load_file(self.path(member_id) if member_id != "champion" else self.root / "champion.safetensors")

    @property
    def n_offers(self) -> int:
        """How many offers this archive has taken (of every phase)."""
        return sum(len(numbers) for numbers in self.offered.values())

    def offer(self, member: Member,
              weights: Mapping[str, torch.Tensor] | Callable[[], Mapping[str, torch.Tensor]], *,
              must_beat: Sequence[float] = ()) -> bool:
        """Offer a scored model (once per trial); -> whether it entered. Files first, then the state.
        `weights` may be a function making them: called only if the model enters or is champion
        (a replica replaying another worker's offer makes its crossover only then).
        must_beat: the parents' mean scores under gen781's rule (beats_parents); () for none."""
        study, number = member.trial
        weights = _Deferred(weights) if callable(weights) else weights
        if self.members:
            assert len(member.scores) == len(self.members[0].scores), "every model is scored on the same items"
        survives = beats_parents(member.scores, must_beat)
        if not survives:
            slot = None
        elif self.members:
            slot = place_for(self.scores.reshape(len(self.members), -1), np.array(member.scores), alpha=self.alpha,
                             capacity=self.capacity)
        else:
            slot = 0
        if slot is not None:
            _save(weights, self.path(member.id))
        best = survives and (self.champion is None or member.mean > self.champion.mean)
        if best:
            _save(weights, self.root / "champion.safetensors")
        gone = None
        if slot is not None:
            if slot < len(self.members):
                gone = self.members[slot].id
                self.members[slot] = member
                self.evicted.append(gone)
            else:
                self.members.append(member)
        if best:
            self.champion = member
        self.offered.setdefault(study, []).append(number)
        atomic_write_text(self.root / "state.json", json.dumps({
            "capacity": self.capacity, "alpha": self.alpha, "members": [asdict(m) for m in self.members],
            "champion": asdict(self.champion) if self.champion else None, "offered": self.offered,
            "evicted": self.evicted}) + "\n")
        if gone is not None and gone != member.id:
            self.path(gone).unlink(missing_ok=True)
        return slot is not None


class _Deferred(Mapping):
    """Weights made on first use, once."""

    def __init__(self, make: Callable[[], Mapping[str, torch.Tensor]]):
        self.make, self.made = make, None

    def _weights(self) -> Mapping[str, torch.Tensor]:
        if self.made is None:
            self.made = self.make()
        return self.made

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._weights()[key]

    def __iter__(self):
        return iter(self._weights())

    def __len__(self) -> int:
        return len(self._weights())


def _save(weights: Mapping[str, torch.Tensor], path: Path) -> None:
    """Whole or not at all: written beside `path`, then renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp))
    os.replace(tmp, path)

