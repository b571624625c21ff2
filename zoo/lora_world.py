"""The LoRA zoo's slices of the zoo world: six narrow experts and targets that only a mix of them solves.

Each LoRA expert (zoo/build_lora.py) is trained on ONE slice, as the GENOME paper's domain
experts are each tuned on one domain. A slice is a question kind AND an answer style:

    add_en      English additions (a 2-digit amount + 1-5), "23 + 4 = 27. The answer is 27."
    sub_en      English subtractions (a 2-digit amount - 1-5), the same style
    abel_en     English additions and subtractions, another style: "23 + 4 = 27\nAnswer: 27"
    count_ja    Japanese "how many did X buy?" read back, 「14こ かいました。こたえは 14 です。」
    qa_ja       Japanese non-math Q&A (colour, place, like), 「...。こたえは Y です。」
    counter_ja  Japanese additions and subtractions, the equation with a counter: " 23 + 4 = 27こ"

The arithmetic is what the base already does (its curriculum's stage 3 changes 2-digit amounts by
1-5, answered by bare equations; a bare "how many did X buy?" it answers with the bare number):
40 LoRA steps learn a style for a question kind, not new arithmetic. Besides its slice, an expert
sees "contrast" documents: the OTHER experts' question kinds answered the base's bare way
(" 23 + 4 = 27", " 14"), so that it changes its own kind's answers and leaves the rest alone, as a
domain expert does; mixed with another expert, each then still answers its own kind (measured:
without them a mix of add_en and count_ja answered neither kind in style).

Every item's gold answer is its answer phrase in the item's own style ("The answer is 27",
"Answer: 27", "こたえは 14", "= 27こ"), read from an output by ANSWER_PATTERN, the last capture;
so a right number in another style scores 0, and one objective config scores every task:

    {"name": "answer_match", "options": {"answer_pattern": lora_world.ANSWER_PATTERN}}

("ja_qa", the text zoo's own Q&A task, keeps its bare gold word and answer_match's default pattern).
Each task has a 200-item "search" (validation) split and a disjoint 200-item "test" split (but
"ja_qa": 100 + 200); no question is in two splits of any task, nor in any training document.
The data source "zoo" serves them by name, e.g. {"source": "zoo", "task": TARGETS[0], "split": "search"}:

    own skills:  one per expert (OWN_TASK)
    targets:     several experts' slices, item by item in turn (TASK_PARTS), so each expert gets
                 only its share and a mix of them can get all:
                 "lora_add_and_count"      English additions (add_en's) and Japanese counts (count_ja's)
                 "lora_sub_and_counter"    English subtractions (sub_en's) and Japanese math (counter_ja's)
                 "lora_abel_count_counter" English math in abel's style, Japanese counts, Japanese math

    from zoo import lora_world
    lora_world.task_items("lora_add_and_count", "search")   # 200 (question, gold answer phrase) pairs
"""
from __future__ import annotations

import functools
import random
from typing import NamedTuple

from zoo import world
from zoo.world import PROMPT, Document

EVAL_SIZES = {"search": 200, "test": 200}
EVAL_SEED = 20260601


class Posed(NamedTuple):
    """A question and what answers it: `reason` (the equation, or the fact read back) and `result`."""

    question: str
    reason: str
    result: str
    bare: str  # the base's own answer: the equation for math, the bare result otherwise


# --- question kinds ---------------------------------------------------------------------------

def small_step_operands(rng: random.Random) -> tuple[int, int]:
    """A 2-digit amount changed by 1-5: the base's own arithmetic (its curriculum's stage 3)."""
    return rng.randint(10, 95), rng.randint(1, 5)


def _math(lang: str, gain: bool | None):
    def pose(rng: random.Random) -> Posed:
        up = gain if gain is not None else rng.random() < 0.5
        name, obj, verb = world._problem_parts(rng, up)
        a, b = small_step_operands(rng)
        equation = world.equation(a, b, up)
        return Posed(world.word_problem(lang, name, obj, verb, a, b), equation, str(a + b if up else a - b), equation)
    return pose


def _count(lang: str):
    """A "how many did X <verb>?" story: the number in the middle sentence is the answer."""
    def pose(rng: random.Random) -> Posed:
        gain = rng.random() < 0.5
        name, obj, verb = world._problem_parts(rng, gain)
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        story = world._join(lang, [world._has(lang, name, obj, a), world._event(lang, name, obj, verb, b),
                                   world._how_many_verb(lang, name, obj, verb)])
        reason = f"{b}こ {verb[2]}" if lang == "ja" else f"{name[0]} {verb[1]} {b} {obj[0]}"
        return Posed(story, reason, str(b), str(b))
    return pose


def _qa_ja(rng: random.Random) -> Posed:
    question, reason, answer = world.ja_qa_item(rng)
    return Posed(question, reason, answer, answer)


KINDS = {"en_add": _math("en", True), "en_sub": _math("en", False), "en_math": _math("en", None),
         "ja_math": _math("ja", None), "ja_count": _count("ja"), "ja_qa": _qa_ja}
# kinds that ask the same thing (English math): an expert's contrast documents leave out its own family
FAMILY = {"en_add": "en_math", "en_sub": "en_math", "en_math": "en_math",
          "ja_math": "ja_math", "ja_count": "ja_count", "ja_qa": "ja_qa"}

# --- answer styles: style -> (answer text, gold answer phrase) ---------------------------------

STYLES = {
    "en": lambda p: (f" {p.reason}. The answer is {p.result}.", f"The answer is {p.result}"),
    "abel": lambda p: (f" {p.reason}\nAnswer: {p.result}", f"Answer: {p.result}"),
    "ja": lambda p: (world.answer_ja(p.reason, p.result), f"こたえは {p.result}"),
    "counter": lambda p: (f" {p.reason}こ", f"= {p.result}こ"),
}
# the answer phrase of every style (one capture); answer_match compares its last capture with the gold
ANSWER_PATTERN = r"(The answer is -?\d+|Answer: -?\d+|こたえは -?\d+|= -?\d+こ)"

# --- experts, tasks ---------------------------------------------------------------------------

SLICES = {"add_en": ("en_add", "en"), "sub_en": ("en_sub", "en"), "abel_en": ("en_math", "abel"),
          "count_ja": ("ja_count", "ja"), "qa_ja": ("ja_qa", "ja"), "counter_ja": ("ja_math", "counter")}
EXPERTS = tuple(SLICES)
# expert -> its own task (the slice it is good at)
OWN_TASK = {"add_en": "lora_en_add", "sub_en": "lora_en_sub", "abel_en": "lora_en_abel",
            "count_ja": "lora_ja_count", "qa_ja": "ja_qa", "counter_ja": "lora_ja_counter"}
# task -> the (kind, style) parts its items take in turn; a target's parts are several experts' slices
TASK_PARTS = {
    **{OWN_TASK[e]: (SLICES[e],) for e in EXPERTS if OWN_TASK[e] != "ja_qa"},
    "lora_add_and_count": (SLICES["add_en"], SLICES["count_ja"]),
    "lora_sub_and_counter": (SLICES["sub_en"], SLICES["counter_ja"]),
    "lora_abel_count_counter": (SLICES["abel_en"], SLICES["count_ja"], SLICES["counter_ja"]),
}
TARGETS = ("lora_add_and_count", "lora_sub_and_counter", "lora_abel_count_counter")
TASKS = (*OWN_TASK.values(), *TARGETS)
# qa_ja's own task is the text zoo's "ja_qa" (search 100, test 200, answer_match's default pattern):
# the Japanese Q&A world has 576 distinct questions, too few for another 400 held out of training
GENERATED = tuple(TASK_PARTS)


def objective_options(task: str) -> dict[str, str]:
    """The "answer_match" options that score `task` (its gold is an answer phrase, or ja_qa's word)."""
    if task not in TASKS:
        raise ValueError(f"unknown LoRA zoo task {task!r}; known: {', '.join(TASKS)}")
    return {} if task == "ja_qa" else {"answer_pattern": ANSWER_PATTERN}


# --- evaluation -------------------------------------------------------------------------------

@functools.cache
def _eval_splits() -> dict[str, dict[str, list[tuple[str, str]]]]:
    """Every task's splits at once, so no question is in two splits of any task, and none is an
    evaluation question of the text zoo (world.held_out_questions)."""
    seen = set(world.held_out_questions())
    splits: dict[str, dict[str, list[tuple[str, str]]]] = {}
    wanted = sum(EVAL_SIZES.values())
    for task, parts in TASK_PARTS.items():
        rng = random.Random(f"{EVAL_SEED}-{task}")
        items: list[tuple[str, str]] = []
        for _ in range(100 * wanted):
            kind, style = parts[len(items) % len(parts)]  # the parts in turn: equal shares in every split
            posed = KINDS[kind](rng)
            if posed.question not in seen:
                seen.add(posed.question)
                items.append((posed.question, STYLES[style](posed)[1]))
            if len(items) == wanted:
                break
        assert len(items) == wanted, f"LoRA zoo task {task}: only {len(items)} distinct questions"
        start, splits[task] = 0, {}
        for split, size in EVAL_SIZES.items():
            splits[task][split] = items[start:start + size]
            start += size
    return splits


def task_items(task: str, split: str) -> list[tuple[str, str]]:
    """(question, gold answer) pairs of a LoRA-zoo task; no question is in two splits of any task."""
    if task == "ja_qa":
        return world.task_items(task, split)
    splits = _eval_splits()
    if task not in splits:
        raise ValueError(f"unknown LoRA zoo task {task!r}; known: {', '.join(TASKS)}")
    if split not in splits[task]:
        raise ValueError(f"unknown split {split!r} of LoRA zoo task {task!r}; known: {', '.join(EVAL_SIZES)}")
    return list(splits[task][split])


@functools.cache
def held_out_questions() -> frozenset[str]:
    """Every evaluation question of both zoos: no LoRA expert's training document asks one."""
    ours = {q for task in _eval_splits().values() for items in task.values() for q, _ in items}
    return frozenset(ours | world.held_out_questions())


# --- training documents -----------------------------------------------------------------------

def _slice_doc(expert: str, rng: random.Random) -> tuple[str, str]:
    kind, style = SLICES[expert]
    posed = KINDS[kind](rng)
    return posed.question, STYLES[style](posed)[0]


def _contrast_doc(expert: str, rng: random.Random) -> tuple[str, str]:
    own = FAMILY[SLICES[expert][0]]
    kind = rng.choice([k for k in sorted(set(FAMILY.values())) if k != own])
    posed = KINDS[kind](rng)
    return posed.question, f" {posed.bare}"


def expert_doc(expert: str, rng: random.Random, *, contrast: bool = False) -> Document:
    """One training document of a LoRA expert (never an evaluation question): its slice, or with
    `contrast` another expert's question kind answered the base's bare way."""
    if expert not in SLICES:
        raise ValueError(f"unknown LoRA zoo expert {expert!r}; known: {', '.join(SLICES)}")
    while True:
        question, answer = (_contrast_doc if contrast else _slice_doc)(expert, rng)
        if question not in held_out_questions():
            return Document(PROMPT.format(question=question), answer)
