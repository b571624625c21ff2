"""Multi-fidelity evaluation within each CMA-ES generation (`evaluation.kind=multi_fidelity`).

    screen_trials(study, space=..., evaluate=..., screen=..., fitness=["acc_ja"], n_trials=120,
                  popsize=14, promote=1, cheap="subset", cheap_items=20, n_items=150,
                  min_correlation=0.0, min_pairs=8, subset="first")   # conf/evaluation/multi_fidelity.yaml

Beside racing (_racing.py), on the same generation loop (generation_trials: whole generations
asked, heartbeats, a killed generation retried at its points in its CMA-ES generation). Per
generation:
1. a cheap fidelity screens every candidate on `cheap_items` items of the search split, the same
   items for the whole generation (a paired comparison): `subset="first"`, the first ones;
   `subset="informative"`, the ones that best tell candidates near this generation apart
   (item_order: those recent trials scored differently). A generated subset's 0/1 scores
   tie: while the last promoted ties with the first left out, the tied are screened on the next
   `cheap_items` items (in the same order);
   - "likelihood": the mean log-probability per token of the reference answers, teacher-forced,
     no generation (the objective's likelihood_items);
   - "subset": the fitness of outputs generated for those items (racing's first block);
2. the `promote` candidates best by the cheap value (lowest trial number on ties) are evaluated
   in full (every item; "subset": the other items, joined to the screened ones): only
   they can be a study's best (best_trial skips `partial` trials);
3. the others are told an estimate, strictly below the generation's lowest full value and in the
   order of their cheap values: a linear fit of full on cheap value over the study's trials that
   have both (once 3 do and the slope is positive; "subset": its own value), capped there. CMA-ES ranks a generation only,
   so the selected (fully evaluated first, then the best screened) and their order are what count.
The start point (a generation of one) is evaluated in full (and screened, for the correlation).
After each generation the study's rank correlation (Spearman) between cheap and full values over
the trials that have both is logged (study user attr `fidelity_correlation`, and on each trial of
the generation: MLflow). Once at least `min_pairs` trials have both and it is below
`min_correlation`, the study says so in one line and evaluates every later candidate in full
(user attr `fidelity_fallback`, kept across a resume).
Each trial records `fidelities` (the ones that ran, cheapest first), `cheap_items` (the screened
items' indices; `item_scores` are in their order, and in index order once evaluated in full), `cheap_value`,
`cheap_seconds`, `cheap_tokens` (positions the model ran for the cheap fidelity), `full_seconds`,
`full_generated_tokens` and `screen_rank`, besides the usual metrics (n, partial, item_scores of
what was generated, tokens and seconds summed over what ran).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ._racing import combine, generation_trials
from ._study import ParamSpec, fail_reason, tell_metrics

CHEAP_FIDELITIES = ("likelihood", "subset")
SUBSETS = ("first", "informative")
ESTIMATE_STEP = 1e-6  # screened estimates step down by this in cheap order (no ties among them)
PRIOR_WEIGHT = 2.0  # item_order: an item's spread is shrunk toward the pooled one by this many observations


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks on ties); 0 when either side is constant."""
    rx, ry = _ranks(x), _ranks(y)
    n = len(rx)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return 0.0 if vx == 0 or vy == 0 else cov / (vx * vy) ** 0.5


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def linear_fit(pairs: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """(intercept, slope) of y on x by least squares, or None (fewer than 3 pairs, no spread, slope <= 0)."""
    if len(pairs) < 3:
        return None
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    slope = sum((x - mx) * (y - my) for x, y in pairs) / sxx if sxx > 0 else 0.0
    return (my - slope * mx, slope) if slope > 0 else None


def estimates(cheap: dict[int, float], floor: float, fit: tuple[float, float] | None) -> dict[int, float]:
    """The values told to screened candidates (module docstring, 3.): fit[0] + fit[1] x cheap value
    (no fit: `floor`), capped below `floor`, stepping down in cheap order."""
    order = sorted(cheap, key=lambda number: (-cheap[number], number))
    return {number: min(floor, fit[0] + fit[1] * cheap[number] if fit else floor) - ESTIMATE_STEP * (rank + 1)
            for rank, number in enumerate(order)}


def item_order(study: optuna.Study, *, n_items: int, fitness: str, window: int) -> list[int]:
    """The search items, those that best tell apart candidates near the study's latest ones first.

    Only differences between candidates rank a generation: an item every candidate gets right, or
    every one wrong (or, for a graded score, one every candidate scores alike), adds the same to
    all. From the item scores of the study's last `window` complete trials (screened or full), each
    item's spread across them, its sum of squared deviations from its own mean, is shrunk toward the
    pooled spread v by PRIOR_WEIGHT observations, (ss_i + 2 v) / (n_i + 2): items the trials scored
    differently first (for 0/1 scores, those some got right and others wrong), then the less observed
    (they stay near v), then those every trial scored alike, the lowest index on ties. Deterministic
    in the stored trials, so a retried generation screens the same items."""
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    seen: list[list[float]] = [[] for _ in range(n_items)]
    for t in complete[-window:]:
        scores = t.user_attrs.get("item_scores", {}).get(fitness, [])
        # a screened trial scored its cheap_items; any other, the first len(scores) items
        ids = t.user_attrs["cheap_items"] if t.user_attrs.get("partial") and "cheap_items" in t.user_attrs else range(
            len(scores))
        for item, score in zip(ids, scores):
            seen[item].append(score)
    means = [sum(xs) / len(xs) if xs else 0.0 for xs in seen]
    spread = [sum((x - mean) ** 2 for x in xs) for xs, mean in zip(seen, means)]
    observed = sum(len(xs) for xs in seen)
    pooled = sum(spread) / observed if observed else 0.0
    shrunk = [(spread[i] + PRIOR_WEIGHT * pooled) / (len(seen[i]) + PRIOR_WEIGHT) for i in range(n_items)]
    return sorted(range(n_items), key=lambda i: (-shrunk[i], i))


def boundary_ties(values: dict[int, float], promote: int) -> list[int]:
    """The candidates (by number) sharing the value of the last of the `promote` best when the first
    left out has it too; [] when the promoted are decided."""
    ranked = sorted(values, key=lambda number: (-values[number], number))
    if len(ranked) <= promote or values[ranked[promote - 1]] != values[ranked[promote]]:
        return []
    return [number for number in ranked if values[number] == values[ranked[promote - 1]]]


def in_item_order(metrics: dict[str, Any], items: Sequence[int]) -> dict[str, Any]:
    """`metrics` with its per-item scores (scored in the order of `items`) put in index order."""
    order = sorted(range(len(items)), key=lambda j: items[j])
    return {**metrics, "item_scores": {metric: [scores[j] for j in order]
                                       for metric, scores in metrics["item_scores"].items()}}


def both_fidelities(study: optuna.Study) -> list[tuple[float, float]]:
    """(cheap value, full value) of the study's complete trials that ran both."""
    return [(t.user_attrs["cheap_value"], t.values[0])
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "cheap_value" in t.user_attrs and not t.user_attrs.get("partial")]


def screen_trials(study: optuna.Study, *, space: Sequence[ParamSpec],
                  evaluate: Callable[[dict[str, float], int, Sequence[int]], dict[str, Any]],
                  screen: Callable[[dict[str, float], int, Sequence[int]], dict[str, Any]], fitness: Sequence[str],
                  n_trials: int, popsize: int, promote: int, cheap: str, cheap_items: int, n_items: int,
                  min_correlation: float, min_pairs: int, subset: str, timeout: float | None = None,
                  on_trial: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = ()) -> None:
    """race_trials' multi-fidelity sibling (module docstring). `evaluate(params, number, items)`:
    the generated metrics of one candidate on those items; `screen(params, number, items)`: its
    likelihood metrics ({"cheap_value": mean, "cheap_tokens": ...}); with cheap="subset" the
    screen is `evaluate` on the first items."""
    assert len(fitness) == 1, "multi-fidelity evaluation ranks one objective"
    assert cheap in CHEAP_FIDELITIES, cheap
    assert subset in SUBSETS, subset
    cheap_items = min(cheap_items, n_items)

    def run_generation(trials: list[optuna.Trial], params: dict[int, dict[str, float]]) -> None:
        fallback = bool(study.user_attrs.get("fidelity_fallback"))
        records: dict[int, dict[str, Any]] = {t.number: {"fidelities": []} for t in trials}
        blocks: dict[int, list[dict[str, Any]]] = {t.number: [] for t in trials}
        failed: dict[int, str] = {}

        def run(number: int, fidelity: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
            started = time.perf_counter()
            try:
                metrics = work()
            except Exception as err:  # noqa: BLE001  (one candidate's failure is its trial's)
                failed[number] = fail_reason(err)
                return None
            if fidelity not in records[number]["fidelities"]:
                records[number]["fidelities"].append(fidelity)
            key = f"{'full' if fidelity == 'full' else 'cheap'}_seconds"
            records[number][key] = records[number].get(key, 0.0) + time.perf_counter() - started
            return metrics

        # the items in the order screening takes them: one order for the whole generation, so its
        # candidates are compared on the same items
        order = (item_order(study, n_items=n_items, fitness=fitness[0], window=2 * popsize)
                 if subset == "informative" else list(range(n_items)))
        screened: dict[int, list[int]] = {}  # each candidate's screened items, in the order scored
        cheap_values: dict[int, float] = {}

        def screen_on(number: int, items: list[int]) -> None:
            if cheap == "subset":
                metrics = run(number, "subset", lambda: evaluate(params[number], number, items))
                if metrics is None:
                    cheap_values.pop(number, None)
                    return
                blocks[number].append(metrics)
                screened[number] = screened.get(number, []) + items
                cheap_values[number] = float(combine(blocks[number])[fitness[0]])
                records[number]["cheap_tokens"] = records[number].get("cheap_tokens", 0) + metrics.get(
                    "forward_tokens", 0)
            else:
                metrics = run(number, "likelihood", lambda: screen(params[number], number, items))
                if metrics is None:
                    return
                screened[number] = items
                cheap_values[number] = float(metrics["cheap_value"])
                records[number]["cheap_tokens"] = metrics.get("cheap_tokens", 0)

        if not fallback:
            first = sorted(order[:cheap_items])
            for t in trials:
                screen_on(t.number, first)
            # a generated subset's values tie (0/1 items: on the zoo's plateau every candidate scores 0
            # on the first items): while the last promoted ties with the first left out, the tied are
            # screened on the next items, so the promoted are not picked by trial number
            taken = cheap_items
            while cheap == "subset" and len(trials) > 1 and taken < n_items and (tied := boundary_ties(
                    cheap_values, promote)):
                more = sorted(order[taken:taken + cheap_items])
                taken += len(more)
                for number in tied:
                    screen_on(number, more)
            for number in cheap_values:
                records[number]["cheap_value"] = cheap_values[number]
                records[number]["cheap_items"] = sorted(screened[number])
                if cheap == "subset":  # its item scores in index order, as cheap_items lists them
                    blocks[number] = [in_item_order(combine(blocks[number]), screened[number])]
        ranked = sorted(cheap_values, key=lambda number: (-cheap_values[number], number))
        for rank, number in enumerate(ranked):
            records[number]["screen_rank"] = rank
        promoted = ([t.number for t in trials if t.number not in failed] if fallback or len(trials) == 1
                    else ranked[:promote])
        full_values: dict[int, float] = {}
        for number in promoted:
            done = sorted(screened.get(number, [])) if cheap == "subset" else []
            done_set = set(done)
            rest = [i for i in range(n_items) if i not in done_set]
            if rest:
                metrics = run(number, "full", lambda: evaluate(params[number], number, rest))
                if metrics is None:
                    continue
                blocks[number] = [in_item_order(combine([*blocks[number], metrics]), [*done, *rest])]
                records[number]["full_generated_tokens"] = metrics.get("generated_tokens", 0)
            else:  # screening reached every item
                records[number]["fidelities"].append("full")
                records[number]["full_generated_tokens"] = 0
            full_values[number] = float(combine(blocks[number])[fitness[0]])

        pairs = both_fidelities(study) + [(cheap_values[n], v) for n, v in full_values.items() if n in cheap_values]
        correlation = spearman([c for c, _ in pairs], [f for _, f in pairs]) if len(pairs) >= 2 else None
        if correlation is not None:
            study.set_user_attr("fidelity_correlation", correlation)
            study.set_user_attr("fidelity_pairs", len(pairs))
            for record in records.values():
                record["fidelity_correlation"] = correlation
        if (not fallback and correlation is not None and len(pairs) >= min_pairs
                and correlation < min_correlation):
            print(f"multi_fidelity: {cheap} vs full rank correlation {correlation:.2f} on {len(pairs)} trials is below "
                  f"{min_correlation}: study {study.study_name!r} evaluates every later candidate in full", flush=True)
            study.set_user_attr("fidelity_fallback", {"correlation": correlation, "pairs": len(pairs),
                                                      "after_trial": max(t.number for t in trials)})
        screened = {n: v for n, v in cheap_values.items() if n not in promoted and n not in failed}
        floor = min(full_values.values(), default=max(screened.values(), default=0.0) if cheap == "subset" else 0.0)
        # a generated subset is on the fitness's own scale; a likelihood is mapped onto it
        told = dict(full_values) | estimates(screened, floor, (0.0, 1.0) if cheap == "subset" else linear_fit(pairs))
        for t in trials:
            tell(study, t, blocks[t.number], records[t.number], told.get(t.number), failed.get(t.number), fitness,
                 n_items)

    generation_trials(study, space=space, n_trials=n_trials, popsize=popsize, timeout=timeout, on_trial=on_trial,
                      label="multi_fidelity", run_generation=run_generation)


def tell(study: optuna.Study, trial: optuna.Trial, blocks: list[dict[str, Any]], record: dict[str, Any],
         value: float | None, failure: str | None, fitness: Sequence[str], n_items: int) -> None:
    """Record one trial (what ran, its costs and values) and tell the study its value."""
    if value is None:
        trial.set_user_attr("fail_reason", failure or "no fidelity could score it")
        study.tell(trial, state=TrialState.FAIL)
        return
    for key, item in record.items():
        trial.set_user_attr(key, item if isinstance(item, list) else float(item))
    metrics = combine(blocks) if blocks else {"n": 0}
    full = "full" in record["fidelities"]
    trial.set_user_attr("partial", not full or metrics["n"] < n_items)
    metrics = {**metrics, fitness[0]: value}  # a screened trial's value is its estimate (module docstring, 3.)
    tell_metrics(study, trial, metrics, fitness)
