"""The zoo's lm-eval tasks: task YAMLs and their data, generated from the zoo world (zoo/world.py).

    python -m zoo.build_lm_eval_tasks          # (re)writes zoo/lm_eval_tasks/ (data/*.jsonl, *.yaml)
    python -m zoo.build_lm_eval_tasks --report # every zoo model on every task's test split, by lm-eval's
                                               # simple_evaluate with its HF backend: a markdown table
    python -m zoo.build_lm_eval_tasks --report --out t.json   # also as JSON (bench/results.py's block)

zoo/lm_eval_tasks/ is an lm-eval task folder (`task_paths` of objective=lm_eval, lm-eval's
`--include_path`, mergekit-evolve's `--task-search-path`); nothing in it is fetched. Every task has
a `validation` split (what a search scores) and a `test` split (what lm-eval's simple_evaluate
scores, the final table), disjoint by question. tests/zoo/test_lm_eval_tasks.py checks that the
committed files are what this module writes.

    zoo_ja_math          generate_until: the zoo's target, "Q: {question}\\nA:" greedy to the end of the
                         line; exact_match under two filters: `last_number` (the last number of the
                         output equals the gold) and `ja_answer` (the output says 「こたえは N です」 with
                         the gold N: the number right AND the answer in Japanese)
    zoo_en_math_choice   multiple_choice: an English 2-digit problem; which equation "a + b = r" is
                         right (r, r +/- 1, r +/- 10): the math experts' skill
    zoo_ja_qa_choice     multiple_choice: a Japanese Q&A question; which answer in the Japanese
                         expert's format 「<reason>。こたえは Y です。」 is right (other colours, places, likes)
    zoo_parallel_choice  multiple_choice: "EN: <sentence>\\nJA:"; which Japanese sentence translates it
                         (one slot changed: a number, colour, place or liking): the base's parallel text
    zoo_tally_choice     multiple_choice: a story with running tallies "(3 + 2 = "; which result comes
                         next (r, r +/- 1, 2 or 3): the base's tally stories
"""
from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from zoo import world

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
SEED = "zoo-lm-eval-tasks"
CHOICE_SPLIT_SIZES = {"validation": 100, "test": 200}  # the generated multiple-choice tasks' splits

Doc = dict  # one row of a task's data file


def _shuffled_choices(rng: random.Random, right: str, wrong: list[str]) -> dict:
    choices = [right, *wrong]
    rng.shuffle(choices)
    return {"choices": choices, "label": choices.index(right)}


def _near(rng: random.Random, value: int, steps: tuple[int, ...]) -> list[int]:
    """Three other non-negative values near `value` (value +/- each step), distinct."""
    options = sorted({value + sign * step for step in steps for sign in (1, -1)} - {value})
    options = [v for v in options if v >= 0]
    return rng.sample(options, 3)


# --- the zoo's evaluation tasks, as lm-eval docs -----------------------------------------------------

def ja_math_docs(split: str) -> list[Doc]:
    """The target task: validation = the zoo's search split, test = its test split."""
    return [{"question": q, "answer": a} for q, a in world.task_items("ja_math", {"validation": "search",
                                                                                  "test": "test"}[split])]


def en_math_choice_docs(split: str) -> list[Doc]:
    rng = random.Random(f"{SEED}-en_math_choice-{split}")
    docs = []
    for question, answer in world.task_items("en_math", {"validation": "search", "test": "test"}[split]):
        a, b = (int(n) for n in re.findall(r"\d+", question)[:2])
        result = int(answer)
        sign = "+" if a + b == result else "-"
        docs.append({"question": question, **_shuffled_choices(
            rng, f"{a} {sign} {b} = {result}", [f"{a} {sign} {b} = {r}" for r in _near(rng, result, (1, 10))])})
    return docs[:CHOICE_SPLIT_SIZES[split]]


# the Japanese Q&A question kinds (world.ja_qa_item): how to read the slot the answer fills, and the
# values a wrong answer takes
_JA_QA_KINDS = [
    (re.compile(r"の (\S+)は (\S+)です。"), "{0}は {1}", [c[1] for c in world.COLOURS]),
    (re.compile(r"は (\S+)に いきました。"), None, [p[1] for p in world.PLACES]),
    (re.compile(r"は (\S+)が すきです。"), "{0}が すきです", [like[1] for like in world.LIKES]),
]


def _ja_reason(question: str, answer: str) -> str:
    """The Japanese expert's reason for `answer` (world.ja_qa_item's), read back from the question."""
    for pattern, reason, _ in _JA_QA_KINDS:
        match = pattern.search(question)
        if match:
            if reason is None:  # places: "<name>は <place>に いきました"
                return f"{question.split('は ', 1)[0]}は {answer}に いきました"
            return reason.format(*match.groups()[:-1], answer)
    raise ValueError(f"not a zoo Japanese Q&A question: {question!r}")


def ja_qa_choice_docs(split: str) -> list[Doc]:
    rng = random.Random(f"{SEED}-ja_qa_choice-{split}")
    docs = []
    for question, answer in world.task_items("ja_qa", {"validation": "search", "test": "test"}[split]):
        values = next(values for pattern, _, values in _JA_QA_KINDS if pattern.search(question))
        wrong = rng.sample([v for v in values if v != answer], 3)
        docs.append({"question": question, **_shuffled_choices(
            rng, f"{_ja_reason(question, answer)}。こたえは {answer} です。",
            [f"{_ja_reason(question, w)}。こたえは {w} です。" for w in wrong])})
    return docs[:CHOICE_SPLIT_SIZES[split]]


# --- tasks of the base's own data, drawn fresh (one rng, validation first, distinct questions) ---------

def _parallel_item(rng: random.Random) -> tuple[str, str, list[str]]:
    name, obj = rng.choice(world.NAMES), rng.choice(world.OBJECTS)
    kind = rng.randrange(4)
    if kind == 0:
        n = rng.randint(1, 99)
        return (world._has("en", name, obj, n), world._has("ja", name, obj, n),
                [world._has("ja", name, obj, m) for m in _near(rng, n, (1, 2, 10))])
    if kind == 1:
        thing, colour = rng.choice(world.THINGS), rng.choice(world.COLOURS)
        others = rng.sample([c for c in world.COLOURS if c != colour], 3)
        return (f"{name[0]}'s {thing[0]} is {colour[0]}.", f"{name[1]}の {thing[1]}は {colour[1]}です。",
                [f"{name[1]}の {thing[1]}は {c[1]}です。" for c in others])
    if kind == 2:
        place = rng.choice(world.PLACES)
        others = rng.sample([p for p in world.PLACES if p != place], 3)
        return (f"{name[0]} goes to {place[0]}.", f"{name[1]}は {place[1]}に いきました。",
                [f"{name[1]}は {p[1]}に いきました。" for p in others])
    like = rng.choice(world.LIKES)
    others = rng.sample([x for x in world.LIKES if x != like], 3)
    return (f"{name[0]} likes {like[0]}.", f"{name[1]}は {like[1]}が すきです。",
            [f"{name[1]}は {x[1]}が すきです。" for x in others])


def _parallel_doc(rng: random.Random) -> Doc:
    en, ja, wrong = _parallel_item(rng)
    return {"question": en, **_shuffled_choices(rng, ja, wrong)}


def _tally_doc(rng: random.Random) -> Doc:
    """A tally story cut before the last tally's result (world.tally_story's sentences)."""
    lang = rng.choice(["en", "ja"])
    name, obj = rng.choice(world.NAMES), rng.choice(world.OBJECTS)
    count = rng.randint(1, 9)
    sentences = [world._has(lang, name, obj, count)]
    for _ in range(rng.randint(0, 2)):  # earlier events, tallied in full
        step = rng.randint(1, 9)
        sentences.append(world._event(lang, name, obj, rng.choice(world.GAIN), step, world.equation(count, step, True)))
        count += step
    gain = rng.random() < 0.5 or count <= 1
    step = min(rng.randint(1, 9), count) if not gain else rng.randint(1, 9)
    event = world._event(lang, name, obj, rng.choice(world.GAIN if gain else world.LOSE), step, "X")
    context = event[:event.index("X")] + f"{count} {'+' if gain else '-'} {step} ="
    result = count + step if gain else count - step
    return {"question": world._join(lang, sentences + [context]),
            **_shuffled_choices(rng, str(result), [str(r) for r in _near(rng, result, (1, 2, 3))])}


def _fresh_docs(task: str, make: Callable[[random.Random], Doc]) -> dict[str, list[Doc]]:
    rng, seen, docs = random.Random(f"{SEED}-{task}"), set(), []
    wanted = sum(CHOICE_SPLIT_SIZES.values())
    while len(docs) < wanted:
        doc = make(rng)
        if doc["question"] not in seen:
            seen.add(doc["question"])
            docs.append(doc)
    first = CHOICE_SPLIT_SIZES["validation"]
    return {"validation": docs[:first], "test": docs[first:]}


def parallel_choice_docs(split: str) -> list[Doc]:
    return _fresh_docs("parallel_choice", _parallel_doc)[split]


def tally_choice_docs(split: str) -> list[Doc]:
    return _fresh_docs("tally_choice", _tally_doc)[split]


# --- the task YAMLs -----------------------------------------------------------------------------------

_DATA = "custom_dataset: !function utils.load_zoo_task\ndataset_kwargs:\n  task: {task}\n"
_SPLITS = "validation_split: validation\ntest_split: test\n"
_CHOICE = ("output_type: multiple_choice\ndoc_to_text: {text}\ndoc_to_choice: \"{{{{choices}}}}\"\n"
           "doc_to_target: label\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
           "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\nmetadata:\n  version: 1.0\n")

TASKS: dict[str, tuple[Callable[[str], list[Doc]], str, str]] = {
    # task: (docs of a split, what it measures (the YAML's comment), the YAML's body after data and splits)
    "zoo_ja_math": (ja_math_docs, "the zoo's target: Japanese 2-digit word problems, answered in Japanese",
                    "output_type: generate_until\ndoc_to_text: \"Q: {{question}}\\nA:\"\ndoc_to_target: answer\n"
                    "generation_kwargs:\n  until: [\"\\n\"]\n  do_sample: false\n  max_gen_toks: 40\n"
                    "filter_list:\n"
                    "  - name: last_number     # the last number of the output\n"
                    "    filter:\n      - function: regex\n        regex_pattern: \"(-?\\\\d+)\"\n"
                    "        group_select: -1\n      - function: take_first\n"
                    "  - name: ja_answer       # the number of 「こたえは N です」: right AND in Japanese\n"
                    "    filter:\n      - function: regex\n        regex_pattern: \"こたえは (-?\\\\d+) です\"\n"
                    "        group_select: -1\n      - function: take_first\n"
                    "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
                    "metadata:\n  version: 1.0\n"),
    "zoo_en_math_choice": (en_math_choice_docs, "English 2-digit word problems: the right equation of four",
                           _CHOICE.format(text="\"Q: {{question}}\\nA:\"")),
    "zoo_ja_qa_choice": (ja_qa_choice_docs, "Japanese Q&A: the right answer of four, in the 「こたえは Y です」 format",
                         _CHOICE.format(text="\"Q: {{question}}\\nA:\"")),
    "zoo_parallel_choice": (parallel_choice_docs, "English to Japanese: the right translation of four",
                            _CHOICE.format(text="\"EN: {{question}}\\nJA:\"")),
    "zoo_tally_choice": (tally_choice_docs, "tally stories: the right running tally of four",
                         _CHOICE.format(text="\"{{question}}\"")),
}

_UTILS = '''"""The data of the zoo's lm-eval tasks (written by zoo/build_lm_eval_tasks.py: do not edit).

Each task's YAML names `load_zoo_task` as its custom_dataset, with its own name in dataset_kwargs:
the rows come from this folder's data/<task>/<split>.jsonl, wherever the folder is (no hub).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

DATA = Path(__file__).parent / "data"


def load_zoo_task(*, task: str, **_: Any) -> datasets.DatasetDict:
    # lm-eval passes its metadata (version, model args) along too: only `task` is ours
    splits = {}
    for path in sorted((DATA / task).glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        splits[path.stem] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(splits)
'''


def task_files() -> dict[str, str]:
    """Every file of zoo/lm_eval_tasks/, relative path -> text."""
    files = {"utils.py": _UTILS}
    for task, (docs, about, body) in TASKS.items():
        files[f"{task}.yaml"] = (f"# {about} (written by zoo/build_lm_eval_tasks.py from zoo/world.py)\n"
                                 f"task: {task}\n" + _DATA.format(task=task) + _SPLITS + body)
        for split in ("validation", "test"):
            rows = docs(split)
            files[f"data/{task}/{split}.jsonl"] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return files


def write(out: Path = TASKS_DIR) -> list[Path]:
    written = []
    for relative, text in task_files().items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def report(models: tuple[str, ...] = ("base", "ja", "math_wiz", "math_abel")) -> dict[str, dict[str, float]]:
    """Every zoo model on every task's test split as lm-eval scores it (simple_evaluate, HFLM):
    model -> column -> accuracy; a generate_until task has a column per filter."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    table: dict[str, dict[str, float]] = {}
    for name in models:
        path = Path(__file__).parent / "models" / name
        lm = HFLM(pretrained=AutoModelForCausalLM.from_pretrained(path).eval(),
                  tokenizer=AutoTokenizer.from_pretrained(path), batch_size=64)
        results = lm_eval.simple_evaluate(model=lm, tasks=list(TASKS), task_manager=manager, bootstrap_iters=0,
                                          log_samples=False)["results"]
        table[name] = {}
        for task in TASKS:
            for key, value in results[task].items():
                metric, _, filter_name = key.partition(",")
                if metric in ("acc", "exact_match") and isinstance(value, (int, float)):
                    table[name][task if filter_name == "none" else f"{task} ({filter_name})"] = float(value)
    return table


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="score every zoo model; print the table")
    parser.add_argument("--out", type=Path, help="with --report: also write the table as JSON here")
    args = parser.parse_args(argv)
    if not args.report:
        for path in write():
            print(path.relative_to(Path(__file__).parent.parent))
        return
    from zoo.report import markdown

    table = report()
    print(markdown(table))
    if args.out:
        args.out.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
