"""The LoRA zoo's slices of the zoo world: six narrow experts and two tasks only a mix of them solves.

Each LoRA expert (zoo/build_lora.py) is trained on ONE slice, as the GENOME paper's domain
experts are each tuned on one domain. A slice is a kind of question AND an answer style:

    add_en      English additions (a 2-digit amount + 1-5), "23 + 4 = 27. The answer is 27."
    sub_en      English subtractions (a 2-digit amount - 1-5), the same style
    abel_en     English additions and subtractions, another style: "23 + 4 = 27\nAnswer: 27"
    count_ja    Japanese "how many did X buy?" read back, 「14こ かいました。こたえは 14 です。」
    qa_ja       Japanese non-math Q&A (colour, place, like), 「...。こたえは Y です。」
    counter_ja  Japanese additions and subtractions, the equation with a counter: " 23 + 4 = 27こ"

The arithmetic is what the base already does (its curriculum's stage 3 changes 2-digit amounts by
1-5, answered by bare equations): 40 LoRA steps learn a style and a question kind, not new
arithmetic (2-digit + 2-digit needed 400 full fine-tuning steps in the text zoo).

Tasks are scored by their style: the answer must come in the task's own form (REQUIRED_FORM), so a
right number in another expert's style scores 0. Each has a 200-item "search" (validation) split
and a disjoint 200-item "test" split (but "ja_qa", the text zoo's own task: 100 + 200); no
question is in two splits of any task, nor in any training document. The data source "zoo" serves
them by name, e.g. {"source": "zoo", "task": "lora_ja_math", "split": "search"}:

    own skills:  one per expert (OWN_TASK)
    targets:     "lora_ja_math"   Japanese problems answered 「a + b = c。こたえは c です。」: the
                                  English experts' arithmetic in the Japanese experts' style
                 "lora_en_count"  English "how many did X buy?" answered "... The answer is 14.":
                                  count_ja's reading back in the English experts' style
    (lora_ja_math is also counter_ja's arithmetic on Japanese problems in count_ja's or qa_ja's style)

    from zoo import lora_world
    lora_world.task_items("lora_ja_math", "search")   # 200 (question, gold answer) pairs
"""
from __future__ import annotations

import functools
import random

from zoo import world
from zoo.world import PROMPT, Document

EVAL_SIZES = {"search": 200, "test": 200}
EVAL_SEED = 20260601
TARGETS = ("lora_ja_math", "lora_en_count")
# expert -> its own task (the slice it is good at)
OWN_TASK = {"add_en": "lora_en_add", "sub_en": "lora_en_sub", "abel_en": "lora_en_abel",
            "count_ja": "lora_ja_count", "qa_ja": "ja_qa", "counter_ja": "lora_ja_counter"}
TASKS = (*OWN_TASK.values(), *TARGETS)
# qa_ja's own task is the text zoo's "ja_qa" (search 100, test 200, its answer_match default): the
# Japanese Q&A world has 576 distinct questions, too few for another 400 held out of training
GENERATED = tuple(t for t in TASKS if t != "ja_qa")
# the form the answer must take (one capture: the answer), per task; the zoo report's objectives use them
JA_FORM = r"こたえは\s*(\S+?)\s*です"
EN_FORM = r"The answer is ([^\s.]+)"
REQUIRED_FORM = {"lora_en_add": EN_FORM, "lora_en_sub": EN_FORM, "lora_en_abel": r"Answer: (\S+)",
                 "lora_ja_count": JA_FORM, "ja_qa": JA_FORM, "lora_ja_counter": r"= (\d+)こ",
                 "lora_ja_math": JA_FORM, "lora_en_count": EN_FORM}


def small_step_operands(rng: random.Random, gain: bool) -> tuple[int, int]:
    """A 2-digit amount changed by 1-5: the base's own arithmetic (its curriculum's stage 3)."""
    return rng.randint(10, 95), rng.randint(1, 5)


def _math(rng: random.Random, lang: str, gain: bool) -> tuple[str, int, int, bool]:
    name, obj, verb = world._problem_parts(rng, gain)
    a, b = small_step_operands(rng, gain)
    return world.word_problem(lang, name, obj, verb, a, b), a, b, gain


def _count(rng: random.Random, lang: str) -> tuple[str, str, int]:
    """A "how many did X <verb>?" story: (question, the reason in the answer, the number read back)."""
    gain = rng.random() < 0.5
    name, obj, verb = world._problem_parts(rng, gain)
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    story = world._join(lang, [world._has(lang, name, obj, a), world._event(lang, name, obj, verb, b),
                               world._how_many_verb(lang, name, obj, verb)])
    reason = f"{b}こ {verb[2]}" if lang == "ja" else f"{name[0]} {verb[1]} {b} {obj[0]}"
    return story, reason, b


# --- answer styles ----------------------------------------------------------------------------

def answer_en(reason: str, answer) -> str:
    return f" {reason}. The answer is {answer}."


def answer_math(style: str, a: int, b: int, gain: bool) -> str:
    result, eq = (a + b if gain else a - b), world.equation(a, b, gain)
    return {"en": answer_en(eq, result), "abel": f" {eq}\nAnswer: {result}", "counter": f" {eq}こ",
            "ja": world.answer_ja(eq, result)}[style]


# --- evaluation -------------------------------------------------------------------------------

def _eval_item(task: str, rng: random.Random) -> tuple[str, str]:
    if task in ("lora_ja_count", "lora_en_count"):
        question, _, b = _count(rng, task[5:7])
        return question, str(b)
    gain = {"lora_en_add": True, "lora_en_sub": False}.get(task, rng.random() < 0.5)
    question, a, b, gain = _math(rng, task[5:7], gain)  # the math tasks
    return question, str(a + b if gain else a - b)


@functools.cache
def _eval_splits() -> dict[str, dict[str, list[tuple[str, str]]]]:
    """Every task's splits at once, so no question is in two splits of any task, and none is an
    evaluation question of the text zoo (world.held_out_questions)."""
    seen = set(world.held_out_questions())
    splits: dict[str, dict[str, list[tuple[str, str]]]] = {}
    wanted = sum(EVAL_SIZES.values())
    for task in GENERATED:
        rng = random.Random(f"{EVAL_SEED}-{task}")
        items: list[tuple[str, str]] = []
        for _ in range(100 * wanted):
            question, answer = _eval_item(task, rng)
            if question not in seen:
                seen.add(question)
                items.append((question, answer))
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


# --- training slices --------------------------------------------------------------------------

def _math_slice(lang: str, style: str, gain: bool | None):
    def make(rng: random.Random) -> tuple[str, str]:
        question, a, b, op = _math(rng, lang, gain if gain is not None else rng.random() < 0.5)
        return question, answer_math(style, a, b, op)
    return make


def _count_ja(rng: random.Random) -> tuple[str, str]:
    story, reason, b = _count(rng, "ja")
    return story, world.answer_ja(reason, b)


def _qa_ja(rng: random.Random) -> tuple[str, str]:
    question, reason, answer = world.ja_qa_item(rng)
    return question, world.answer_ja(reason, answer)


SLICES = {"add_en": _math_slice("en", "en", True), "sub_en": _math_slice("en", "en", False),
          "abel_en": _math_slice("en", "abel", None), "count_ja": _count_ja, "qa_ja": _qa_ja,
          "counter_ja": _math_slice("ja", "counter", None)}
EXPERTS = tuple(SLICES)


def expert_doc(expert: str, rng: random.Random) -> Document:
    """One training document of a LoRA expert's slice (never an evaluation question)."""
    if expert not in SLICES:
        raise ValueError(f"unknown LoRA zoo expert {expert!r}; known: {', '.join(SLICES)}")
    while True:
        question, answer = SLICES[expert](rng)
        if question not in held_out_questions():
            return Document(PROMPT.format(question=question), answer)
