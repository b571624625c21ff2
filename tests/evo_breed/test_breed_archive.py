"""The M2N2 formulas against hand-computed values, and the archive's state on disk."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evo_breed import Archive, Member, attraction, beats_parents, pick_parents, place_for, resource_fitness

# 3 models x 4 items; item 3 is graded. Column sums z = [2, 1, 2, 0.5].
S = np.array([[1, 1, 1, 0],
              [1, 0, 0, 0],
              [0, 0, 1, 0.5]])


@pytest.mark.parametrize("alpha, expected", [
    (1.0, [1/2 + 1 + 1/2, 1/2, 1/2 + 0.5/0.5]),          # 2.0, 0.5, 1.5
    (0.0, [3.0, 1.0, 1.5]),                              # alpha 0: plain score sums
    (2.0, [1/4 + 1 + 1/4, 1/4, 1/4 + 0.5/0.25]),         # 1.5, 0.25, 2.25
])
def test_competition_for_resources_by_hand(alpha, expected):
    np.testing.assert_allclose(resource_fitness(S, alpha), expected)


def test_an_item_nobody_solves_counts_nothing():
    scores = np.array([[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(resource_fitness(scores, 1.0), [1.0, 0.0])


def test_attraction_by_hand():
    # f = S / z = [[.5, 1, .5, 0], [.5, 0, 0, 0], [0, 0, .5, 1]]
    np.testing.assert_allclose(attraction(S, 1.0, first=1), [0 + 1 + .5 + 0, 0, 0 + 0 + .5 + 1])
    np.testing.assert_allclose(attraction(S, 1.0, first=0), [0, 0, 1.0])
    # alpha 0: unweighted gaps, s_cj - s_0j
    np.testing.assert_allclose(attraction(S, 0.0, first=0), [0, 0, 0.5])


def test_a_child_replaces_the_weakest_member_or_is_turned_away():
    # child covers item 3 with m2: z = [2, 1, 2, 1.5]; fitness 2, .5, .5 + .5/1.5, 1/1.5 -> m1 goes
    assert place_for(S, np.array([0, 0, 0, 1.0]), alpha=1.0, capacity=3) == 1
    # a clone of m1 ties with it (1/3 each): the member listed first goes (as argmin in M2N2's code)
    assert place_for(S, np.array([1.0, 0, 0, 0]), alpha=1.0, capacity=3) == 1
    assert place_for(S, np.zeros(4), alpha=1.0, capacity=3) is None
    assert place_for(S, np.zeros(4), alpha=1.0, capacity=4) == 3  # room: everyone enters


def test_parent_two_is_drawn_by_attraction():
    rng = np.random.default_rng(0)
    pairs = [pick_parents(S, rng, alpha=1.0) for _ in range(3000)]
    firsts = np.bincount([a for a, _ in pairs], minlength=3) / len(pairs)
    np.testing.assert_allclose(firsts, [2 / 4, 0.5 / 4, 1.5 / 4], atol=0.03)  # proportional to fitness
    # the partner given the first: attraction [0, 0, 1] after m0, [1.5, 0, 1.5] after m1; never itself
    assert {b for a, b in pairs if a == 0} == {2}
    after_m1 = [b for a, b in pairs if a == 1]
    assert set(after_m1) == {0, 2} and abs(np.mean(np.array(after_m1) == 0) - 0.5) < 0.1
    # m2's gaps (items 0, 1) are covered by m0 (f 0.5 + 1) and m1 (0.5): 3 : 1
    after_m2 = np.array([b for a, b in pairs if a == 2])
    assert abs(np.mean(after_m2 == 0) - 0.75) < 0.05 and not (after_m2 == 2).any()


def test_attraction_weight_mixes_in_fitness_and_no_attraction_draws_like_parent_one():
    rng = np.random.default_rng(1)
    mixed = [b for a, b in (pick_parents(S, rng, alpha=1.0, attraction_weight=0.7) for _ in range(4000)) if a == 0]
    # p(b | a=0) = 0.7 [0, 0, 1] + 0.3 [.5, .125, .375]
    np.testing.assert_allclose(np.bincount(mixed, minlength=3) / len(mixed), [0.15, 0.0375, 0.8125], atol=0.03)
    plain = [b for _, b in (pick_parents(S, rng, alpha=0.0, use_attraction=False) for _ in range(4000))]
    np.testing.assert_allclose(np.bincount(plain, minlength=3) / len(plain), [3 / 5.5, 1 / 5.5, 1.5 / 5.5], atol=0.03)


def test_tournament_of_everyone_picks_the_fittest():
    rng = np.random.default_rng(2)
    assert {pick_parents(S, rng, alpha=2.0, selection="tournament", tournament_size=3)[0] for _ in range(50)} == {2}


def member(i: str, scores, number: int) -> Member:
    return Member(id=i, scores=list(map(float, scores)), mean=float(np.mean(scores)), trial=["s", number])


def weights(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3,), value)}


def test_the_archive_survives_reopening_and_cleans_what_no_state_names(tmp_path):
    archive = Archive(tmp_path, capacity=3, alpha=1.0)
    for k, row in enumerate(S):
        assert archive.offer(member(f"m{k}", row, k), weights(k))
    assert archive.offer(member("c3", [0, 0, 0, 1], 3), weights(3.0))  # replaces m1
    assert not archive.offer(member("c4", [0, 0, 0, 0], 4), weights(4.0))
    assert (tmp_path / "members" / "m1.safetensors").exists() is False
    (tmp_path / "members" / "c9.safetensors").write_bytes(b"half-written before a kill")

    again = Archive(tmp_path, capacity=3, alpha=1.0)
    assert [m.id for m in again.members] == ["m0", "c3", "m2"] and again.evicted == ["m1"]
    assert again.champion.id == "m0" and torch.equal(again.weights("champion")["w"], weights(0)["w"])
    assert torch.equal(again.weights("c3")["w"], weights(3.0)["w"])
    assert again.was_offered("s", 4) and not again.was_offered("s", 5)
    assert sorted(p.name for p in (tmp_path / "members").iterdir()) == ["c3.safetensors", "m0.safetensors",
                                                                       "m2.safetensors"]
    assert json.loads((tmp_path / "state.json").read_text())["offered"] == {"s": [0, 1, 2, 3, 4]}


def test_beating_both_parents_is_the_mean_over_the_items_above_each():
    assert beats_parents([1, 1, 0, 0], [0.25, 0.4])
    assert not beats_parents([1, 1, 0, 0], [0.25, 0.5])  # a tie is no win
    assert not beats_parents([0, 0, 0, 0], [0.0, 0.0])
    assert beats_parents([0, 0], [])  # no rule: every child may enter


def test_under_gen781s_rule_a_child_below_a_parent_enters_nowhere(tmp_path):
    # room for everyone, so only the rule keeps c4 out; c4 would be the champion by its mean (the
    # trial's value) but did not beat its parents on the items, so it is not the champion either
    archive = Archive(tmp_path, capacity=10, alpha=1.0)
    for k, row in enumerate(S):
        archive.offer(member(f"m{k}", row, k), weights(k))
    parents = [float(np.mean(S[0])), float(np.mean(S[2]))]  # 0.75, 0.375
    lower = Member(id="c4", scores=[1, 1, 0, 0.5], mean=0.99, trial=["s", 4])  # item mean 0.625
    assert not archive.offer(lower, weights(4.0), must_beat=parents)
    assert [m.id for m in archive.members] == ["m0", "m1", "m2"] and archive.champion.id == "m0"
    assert archive.was_offered("s", 4) and not (tmp_path / "members" / "c4.safetensors").exists()
    higher = member("c5", [1, 1, 1, 1], 5)
    assert archive.offer(higher, weights(5.0), must_beat=parents)
    assert archive.members[-1].id == "c5" and archive.champion.id == "c5"


def test_a_member_whose_file_vanished_is_one_line(tmp_path):
    archive = Archive(tmp_path, capacity=3, alpha=1.0)
    archive.offer(member("m0", [1, 0], 0), weights(0))
    (tmp_path / "members" / "m0.safetensors").unlink()
    with pytest.raises(ValueError, match=r"archive members \['m0'\] have no weights file"):
        Archive(tmp_path, capacity=3, alpha=1.0)


def test_the_breeding_pictures_leave_the_backend_as_it_was(tmp_path, another_backend):
    import matplotlib

    from evo_breed._plots import plot_coverage, plot_lineage
    from tests.conftest import assert_png

    nodes = {"a": {"entered": True, "parents": [], "score": 0.5, "kind": "initial"},
             "b": {"entered": True, "parents": [], "score": 0.25, "kind": "initial"},
             "c": {"entered": False, "parents": ["a", "b"], "score": 0.125, "kind": "child"},
             "d": {"entered": True, "parents": ["a", "b"], "score": 0.75, "kind": "child"}}
    plot_lineage(nodes, ["d", "a", "b"], tmp_path / "lineage.png", fitness="acc_ja")
    members = [member(i, row, n) for n, (i, row) in enumerate(zip("abd", S))]
    plot_coverage(members, tmp_path / "coverage.png", resources=["acc", "acc_ja"])
    assert matplotlib.get_backend() == another_backend
    assert_png(tmp_path / "lineage.png")
    assert_png(tmp_path / "coverage.png")
