"""Racing within CMA-ES generations (evo_core/_racing.py): decisions against hand-computed cases,
the study loop (generations, per-trial n and tokens, the best-trial rule), resume after a kill in
the middle of a generation, and the config's one-line errors."""
from __future__ import annotations

import math

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from evo_core import ParamSpec, StudyConfig, best_trial, make_sampler, open_study, typed_config
from evo_core import with_defaults
from evo_core._optuna_compat import storage_of, trial_id
from evo_core._racing import difference_bounds, race, race_step, race_trials
from evo_core._study import RetryAtItsPoint

SPACE = [ParamSpec(name=f"L{i}.w", low=0.0, high=1.0) for i in range(3)]
N_ITEMS = 60


def test_difference_bounds_by_hand():
    # d = b - a = [1, 0, 1, 0]: mean 0.5, sample sd sqrt(4 * 0.25 / 3), se = sd / 2; z se = 0.577 > the
    # floor z^2 / (n + z^2) = 0.5
    low, high = difference_bounds([0, 0, 0, 0], [1, 0, 1, 0], z=2.0)
    half = 2.0 * math.sqrt(1 / 3) / 2
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half))
    # identical so far: no spread, but not a sure tie: the floor 9 / (3 + 9)
    assert difference_bounds([1, 0, 1], [1, 0, 1], z=3.0) == pytest.approx((-0.75, 0.75))


def test_race_step_out_and_still_racing():
    # one slot (mu = 1); z = 1.645, floor 2.706 / 12.706 = 0.213. The leader (all right) is surely
    # better than the all-wrong 1 (d = 1 on every item: low 0.79 > 0) and than the alternating 2 (d:
    # mean 0.5, se 0.167, low 0.23 > 0): both are out. 3 (wrong only on the last item) vs the leader:
    # d mean 0.1, half 0.213: low < 0 (not surely worse), high 0.31 > tolerance (the leader may be
    # better): it races on for the slot.
    scores = {0: [1] * 10, 1: [0] * 10, 2: [1, 0] * 5, 3: [1] * 9 + [0]}
    assert race_step(scores, slots=1, z=1.645, tolerance=0.05) == (0, [1, 2], [])


def test_race_step_near_ties_are_in():
    # two slots, 60 items, z = 1.645: floor 2.706 / 62.706 = 0.043. 1, 2, 3 agree on every item: each
    # other's advantage is at most 0.043 < tolerance 0.05; only the leader may be better (d = [1, 0 x 59]:
    # mean 0.017, half 0.043, high 0.060 > 0.05). Fewer than 2 others can beat each, so each is surely
    # among the selected, and stops; all three, although there are 2 slots: within the tolerance their
    # order does not matter
    scores = {0: [1] + [0] * 59, 1: [0] * 60, 2: [0] * 60, 3: [0] * 60}
    assert race_step(scores, slots=2, z=1.645, tolerance=0.05) == (0, [], [1, 2, 3])


def test_race_step_leader_is_lowest_number_among_equal_means():
    leader, out, selected = race_step({7: [1, 0], 3: [0, 1], 5: [0, 0]}, slots=1, z=1.0, tolerance=0.0)
    assert leader == 3


def test_race_over_blocks_by_hand():
    # items 0..5 in blocks of 2; mu = 1; z = 1, tolerance 0; 3's scoring raises: dropped.
    # round 1 (items 0, 1; floor 1/3): 0 = [1, 1] leads; 1 = [0, 0] is surely worse (d = [1, 1]: low
    # 2/3 > 0): out, on 2 items; 2 = [1, 1] ties the leader, who may still be better (high 1/3 > 0).
    # round 2 (items 2, 3): the leader's advantage over 2 = [1, 1, 0, 1] is d = [0, 0, 1, 0]: mean
    # 0.25, se 0.25 (> floor 0.2), low 0: not surely worse, and the leader may be better: both race
    # to the end.
    truth = {0: [1, 1, 1, 1, 1, 1], 1: [0] * 6, 2: [1, 1, 0, 1, 1, 1], 3: [1] * 6}
    asked = []

    def score(key, items):
        asked.append((key, items.start, items.stop))
        if key == 3:
            raise RuntimeError("merge exploded")
        return [truth[key][i] for i in items]

    verdicts = race([0, 1, 2, 3], score=score, n_items=6, first_block=2, block=2, mu=1, z=1.0, tolerance=0.0)
    assert {k: (v.stop, v.scores) for k, v in verdicts.items()} == {
        0: ("full", [1] * 6), 1: ("out", [0, 0]), 2: ("full", truth[2]), 3: ("error: RuntimeError: merge exploded", [])}
    assert asked == [(0, 0, 2), (1, 0, 2), (2, 0, 2), (3, 0, 2), (0, 2, 4), (2, 2, 4), (0, 4, 6), (2, 4, 6)]


def test_race_runs_everyone_to_the_end_when_nothing_is_decided():
    # two candidates that differ on every other item, one slot: never sure, so both score every item
    truth = {0: [1, 0] * 3, 1: [0, 1] * 3}
    verdicts = race([0, 1], score=lambda k, items: [truth[k][i] for i in items], n_items=6, first_block=2,
                    block=3, mu=1, z=1.645, tolerance=0.05)
    assert {k: (v.stop, len(v.scores)) for k, v in verdicts.items()} == {0: ("full", 6), 1: ("full", 6)}


# -- the study loop ------------------------------------------------------------------------------

def quality(params):
    """A smooth fitness with its optimum at 0.3 everywhere, in [0, 1]."""
    return max(0.0, 1.0 - 3 * sum((v - 0.3) ** 2 for v in params.values()))


def evaluate(params, number, items):
    # item i is right when its fixed threshold is below the point's quality: every candidate is
    # judged on the same items (as a real objective's), and a better point is right on more of them
    q = quality(params)
    scores = [float((i * 0.6180339) % 1 < q) for i in items]
    return {"fit": sum(scores) / len(scores), "n": len(scores), "item_scores": {"fit": scores},
            "generated_tokens": 3 * len(scores), "merge_seconds": 0.01}


def study_at(tmp_path, name="s"):
    return open_study(name=name, storage_url=f"sqlite:///{tmp_path / 'study.db'}",
                      sampler=make_sampler("cmaes", space=SPACE, seed=0, sigma0=0.3, popsize=6),
                      first_trial={p.name: 0.5 for p in SPACE})


def run(study, n_trials, evaluate=evaluate, on_trial=()):
    race_trials(study, space=SPACE, evaluate=evaluate, fitness=["fit"], n_trials=n_trials, popsize=6, first_block=10,
                block=10, z=1.645, tolerance=0.05, n_items=N_ITEMS, on_trial=on_trial)


def test_race_trials_records_items_tokens_and_generations(tmp_path):
    study = study_at(tmp_path)
    seen = []
    run(study, 25, on_trial=[lambda s, t: seen.append(t.number)])
    trials = study.trials
    assert len(trials) == 25 and all(t.state == TrialState.COMPLETE for t in trials) and seen == list(range(25))
    # the start point alone (CMA-ES samples only after a complete trial), then generations of 6
    assert trials[0].params == {p.name: 0.5 for p in SPACE} and trials[0].user_attrs["n"] == N_ITEMS
    generations = [t.system_attrs.get("cma:generation") for t in trials[1:]]
    assert generations == [0] * 6 + [1] * 6 + [2] * 6 + [3] * 6
    assert len({tuple(t.params.values()) for t in trials}) == 25, "a generation's asks must be distinct samples"
    for t in trials:
        n = t.user_attrs["n"]
        assert n in (10, 20, 30, 40, 50, 60) and t.user_attrs["partial"] == (n < N_ITEMS)
        assert t.user_attrs["race"] == ("full" if n == N_ITEMS else t.user_attrs["race"])
        # summed over the trial's blocks: tokens, seconds; the value is the mean over its n items
        assert t.user_attrs["generated_tokens"] == 3 * n
        assert t.user_attrs["merge_seconds"] == pytest.approx(0.01 * n / 10)
        assert len(t.user_attrs["item_scores"]["fit"]) == n and t.value == pytest.approx(sum(
            t.user_attrs["item_scores"]["fit"]) / n)
    # every generation completes its leader; racing saved work
    for g in range(4):
        assert any(not t.user_attrs["partial"] for t in trials if t.system_attrs.get("cma:generation") == g)
    assert sum(t.user_attrs["n"] for t in trials) < 0.8 * 25 * N_ITEMS
    assert not best_trial(study).user_attrs["partial"]


def test_best_trial_is_never_a_partial_estimate():
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={"partial": True}))
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"partial": False}))
    study.add_trial(optuna.trial.create_trial(value=0.4))  # a study without racing: no attribute
    assert best_trial(study).number == 1
    only_partial = optuna.create_study(direction="maximize")
    only_partial.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={"partial": True}))
    with pytest.raises(RuntimeError, match="no complete trial scored on every item"):
        best_trial(only_partial)


def test_a_generation_killed_mid_race_is_raced_again_at_its_points(tmp_path):
    study = study_at(tmp_path)
    run(study, 7)  # the start point and generation 0
    calls = []

    def dies_in_round_two(params, number, items):
        calls.append(number)
        if items.start >= 10:
            raise KeyboardInterrupt  # the process is killed: no trial is told
        return evaluate(params, number, items)

    with pytest.raises(KeyboardInterrupt):
        run(study, 13, evaluate=dies_in_round_two)
    running = study.get_trials(states=(TrialState.RUNNING,))
    assert len(running) == 6 and {t.system_attrs["cma:generation"] for t in running} == {1}
    # what the heartbeat does 30 s later (called here directly): FAIL, and retry at the point
    for t in running:
        storage_of(study).set_trial_state_values(trial_id(t), TrialState.FAIL)
        RetryAtItsPoint()(study, study.trials[t.number])
    study = study_at(tmp_path)  # the restarted run's own (the heartbeat's attributes bypass this one's cache)
    run(study, 19)  # the 6 killed ones do not count toward n_trials: their 6 retries, then generation 2
    retries = [t for t in study.trials if "retry_of" in t.user_attrs]
    assert len(retries) == 6 and all(t.state == TrialState.COMPLETE for t in retries)
    assert {tuple(t.params.values()) for t in retries} == {tuple(t.params.values()) for t in running}
    # the retries are generation 1 again (as the killed trials were), so CMA-ES went on to 2
    assert [t.number for t in retries] == list(range(13, 19))
    assert [t.system_attrs["cma:generation"] for t in retries] == [1] * 6
    assert len(study.trials) == 25 and [t.system_attrs["cma:generation"] for t in study.trials[19:]] == [2] * 6


# -- config --------------------------------------------------------------------------------------

def config(**overrides):
    base = {"study_name": "s", "run_dir": "/tmp/x", "objective": {"options": {"prompt_template": "Q: {question}"}},
            "evaluation": {"kind": "racing"}}
    return OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(overrides))


@pytest.mark.parametrize("overrides, message", [
    ({"evaluation": {"kind": "halving"}}, "evaluation.kind must be full, racing or multi_fidelity; got 'halving'"),
    ({"evaluation": {"first_block": 1}}, "evaluation.first_block must be >= 2"),
    ({"evaluation": {"confidence": 1.0}}, r"evaluation.confidence must be in \(0, 1\); got 1.0"),
    ({"evaluation": {"tolerance": -0.1}}, r"evaluation.tolerance must be in \[0, 1\)"),
    ({"sampler": {"kind": "tpe"}}, "scores whole CMA-ES generations; sampler.kind is 'tpe'"),
    ({"helper": True}, "evaluation.kind=racing runs one worker"),
    ({"evaluation": {"blocks": 3}}, "bad config: .*blocks"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        typed_config(config(**overrides), StudyConfig)


def test_config_default_is_full_evaluation():
    assert StudyConfig().evaluation.kind == "full"
    assert typed_config(config(evaluation={"confidence": 0.9}), StudyConfig).evaluation.z == pytest.approx(1.6449,
                                                                                                        abs=1e-4)


def test_an_objective_must_take_subsets_to_race():
    class Whole:
        def score_items(self, model, split):
            return {}

    class Subsets(Whole):
        def n_items(self, split):
            return 3

        def score_items(self, model, split, items=None):
            return {}

    # the contract's default n_items is None (no subsets); a count promises score_items(items=)
    assert with_defaults(Whole()).n_items("search") is None and with_defaults(Subsets()).n_items("search") == 3


def test_race_stops_the_surely_selected_and_the_leader_runs_on_alone():
    # two slots, blocks of 60: after the first block 1, 2, 3 are all in (as in the race_step case
    # above): the slots are used up, and only the leader is scored on items 60..119
    truth = {0: [1] + [0] * 119, 1: [0] * 120, 2: [0] * 120, 3: [0] * 120}
    verdicts = race([0, 1, 2, 3], score=lambda k, items: [truth[k][i] for i in items], n_items=120,
                    first_block=60, block=60, mu=2, z=1.645, tolerance=0.05)
    assert {k: (v.stop, len(v.scores)) for k, v in verdicts.items()} == {
        0: ("full", 120), 1: ("in", 60), 2: ("in", 60), 3: ("in", 60)}
