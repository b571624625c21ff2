"""Multiple choice through lm-eval: LiveModelLM against lm-eval's HF backend (HFLM), side by side.

    .venv/bin/python bench/lm_eval_choice.py                        # zoo base, task qa, 200 items, 3 reps
    .venv/bin/python bench/lm_eval_choice.py --model math_wiz --items 50 --reps 1 --threads 2
    .venv/bin/python bench/lm_eval_choice.py --kv-copies           # LiveModelLM's fallback, not packed

The task is a local lm-eval `multiple_choice` task written to a temp dir (YAML + JSON lines, no
hub), "Q: <question>\\nA:" and 4 shuffled choices:
  - qa (default): the zoo's Japanese questions (ja_qa test split, 200 items): the gold word and 3
    other words of the question's kind (colours, places, likes), as most 4-choice tasks have;
  - math: the zoo's English word problems (en_math test split): the gold number and 3 others
    within 9 of it. Such choices often differ in their last token only, where HFLM's own trick
    (one forward for continuations equal but for their last token: its `logits_cache`) applies.
Both LMs get the same model object, the same batch size and the task's very requests (built once
by lm-eval); each rep times `loglikelihood` over all of them, the two LMs taking turns (median of
--reps, wall and process CPU seconds: on a shared machine wall time also counts the waits for a
core, CPU time does not). Identical results are checked on the way: every request's
log-likelihood within ATOL + RTOL x |HFLM's| of HFLM's, its is_greedy equal, and every item's
chosen answer (lm-eval's acc: the argmax choice) equal. Prints items per second, the ratio, and
the token positions (padding included) each LM ran through the model, counted in one more run.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager, get_task_dict  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from objectives import LiveModelLM  # noqa: E402
from zoo.tokenizer import build_tokenizer  # noqa: E402
from zoo.world import COLOURS, LIKES, PLACES, task_items  # noqa: E402

ATOL, RTOL = 1e-4, 1e-5  # |ours - HFLM's| <= ATOL + RTOL * |HFLM's| per log-likelihood (fp32), as the tests
TASK = "bench_zoo_choice"


def write_choice_task(folder: Path, items: int, *, kind: str = "qa", seed: int = 0) -> str:
    """A 4-choice lm-eval task of `items` zoo questions in `folder` (module docstring); its name."""
    if kind not in CHOICE_MAKERS:
        raise ValueError(f"unknown choice task {kind!r}; known: {', '.join(CHOICE_MAKERS)}")
    rng = random.Random(seed)
    source = "ja_qa" if kind == "qa" else "en_math"
    pairs = task_items(source, "test")[:items]
    if len(pairs) < items:
        raise ValueError(f"--items {items}: the zoo's {source} test split has {len(pairs)} items")
    rows = []
    for question, answer in pairs:
        choices = rng.sample(CHOICE_MAKERS[kind](question, answer), 3)
        label = rng.randrange(4)
        choices.insert(label, answer)
        rows.append({"question": question, "choices": choices, "label": label})  # lm-eval adds the " " delimiter
    data = folder / f"{TASK}.jsonl"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"Q: {{question}}\\nA:\"\n"
        "doc_to_choice: choices\ndoc_to_target: label\nmetric_list:\n  - metric: acc\nmetadata:\n  version: 1.0\n",
        encoding="utf-8")
    return TASK


def _qa_wrong(question: str, answer: str) -> list[str]:
    # the other answers of the question's kind, told by its wording (うみ is both a place and a like)
    kind = COLOURS if "なにいろ" in question else PLACES if "どこに" in question else LIKES
    return [ja for _, ja in kind if ja != answer]


def _math_wrong(question: str, answer: str) -> list[str]:
    gold = int(answer)
    return [str(n) for n in range(max(0, gold - 9), gold + 10) if n != gold]


CHOICE_MAKERS = {"qa": _qa_wrong, "math": _math_wrong}


def task_requests(folder: Path, name: str) -> list:
    task = get_task_dict([name], TaskManager(include_path=str(folder), include_defaults=False))[name]
    task.build_all_requests(rank=0, world_size=1)
    return task.instances


def chosen(requests: list, results: list[tuple[float, bool]]) -> dict[int, int]:
    """Per item (doc_id): the index of its most likely choice, as lm-eval's acc picks it."""
    scores: dict[int, list[float]] = {}
    for request, (logprob, _) in zip(requests, results):
        scores.setdefault(request.doc_id, []).append(logprob)
    return {doc: max(range(len(s)), key=s.__getitem__) for doc, s in scores.items()}


def time_loglikelihood(lms: dict, requests: list, reps: int) -> dict[str, tuple[float, float, list]]:
    """Per LM: (median wall s, median CPU s, results) of `reps` runs over all requests; the LMs take
    turns within each rep, so a busy machine slows both alike."""
    walls: dict[str, list[float]] = {name: [] for name in lms}
    cpus: dict[str, list[float]] = {name: [] for name in lms}
    results = {}
    for _ in range(reps):
        for name, lm in lms.items():
            wall, cpu = time.perf_counter(), time.process_time()
            results[name] = lm.loglikelihood(requests, disable_tqdm=True)
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
    return {name: (statistics.median(walls[name]), statistics.median(cpus[name]), results[name]) for name in lms}


def forward_positions(model, lms: dict, requests: list) -> dict[str, int]:
    """Per LM: the token positions (padding included) its `loglikelihood` over `requests` runs
    through the model, counted by a hook on the model's forward (one untimed run)."""
    seen = [0]

    def count(_module, args, kwargs):
        input_ids = kwargs.get("input_ids")  # HFLM passes its batch positionally
        seen[0] += (input_ids if input_ids is not None else args[0]).numel()

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        positions = {}
        for name, lm in lms.items():
            seen[0] = 0
            lm.loglikelihood(requests, disable_tqdm=True)
            positions[name] = seen[0]
    finally:
        handle.remove()
    return positions


def compare(requests: list, reference: list, results: list) -> dict[str, float | int]:
    """How `results` differ from `reference`: the largest |log-likelihood difference|, requests
    beyond the tolerance, requests with is_greedy different, items whose chosen answer differs."""
    diffs = [abs(a[0] - b[0]) for a, b in zip(reference, results)]
    ref_choice, choice = chosen(requests, reference), chosen(requests, results)
    return {"worst": max(diffs),
            "beyond": sum(d > ATOL + RTOL * abs(a[0]) for d, a in zip(diffs, reference)),
            "greedy_differ": sum(a[1] != b[1] for a, b in zip(reference, results)),
            "choice_differ": sum(ref_choice[d] != choice[d] for d in ref_choice)}


def run(model_name: str, items: int, reps: int, batch_size: int, kind: str = "qa", kv_copies: bool = False) -> dict:
    path = ROOT / "zoo" / "models" / model_name if (ROOT / "zoo" / "models" / model_name).is_dir() else Path(model_name)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = build_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        requests = task_requests(Path(tmp), write_choice_task(Path(tmp), items, kind=kind))
    lms = {"HFLM": HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size),
           "LiveModelLM": LiveModelLM(model=model, tokenizer=tokenizer, batch_size=batch_size,
                                      pack_choices=False if kv_copies else None)}
    timed = time_loglikelihood(lms, requests, reps)
    return {"model": path.name, "items": items, "requests": len(requests), "timed": timed,
            "positions": forward_positions(model, lms, requests),
            **compare(requests, timed["HFLM"][2], timed["LiveModelLM"][2])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="base", help="zoo/models/<name> or a path")
    parser.add_argument("--task", choices=list(CHOICE_MAKERS), default="qa",
                        help="qa: zoo ja_qa, words of the question's kind; math: zoo en_math, numbers near the answer")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="requests per forward, both LMs")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--kv-copies", action="store_true",
                        help="LiveModelLM scores choices from copies of the context's KV cache (its fallback for "
                             "models that take no 4-D mask), not packed in the context's row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = run(args.model, args.items, args.reps, args.batch_size, args.task, args.kv_copies)
    print(f"{out['model']}, task {args.task}: {out['items']} items x 4 choices = {out['requests']} loglikelihood requests, "
          f"batch_size {args.batch_size}, {args.threads} thread(s), median of {args.reps}, LiveModelLM's choices "
          f"{'from KV copies' if args.kv_copies else 'packed'}")
    print(f"  {'LM':<12} {'wall s':>7} {'items/s':>8} {'CPU s':>7} {'positions':>10}")
    for name, (wall, cpu, _) in out["timed"].items():
        print(f"  {name:<12} {wall:>7.3f} {out['items'] / wall:>8.1f} {cpu:>7.3f} {out['positions'][name]:>10,}")
    hf, live = out["timed"]["HFLM"], out["timed"]["LiveModelLM"]
    print(f"  LiveModelLM / HFLM: {hf[0] / live[0]:.2f}x items per second (CPU time {hf[1] / live[1]:.2f}x)")
    same = not (out["beyond"] or out["greedy_differ"] or out["choice_differ"])
    print(f"  per-request log-likelihoods: largest |difference| {out['worst']:.2e}, beyond {ATOL:g} + {RTOL:g} x |HFLM's|: "
          f"{out['beyond']}; is_greedy different: {out['greedy_differ']}; items chosen differently: "
          f"{out['choice_differ']} -> {'identical' if same else 'NOT identical'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
