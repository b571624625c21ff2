"""A tiny visual-QA world for the VLM zoo (EvoVLM-JP in miniature), deterministic from seeds.

An image (32x32 RGB, grey with noise) shows 1-6 things of one kind on a 4x4 grid of 8x8 cells;
each kind is one of the world's objects drawn as a small square in its own colour (apples red,
books blue, ...). The question is the text world's own count question, which the base saw in
both languages, about that kind; the answer is the count. Counts are digits, so the content of an
answer is the same in both languages and only its framing differs:

    en_vqa (the VLM's own task, trained on):
        Q: How many apples does Tom have now?\\nA:         ->  " 3"
    ja_vqa (the target, never trained on):
        Q: トムは いま りんごを なんこ もっていますか?\\nA:   ->  " 3 です"

The VLM's prompt is "<image>" + PROMPT.format(question=...) and the answer follows, ending with
the end-of-text token. The Japanese answer is two MeCab words: a model that knows the format but
not the count scores 1/2 in ROUGE-L, the right count without the format (a bare digit, not
Japanese) 2/3 but 0 in rougeL_ja, both together 1.

Evaluation tasks (`task_items(task, split)` -> [{"image", "question", "answer"}]):

    task_items("ja_vqa", "search")   # 300 target items for the search
    task_items("ja_vqa", "test")     # 300 other target items for the final table
    task_items("en_vqa", "test")     # 300 items of the VLM's own English task
    task_items("ja_count_text", "test")  # the Japanese expert's own task: counts stated in the text

Every evaluation image is distinct from every other (sha256 of its pixel bytes), across tasks
and splits, and the training generators never emit one (`held_out_image_hashes`).
Text-only documents for the Japanese VQA expert (`ja_vqa_expert_doc`) state the count in the
text and write it after "A:" too: the expert learns the target's answer format, never an image.
"""
from __future__ import annotations

import functools
import hashlib
import random

import numpy as np
from PIL import Image

from zoo import world
from zoo.world import NAMES, OBJECTS, PROMPT, Document

IMAGE_SIZE = 32
CELL = 8                      # 4x4 grid of cells
ITEM = 5                      # an item is a 5x5 square inside its cell, jittered by 0-3 pixels
MAX_COUNT = 6                 # each kind appears 1..MAX_COUNT times
# the kinds: (english, japanese) objects of the text world, each with its colour
KINDS = [(OBJECTS[0], (220, 40, 40)),    # apples: red
         (OBJECTS[3], (40, 70, 220)),    # books: blue
         (OBJECTS[1], (245, 245, 245)),  # eggs: white
         (OBJECTS[2], (235, 205, 30)),   # pencils: yellow
         (OBJECTS[5], (40, 170, 60)),    # balls: green
         (OBJECTS[8], (20, 20, 20))]     # cups: black
EVAL_SIZES = {"ja_vqa": {"search": 300, "test": 300}, "en_vqa": {"search": 100, "test": 300},
              "ja_count_text": {"test": 200}}
EVAL_SEED = 20260101
IMAGE_TOKEN = "<image>"


def question(lang: str, name, kind: int) -> str:
    """The text world's own count question, which the base saw in both languages."""
    obj = KINDS[kind][0]
    if lang == "en":
        return f"How many {obj[0]} does {name[0]} have now?"
    return f"{name[1]}は いま {obj[1]}を なんこ もっていますか?"


def answer(lang: str, n: int) -> str:
    return f" {n}" if lang == "en" else f" {n} です"


def draw(rng: random.Random, kind: int, n: int) -> Image.Image:
    """n things of one kind at distinct random cells, on noisy grey."""
    noise = np.random.default_rng(rng.getrandbits(32))
    pixels = 128 + noise.integers(-12, 13, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    side = IMAGE_SIZE // CELL
    colour = np.array(KINDS[kind][1])
    for cell in rng.sample(range(side * side), n):
        row, col = divmod(cell, side)
        y, x = row * CELL + rng.randint(0, CELL - ITEM), col * CELL + rng.randint(0, CELL - ITEM)
        pixels[y:y + ITEM, x:x + ITEM] = colour
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def image_hash(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def vqa_item(rng: random.Random, lang: str) -> dict:
    kind, name = rng.randrange(len(KINDS)), rng.choice(NAMES)
    n = rng.randint(1, MAX_COUNT)
    image = draw(rng, kind, n)
    return {"image": image, "question": question(lang, name, kind), "answer": answer(lang, n)}


def count_text_question(rng: random.Random) -> tuple[str, str]:
    """A text-only Japanese counting question whose count is stated in it (the JA expert's),
    with another kind's count beside it."""
    kind_a, kind_b = rng.sample(range(len(KINDS)), 2)
    name = rng.choice(NAMES)
    n_a, n_b = rng.randint(1, 9), rng.randint(1, 9)
    a, b = KINDS[kind_a][0][1], KINDS[kind_b][0][1]
    stated = [f"{a}を {n_a}こ", f"{b}を {n_b}こ"]
    if rng.random() < 0.5:
        stated.reverse()
    return f"{name[1]}は {stated[0]}、{stated[1]} もっています。{question('ja', name, kind_a)}", answer("ja", n_a)


def _eval_item(task: str, rng: random.Random) -> dict:
    if task == "ja_count_text":
        q, a = count_text_question(rng)
        return {"image": None, "question": q, "answer": a}
    return vqa_item(rng, "ja" if task == "ja_vqa" else "en")


@functools.cache
def _eval_splits() -> dict[str, dict[str, list[dict]]]:
    seen: set[str] = set()
    splits: dict[str, dict[str, list[dict]]] = {}
    for task, sizes in EVAL_SIZES.items():
        rng = random.Random(f"{EVAL_SEED}-{task}")
        splits[task] = {}
        for split, size in sizes.items():
            items: list[dict] = []
            while len(items) < size:
                item = _eval_item(task, rng)
                key = image_hash(item["image"]) if item["image"] is not None else item["question"]
                if key not in seen:  # never a repeated image (or text question) across splits
                    seen.add(key)
                    items.append(item)
            splits[task][split] = items
    return splits


def task_items(task: str, split: str) -> list[dict]:
    """[{"image": PIL RGB image (None for ja_count_text), "question": str, "answer": str}]."""
    splits = _eval_splits()
    if task not in splits:
        raise ValueError(f"unknown VQA task {task!r}; known: {', '.join(splits)}")
    if split not in splits[task]:
        raise ValueError(f"unknown split {split!r} of VQA task {task!r}; known: {', '.join(splits[task])}")
    return [dict(item) for item in splits[task][split]]


@functools.cache
def held_out_image_hashes() -> frozenset[str]:
    return frozenset(image_hash(item["image"]) for task in _eval_splits().values()
                     for items in task.values() for item in items if item["image"] is not None)


@functools.cache
def held_out_text_questions() -> frozenset[str]:
    return frozenset(item["question"] for item in _eval_splits()["ja_count_text"]["test"])


def train_vqa_item(rng: random.Random) -> dict:
    """An English training item (the VLM's data), never an evaluation image."""
    while True:
        item = vqa_item(rng, "en")
        if image_hash(item["image"]) not in held_out_image_hashes():
            return item


def ja_vqa_expert_doc(rng: random.Random) -> Document:
    """A text-only Japanese counting question with its count stated, answered in the target's
    format; the count is already written after "A:", so the loss is on the format (" です") alone:
    the expert learns how a Japanese answer ends, not where its number comes from. Half are the
    world's own question (counts of two kinds stated), half the text world's copy-back story
    ("Xは objを aこ もっています。Xは objを bこ かいました。Xは objを なんこ かいましたか?" -> b)."""
    if rng.random() < 0.5:
        gain = rng.random() < 0.5
        name, obj, verb = world._problem_parts(rng, gain)
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        story = world._join("ja", [world._has("ja", name, obj, a), world._event("ja", name, obj, verb, b),
                                   world._how_many_verb("ja", name, obj, verb)])
        return _format_only(story, answer("ja", b))
    while True:
        q, a = count_text_question(rng)
        if q not in held_out_text_questions():
            return _format_only(q, a)


def _format_only(question_text: str, answer_text: str) -> Document:
    count, ending = answer_text.rsplit(" ", 1)  # " 3 です" -> the prompt ends with " 3", the target is " です"
    return Document(PROMPT.format(question=question_text) + count, " " + ending)
