"""Multi-fidelity evaluation within CMA-ES generations (evo_core/_fidelity.py): the study loop
(who is screened, who is evaluated in full, what each trial records, the best-trial rule), the
values screened trials are told, the fallback to full evaluation when the fidelities disagree,
resume after a kill in the middle of a generation, and the config's one-line errors."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from evo_core import StudyConfig, best_trial, typed_config
from evo_core._fidelity import boundary_ties, estimates, item_order, linear_fit, screen_trials, spearman
from evo_core._optuna_compat import storage_of, trial_id
from evo_core._study import RetryAtItsPoint
from tests.evo_core.test_racing import SPACE, config, evaluate, quality, study_at

N_ITEMS = 60


def likelihood(params, number, items):
    # a cheap fidelity that ranks like the fitness: a monotone map of the point's quality
    return {"cheap_value": -5.0 + 4.0 * quality(params), "cheap_tokens": 7 * len(items)}


def run(study, n_trials, *, screen=likelihood, evaluate=evaluate, cheap="likelihood", promote=2, min_correlation=0.5,
        min_pairs=10, subset="first", on_trial=()):
    screen_trials(study, space=SPACE, evaluate=evaluate, screen=screen, fitness=["fit"], n_trials=n_trials, popsize=6,
                  promote=promote, cheap=cheap, cheap_items=10, n_items=N_ITEMS, min_correlation=min_correlation,
                  min_pairs=min_pairs, subset=subset, on_trial=on_trial)


def logging_evaluate(scored):
    """`evaluate`, noting (trial number, items) of each call in `scored`."""
    def logged(params, number, items):
        scored.append((number, list(items)))
        return evaluate(params, number, items)
    return logged


def generation(study, g):
    return [t for t in study.trials if t.system_attrs.get("cma:generation") == g]


def test_screening_promotes_the_best_by_the_cheap_fidelity(tmp_path):
    study = study_at(tmp_path)
    seen = []
    run(study, 19, on_trial=[lambda s, t: seen.append(t.number)])
    trials = study.trials
    assert len(trials) == 19 and all(t.state == TrialState.COMPLETE for t in trials) and seen == list(range(19))
    # the start point alone, in full (and screened: it has both fidelities)
    assert trials[0].user_attrs["fidelities"] == ["likelihood", "full"] and not trials[0].user_attrs["partial"]
    for g in range(3):
        members = generation(study, g)
        assert len(members) == 6
        full = [t for t in members if "full" in t.user_attrs["fidelities"]]
        screened = [t for t in members if t not in full]
        # the 2 best by the cheap value, and only they, ran every item
        by_cheap = sorted(members, key=lambda t: (-t.user_attrs["cheap_value"], t.number))
        assert {t.number for t in full} == {t.number for t in by_cheap[:2]}
        for t in full:
            assert t.user_attrs["n"] == N_ITEMS and not t.user_attrs["partial"]
            assert t.value == pytest.approx(sum(t.user_attrs["item_scores"]["fit"]) / N_ITEMS)
            assert t.user_attrs["generated_tokens"] == 3 * N_ITEMS == t.user_attrs["full_generated_tokens"]
            assert t.user_attrs["full_seconds"] >= 0 and t.user_attrs["cheap_tokens"] == 70
        for t in screened:  # no generation: told an estimate below every fully evaluated one, in cheap order
            assert t.user_attrs["fidelities"] == ["likelihood"] and t.user_attrs["partial"]
            assert t.user_attrs["n"] == 0 and "generated_tokens" not in t.user_attrs
            assert t.value < min(f.value for f in full)
        assert [t.number for t in sorted(screened, key=lambda t: -t.value)] == [
            t.number for t in by_cheap[2:]]
        assert [t.user_attrs["screen_rank"] for t in by_cheap] == list(range(6))
    assert not best_trial(study).user_attrs["partial"]
    # a perfect monotone cheap fidelity: the logged rank correlation is 1
    assert study.user_attrs["fidelity_correlation"] == pytest.approx(1.0)
    assert trials[-1].user_attrs["fidelity_correlation"] == pytest.approx(1.0)
    assert "fidelity_fallback" not in study.user_attrs


def test_a_cheap_fidelity_that_disagrees_falls_back_to_full_evaluation(tmp_path, capsys):
    study = study_at(tmp_path)

    def contrary(params, number, items):  # ranks the points backwards
        return {"cheap_value": -quality(params), "cheap_tokens": 1}

    run(study, 25, screen=contrary, promote=2, min_pairs=4)
    out = capsys.readouterr().out
    assert out.count("multi_fidelity: likelihood vs full rank correlation") == 1
    fallback = study.user_attrs["fidelity_fallback"]
    assert fallback["correlation"] < 0.5 and fallback["pairs"] >= 4
    later = [t for t in study.trials if t.number > fallback["after_trial"]]
    assert later and all(t.user_attrs["fidelities"] == ["full"] and not t.user_attrs["partial"] for t in later)
    # a resumed run keeps the decision
    run(study_at(tmp_path), 31, screen=contrary, min_pairs=4)
    assert all(t.user_attrs["fidelities"] == ["full"] for t in study_at(tmp_path).trials[25:])


def test_subset_screening_reuses_its_items_in_the_full_evaluation(tmp_path):
    study = study_at(tmp_path)
    scored = []
    logged = logging_evaluate(scored)
    run(study, 7, evaluate=logged, cheap="subset", screen=None)
    gen = generation(study, 0)
    full = [t for t in gen if "full" in t.user_attrs["fidelities"]]
    assert len(full) == 2 and all(t.user_attrs["fidelities"] == ["subset", "full"] for t in full)
    for t in full:  # the first 10 items once, then the other 50: every item scored once
        assert [items for n, items in scored if n == t.number] == [list(range(10)), list(range(10, N_ITEMS))]
        assert len(t.user_attrs["item_scores"]["fit"]) == N_ITEMS
    for t in gen:
        if t not in full:  # its value is its subset mean, capped below the fully evaluated
            subset_mean = sum(t.user_attrs["item_scores"]["fit"]) / 10
            assert t.user_attrs["n"] == 10 and t.value <= subset_mean and t.value < min(f.value for f in full)


def informative_items(study, *, k, n_items, fitness, window):
    return sorted(item_order(study, n_items=n_items, fitness=fitness, window=window)[:k])


def test_informative_items_by_hand(tmp_path):
    study = study_at(tmp_path)

    def told(scores, **attrs):
        trial = study.ask()
        for key, value in {"item_scores": {"fit": scores}, **attrs}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, sum(scores) / len(scores))

    # one trial: no item's spread is known (each seen once), so the first items
    told([0, 1, 0, 0, 1, 0])
    assert informative_items(study, k=2, n_items=6, fitness="fit", window=10) == [0, 1]
    # a second full trial: items 2 and 4 were scored differently (each a squared spread of 0.5), the
    # rest alike; pooled spread 1 / 12, shrunk: (0.5 + 2/12) / 4 against (2/12) / 4
    told([0, 1, 1, 0, 0, 0])
    assert informative_items(study, k=2, n_items=6, fitness="fit", window=10) == [2, 4]
    # a screened trial on items 2 and 4 (its scores in that order): both still the most informative
    told([1, 1], partial=True, cheap_items=[2, 4])
    assert informative_items(study, k=2, n_items=6, fitness="fit", window=10) == [2, 4]
    # the window: only the last trial counts, each item seen once at most: the first items again
    assert informative_items(study, k=2, n_items=6, fitness="fit", window=1) == [0, 1]


def test_graded_items_that_every_trial_scores_alike_come_last(tmp_path):
    # a graded score (ROUGE-L): item 0 scored 0.5 by every trial tells nothing, item 1 (0.2 vs 0.8) does
    study = study_at(tmp_path)
    for scores in ([0.5, 0.2, 0.9], [0.5, 0.8, 0.9]):
        trial = study.ask()
        trial.set_user_attr("item_scores", {"fit": scores})
        study.tell(trial, 0.5)
    assert item_order(study, n_items=3, fitness="fit", window=10) == [1, 0, 2]


def test_informative_screening_items_are_shared_recorded_and_in_index_order(tmp_path):
    study = study_at(tmp_path)
    scored = []
    logged = logging_evaluate(scored)
    run(study, 13, evaluate=logged, cheap="subset", screen=None, promote=1, subset="informative")
    for g in (0, 1):
        members = generation(study, g)
        subsets = {tuple(t.user_attrs["cheap_items"]) for t in members}
        assert len(subsets) == 1 and len(next(iter(subsets))) == 10  # one subset per generation
        items = list(next(iter(subsets)))
        assert items == sorted(items)
        for t in members:
            if t.user_attrs["partial"]:  # its scores are those of its subset, in that order
                assert t.user_attrs["item_scores"]["fit"] == evaluate(t.params, t.number, items)["item_scores"]["fit"]
            else:  # screened, then the rest: every item once, its scores in index order
                calls = [got for n, got in scored if n == t.number]
                assert calls[0] == items and sorted(calls[0] + calls[1]) == list(range(N_ITEMS))
                assert t.user_attrs["item_scores"]["fit"] == evaluate(
                    t.params, t.number, range(N_ITEMS))["item_scores"]["fit"]
    # generation 0 knows the start point only (each item seen once, no spread): the first 10 items;
    # generation 1 screens items the trials before it scored differently
    assert generation(study, 0)[0].user_attrs["cheap_items"] == list(range(10))
    seen = {i: set() for i in range(N_ITEMS)}
    for t in study.trials[:7]:
        ids = t.user_attrs["cheap_items"] if t.user_attrs["partial"] else range(N_ITEMS)
        for i, x in zip(ids, t.user_attrs["item_scores"]["fit"]):
            seen[i].add(x)
    differing = {i for i, xs in seen.items() if len(xs) > 1}
    assert len(differing) >= 10 and set(generation(study, 1)[0].user_attrs["cheap_items"]) <= differing


def test_boundary_ties_by_hand():
    assert boundary_ties({1: 0.5, 2: 0.3, 3: 0.3}, 1) == []  # 1 is promoted, whatever the rest
    assert boundary_ties({1: 0.5, 2: 0.3, 3: 0.3}, 2) == [2, 3]  # 2 or 3? only their trial numbers would say
    assert boundary_ties({4: 0.0, 1: 0.0, 2: 0.0}, 1) == [1, 2, 4]
    assert boundary_ties({1: 0.2, 2: 0.2}, 2) == []  # both promoted


def test_tied_screens_take_more_items_until_the_promoted_are_decided(tmp_path):
    # a plateau: every point is wrong on all items but item 37, which candidates of quality above 0.5
    # get right: the first 10 items tie every candidate at 0, and they are screened further
    study = study_at(tmp_path)

    def plateau(params, number, items):
        scores = [float(i == 37 and quality(params) > 0.5) for i in items]
        return {"fit": sum(scores) / len(scores), "n": len(scores), "item_scores": {"fit": scores},
                "generated_tokens": len(scores), "forward_tokens": 10 * len(scores)}

    run(study, 7, evaluate=plateau, cheap="subset", screen=None, promote=1, subset="first")
    members = generation(study, 0)
    reached = [len(t.user_attrs["cheap_items"]) for t in members]
    right = [t for t in members if quality(t.params) > 0.5]
    if right:  # the tie with the wrong ones breaks at item 37 (blocks of 10: 40 items); several right
        # ones stay tied on every later item (60), and the lowest number among them is promoted
        for t in members:
            assert len(t.user_attrs["cheap_items"]) == (N_ITEMS if t in right and len(right) > 1 else 40)
        promoted = [t for t in members if not t.user_attrs["partial"]]
        assert [t.number for t in promoted] == [min(t.number for t in right)]
    else:  # nobody scores: all screened on every item, and the lowest number is promoted
        assert reached == [N_ITEMS] * 6
    for t in members:  # cheap_items, item_scores and cheap_tokens agree
        assert len(t.user_attrs["item_scores"]["fit"]) == len(t.user_attrs["cheap_items"]) or not t.user_attrs[
            "partial"]
        assert t.user_attrs["cheap_tokens"] == 10 * len(t.user_attrs["cheap_items"])


def test_a_generation_killed_mid_screening_is_screened_again_at_its_points(tmp_path):
    study = study_at(tmp_path)
    run(study, 7)
    calls = []

    def dies_in_full_evaluation(params, number, items):
        calls.append(number)
        raise KeyboardInterrupt  # the process is killed after screening: no trial is told

    with pytest.raises(KeyboardInterrupt):
        run(study, 13, evaluate=dies_in_full_evaluation)
    running = study.get_trials(states=(TrialState.RUNNING,))
    assert len(running) == 6 and {t.system_attrs["cma:generation"] for t in running} == {1}
    for t in running:  # what the heartbeat does 30 s later
        storage_of(study).set_trial_state_values(trial_id(t), TrialState.FAIL)
        RetryAtItsPoint()(study, study.trials[t.number])
    study = study_at(tmp_path)
    run(study, 19)
    retries = [t for t in study.trials if "retry_of" in t.user_attrs]
    assert len(retries) == 6 and all(t.state == TrialState.COMPLETE for t in retries)
    assert {tuple(t.params.values()) for t in retries} == {tuple(t.params.values()) for t in running}
    assert [t.system_attrs["cma:generation"] for t in retries] == [1] * 6
    assert [t.system_attrs["cma:generation"] for t in study.trials[19:]] == [2] * 6


def test_a_failing_candidate_fails_its_trial_only(tmp_path):
    study = study_at(tmp_path)

    def broken_screen(params, number, items):
        if number == 3:
            raise RuntimeError("out of memory")
        return likelihood(params, number, items)

    run(study, 7, screen=broken_screen)
    assert study.trials[3].state == TrialState.FAIL and "out of memory" in study.trials[3].user_attrs["fail_reason"]
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 6


def test_spearman_and_estimates_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties take average ranks: x ranks (0, 1.5, 1.5, 3) against (0, 1, 2, 3)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0
    assert linear_fit([(0, 1), (1, 3), (2, 5)]) == pytest.approx((1.0, 2.0))
    assert linear_fit([(0, 5), (1, 3), (2, 1)]) is None and linear_fit([(0, 1), (1, 2)]) is None
    # fit 1 + 2 x: 0 -> 1.0, -1 -> -1.0, both capped below the floor 0.5, in cheap order
    told = estimates({7: 0.0, 8: -1.0, 9: 0.0}, 0.5, (1.0, 2.0))
    assert told == pytest.approx({7: 0.5 - 1e-6, 9: 0.5 - 2e-6, 8: -1.0 - 3e-6})


@pytest.mark.parametrize("overrides, message", [
    ({"evaluation": {"kind": "multi_fidelity", "cheap": "guess"}}, "evaluation.cheap must be likelihood or subset"),
    ({"evaluation": {"kind": "multi_fidelity", "cheap_subset": "random"}},
     "evaluation.cheap_subset must be informative or first; got 'random'"),
    ({"evaluation": {"kind": "multi_fidelity", "promote": 0}}, "evaluation.cheap_items and evaluation.promote must"),
    ({"evaluation": {"kind": "multi_fidelity", "min_correlation": 2}}, r"evaluation.min_correlation must be in"),
    ({"evaluation": {"kind": "multi_fidelity"}, "helper": True}, "evaluation.kind=multi_fidelity runs one worker"),
    ({"evaluation": {"kind": "multi_fidelity"}, "sampler": {"kind": "tpe"}}, "sampler.kind is 'tpe'"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        typed_config(config(**overrides), StudyConfig)
