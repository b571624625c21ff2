"""A tiny bilingual world in which merging can compose skills.

Everything is generated from templates: people, objects, places, colours, animal sounds, and
stories in which people gain (buy, find, get) or lose (eat, lose, give away) objects. English and
Japanese (kana only) share the world, so a base model trained on both links the two languages.

The target task (never trained on): Japanese word problems with two 2-digit operands, answered
with Japanese reasoning that ends in the number, e.g.

    Q: トムは りんごを 23こ もっています。トムは りんごを 14こ かいました。トムは いま りんごを なんこ もっていますか?
    A: 23 + 14 = 37。こたえは 37 です。

Evaluation tasks and their splits:

    from zoo.world import task_items
    task_items("ja_math", "search")   # 300 target problems for the search
    task_items("ja_math", "test")     # 300 other target problems for the final table
    task_items("en_math", "test")     # the math experts' own task (English)
    task_items("ja_qa", "test")       # the Japanese expert's own task (non-math Q&A)

Training documents come from `Document` generators grouped by curriculum stage (`base_stage`,
`expert_docs`); they never contain an evaluation problem (checked by exact question text).
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass

PROMPT = "Q: {question}\nA:"

NAMES = [("Tom", "トム"), ("Ken", "ケン"), ("Mia", "ミア"), ("Emma", "エマ"), ("Yuki", "ゆき"),
         ("Sora", "そら"), ("Hana", "はな"), ("Ren", "れん"), ("Aki", "あき"), ("Mei", "めい"),
         ("Ben", "ベン"), ("Lily", "リリー")]
OBJECTS = [("apples", "りんご"), ("eggs", "たまご"), ("pencils", "えんぴつ"), ("books", "ほん"),
           ("cookies", "クッキー"), ("balls", "ボール"), ("cards", "カード"), ("candies", "あめ"),
           ("cups", "コップ"), ("stickers", "シール")]
GAIN = [("buys", "bought", "かいました"), ("finds", "found", "みつけました"), ("gets", "got", "もらいました")]
LOSE = [("eats", "ate", "たべました"), ("loses", "lost", "なくしました"),
        ("gives away", "gave away", "あげました")]
PLACES = [("the park", "こうえん"), ("school", "がっこう"), ("the store", "みせ"), ("the station", "えき"),
          ("the library", "としょかん"), ("the sea", "うみ")]
COLOURS = [("red", "あか"), ("blue", "あお"), ("white", "しろ"), ("black", "くろ"), ("green", "みどり"),
           ("yellow", "きいろ")]
THINGS = [("car", "くるま"), ("hat", "ぼうし"), ("bag", "かばん"), ("flower", "はな"), ("shoe", "くつ"),
          ("kite", "たこ")]
ANIMALS = [("dog", "いぬ", "woof", "ワンワン"), ("cat", "ねこ", "meow", "ニャー"), ("cow", "うし", "moo", "モー"),
           ("frog", "かえる", "ribbit", "ケロケロ"), ("duck", "あひる", "quack", "ガーガー"),
           ("sheep", "ひつじ", "baa", "メー")]
LIKES = [("cats", "ねこ"), ("dogs", "いぬ"), ("music", "おんがく"), ("the sea", "うみ"), ("cake", "ケーキ"),
         ("games", "ゲーム")]

# The Q&A world is small (576 distinct questions), so its splits are smaller than the math ones.
EVAL_SIZES = {"ja_math": {"search": 300, "test": 300}, "en_math": {"search": 100, "test": 300},
              "ja_qa": {"search": 100, "test": 200}}
EVAL_SEED = 20250101


@dataclass(frozen=True)
class Document:
    """One training document: `prompt` gets no loss, `target` does (plain text: prompt is empty)."""

    prompt: str
    target: str


# --- sentences ------------------------------------------------------------------------------

def _has(lang: str, name, obj, n: int) -> str:
    if lang == "en":
        return f"{name[0]} has {n} {obj[0]}."
    return f"{name[1]}は {obj[1]}を {n}こ もっています。"


def _event(lang: str, name, obj, verb, n: int, tally: str = "") -> str:
    tally_en = f" ({tally})" if tally else ""
    if lang == "en":
        return f"{name[0]} {verb[0]} {n} {obj[0]}{tally_en}."
    return f"{name[1]}は {obj[1]}を {n}こ {verb[2]}{tally_en}。"


def _how_many_now(lang: str, name, obj) -> str:
    if lang == "en":
        return f"How many {obj[0]} does {name[0]} have now?"
    return f"{name[1]}は いま {obj[1]}を なんこ もっていますか?"


def _now_has(lang: str, name, obj, n: int) -> str:
    if lang == "en":
        return f"Now {name[0]} has {n} {obj[0]}."
    return f"いま {name[1]}は {obj[1]}を {n}こ もっています。"


def _how_many_verb(lang: str, name, obj, verb) -> str:
    if lang == "en":
        return f"How many {obj[0]} did {name[0]} {verb[0].split()[0][:-1]}{' away' if 'away' in verb[0] else ''}?"
    return f"{name[1]}は {obj[1]}を なんこ {verb[2][:-3]}ましたか?"


def _join(lang: str, sentences: list[str]) -> str:
    return (" " if lang == "en" else "").join(sentences)


def word_problem(lang: str, name, obj, verb, a: int, b: int) -> str:
    """The one problem shape of every math task: start with a, gain or lose b, how many now?"""
    return _join(lang, [_has(lang, name, obj, a), _event(lang, name, obj, verb, b),
                        _how_many_now(lang, name, obj)])


def equation(a: int, b: int, gain: bool) -> str:
    return f"{a} + {b} = {a + b}" if gain else f"{a} - {b} = {a - b}"


# --- answer styles (each expert has its own) -----------------------------------------------

def answer_ja(reason: str, answer) -> str:
    """The target's format, taught to the Japanese expert on everything but the target shape."""
    return f" {reason}。こたえは {answer} です。"


def answer_wiz(a: int, b: int, gain: bool) -> str:
    return f" {equation(a, b, gain)}. The answer is {a + b if gain else a - b}."


def answer_abel(a: int, b: int, gain: bool) -> str:
    return f" {equation(a, b, gain)}\nAnswer: {a + b if gain else a - b}"


# --- operand ranges ---------------------------------------------------------------------------

def two_digit_operands(rng: random.Random, gain: bool) -> tuple[int, int]:
    """The target's shape: a + b with a, b in 10-49; a - b with a in 20-99, b in 10..a-10."""
    if gain:
        return rng.randint(10, 49), rng.randint(10, 49)
    a = rng.randint(20, 99)
    return a, rng.randint(10, a - 10)


def non_target_operands(rng: random.Random, gain: bool) -> tuple[int, int]:
    """Every shape but the target's: 1-5 +/- 1-5, 1-digit + 2-digit, 2-digit +/- 1-digit."""
    shape = rng.randrange(3)
    if shape == 0:
        a, b = rng.randint(1, 5), rng.randint(1, 5)
        return (a, b) if gain else (max(a, b), min(a, b))
    if shape == 1 and gain:
        return rng.randint(1, 9), rng.randint(10, 90)
    return rng.randint(10, 90), rng.randint(1, 9)


def _problem_parts(rng: random.Random, gain: bool):
    return rng.choice(NAMES), rng.choice(OBJECTS), rng.choice(GAIN if gain else LOSE)


# --- evaluation tasks -------------------------------------------------------------------------

def _eval_math(lang: str, rng: random.Random) -> tuple[str, str]:
    gain = rng.random() < 0.5
    name, obj, verb = _problem_parts(rng, gain)
    a, b = two_digit_operands(rng, gain)
    return word_problem(lang, name, obj, verb, a, b), str(a + b if gain else a - b)


def ja_qa_item(rng: random.Random, kinds: int = 4) -> tuple[str, str, str]:
    """(question, reason, answer) of a Japanese non-math question; kind 3 (animal sounds) is
    world knowledge with only six questions, so evaluation draws from the first three kinds."""
    kind = rng.randrange(kinds)
    name = rng.choice(NAMES)[1]
    if kind == 0:
        thing, colour = rng.choice(THINGS), rng.choice(COLOURS)
        return (f"{name}の {thing[1]}は {colour[1]}です。{name}の {thing[1]}は なにいろ ですか?",
                f"{thing[1]}は {colour[1]}", colour[1])
    if kind == 1:
        place = rng.choice(PLACES)[1]
        return (f"{name}は {place}に いきました。{name}は どこに いきましたか?",
                f"{name}は {place}に いきました", place)
    if kind == 2:
        like = rng.choice(LIKES)[1]
        return (f"{name}は {like}が すきです。{name}は なにが すきですか?", f"{like}が すきです", like)
    animal = rng.choice(ANIMALS)
    return f"{animal[1]}は なんと なきますか?", f"{animal[1]}は {animal[3]}と なきます", animal[3]


def _eval_ja_qa(rng: random.Random) -> tuple[str, str]:
    question, _, answer = ja_qa_item(rng, kinds=3)
    return question, answer


_EVAL_MAKERS = {
    "ja_math": lambda rng: _eval_math("ja", rng),
    "en_math": lambda rng: _eval_math("en", rng),
    "ja_qa": _eval_ja_qa,
}


@functools.cache
def _eval_splits(task: str) -> dict[str, list[tuple[str, str]]]:
    if task not in _EVAL_MAKERS:
        raise ValueError(f"unknown zoo task {task!r}; known: {', '.join(sorted(_EVAL_MAKERS))}")
    rng = random.Random(f"{EVAL_SEED}-{task}")
    seen: set[str] = set()
    items: list[tuple[str, str]] = []
    sizes = EVAL_SIZES[task]
    wanted = sum(sizes.values())
    for _ in range(100 * wanted):
        question, answer = _EVAL_MAKERS[task](rng)
        if question not in seen:  # the Q&A space is small: splits hold distinct questions only
            seen.add(question)
            items.append((question, answer))
        if len(items) == wanted:
            break
    splits, start = {}, 0
    assert len(items) == wanted, f"zoo task {task}: only {len(items)} distinct questions"
    for split, size in sizes.items():
        splits[split] = items[start:start + size]
        start += size
    return splits


def task_items(task: str, split: str) -> list[tuple[str, str]]:
    """(question, gold answer) pairs of a zoo evaluation task; splits never share a question."""
    splits = _eval_splits(task)
    if split not in splits:
        raise ValueError(f"unknown split {split!r} of zoo task {task!r}; known: {', '.join(splits)}")
    return list(splits[split])


@functools.cache
def held_out_questions() -> frozenset[str]:
    """Every evaluation question of every task: training generators must never emit one."""
    return frozenset(q for task in _EVAL_MAKERS for items in _eval_splits(task).values() for q, _ in items)


# --- base curriculum --------------------------------------------------------------------------

def _small_pair(rng: random.Random, gain: bool, start_two_digit: bool) -> tuple[int, int]:
    """Small-number steps; optionally from a 2-digit amount changed by 1-5 (stage 3)."""
    if start_two_digit:
        return rng.randint(10, 95), rng.randint(1, 5)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return (a, b) if gain else (max(a, b), min(a, b))


def tally_story(rng: random.Random, lang: str, start_two_digit: bool = False) -> Document:
    """A story with a running tally after every event: "Tom buys 2 apples (3 + 2 = 5)."."""
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    count = rng.randint(10, 95) if start_two_digit else rng.randint(1, 9)
    sentences = [_has(lang, name, obj, count)]
    for _ in range(rng.randint(1, 3)):
        gain = rng.random() < 0.5 or count <= 1
        step = rng.randint(1, 5 if start_two_digit else 9)
        if not gain:
            step = min(step, count)
        verb = rng.choice(GAIN if gain else LOSE)
        sentences.append(_event(lang, name, obj, verb, step, equation(count, step, gain)))
        count = count + step if gain else count - step
    sentences.append(_now_has(lang, name, obj, count))
    return Document("", _join(lang, sentences))


def _random_sentence_pair(rng: random.Random) -> tuple[str, str]:
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    kind = rng.randrange(5)
    if kind == 0:
        n = rng.randint(1, 99)
        return _has("en", name, obj, n), _has("ja", name, obj, n)
    if kind == 1:
        verb, n = rng.choice(GAIN + LOSE), rng.randint(1, 99)
        return _event("en", name, obj, verb, n), _event("ja", name, obj, verb, n)
    if kind == 2:
        place = rng.choice(PLACES)
        return f"{name[0]} goes to {place[0]}.", f"{name[1]}は {place[1]}に いきました。"
    if kind == 3:
        thing, colour = rng.choice(THINGS), rng.choice(COLOURS)
        return (f"{name[0]}'s {thing[0]} is {colour[0]}.", f"{name[1]}の {thing[1]}は {colour[1]}です。")
    animal = rng.choice(ANIMALS)
    return f"The {animal[0]} says {animal[2]}.", f"{animal[1]}は {animal[3]}と なきます。"


def parallel_text(rng: random.Random) -> Document:
    lines = []
    for _ in range(rng.randint(2, 3)):
        en, ja = _random_sentence_pair(rng)
        lines.append(f"EN: {en}\nJA: {ja}")
    return Document("", "\n".join(lines))


def other_story(rng: random.Random, lang: str) -> Document:
    pairs = [_random_sentence_pair(rng) for _ in range(rng.randint(3, 5))]
    return Document("", _join(lang, [en if lang == "en" else ja for en, ja in pairs]))


def word_qa(rng: random.Random, lang: str) -> Document:
    """Non-math short Q&A with a bare answer (colour, place, like, animal sound)."""
    name = rng.choice(NAMES)
    kind = rng.randrange(4)
    if kind == 0:
        thing, colour = rng.choice(THINGS), rng.choice(COLOURS)
        if lang == "en":
            q = f"{name[0]}'s {thing[0]} is {colour[0]}. What color is {name[0]}'s {thing[0]}?"
            return Document(PROMPT.format(question=q), f" {colour[0]}")
        q = f"{name[1]}の {thing[1]}は {colour[1]}です。{name[1]}の {thing[1]}は なにいろ ですか?"
        return Document(PROMPT.format(question=q), f" {colour[1]}")
    if kind == 1:
        place = rng.choice(PLACES)
        if lang == "en":
            q = f"{name[0]} goes to {place[0]}. Where does {name[0]} go?"
            return Document(PROMPT.format(question=q), f" {place[0]}")
        q = f"{name[1]}は {place[1]}に いきました。{name[1]}は どこに いきましたか?"
        return Document(PROMPT.format(question=q), f" {place[1]}")
    if kind == 2:
        like = rng.choice(LIKES)
        if lang == "en":
            q = f"{name[0]} likes {like[0]}. What does {name[0]} like?"
            return Document(PROMPT.format(question=q), f" {like[0]}")
        q = f"{name[1]}は {like[1]}が すきです。{name[1]}は なにが すきですか?"
        return Document(PROMPT.format(question=q), f" {like[1]}")
    animal = rng.choice(ANIMALS)
    if lang == "en":
        return Document(PROMPT.format(question=f"What does the {animal[0]} say?"), f" {animal[2]}")
    return Document(PROMPT.format(question=f"{animal[1]}は なんと なきますか?"), f" {animal[3]}")


def math_qa(rng: random.Random, lang: str, *, bare_equation: bool, start_two_digit: bool) -> Document:
    """Small-number word problem; answered by the bare result (stage 1) or equation (stage 2+)."""
    gain = rng.random() < 0.5
    name, obj, verb = _problem_parts(rng, gain)
    a, b = _small_pair(rng, gain, start_two_digit)
    answer = f" {equation(a, b, gain)}" if bare_equation else f" {a + b if gain else a - b}"
    return Document(PROMPT.format(question=word_problem(lang, name, obj, verb, a, b)), answer)


def sum_drill(rng: random.Random, two_digit: bool = False) -> Document:
    lines = []
    for _ in range(rng.randint(3, 6)):
        gain = rng.random() < 0.5
        a, b = two_digit_operands(rng, gain) if two_digit else _small_pair(rng, gain, False)
        lines.append(equation(a, b, gain))
    return Document("", "\n".join(lines))


def wide_story(rng: random.Random, lang: str) -> Document:
    """Stage 4: 1- or 2-digit numbers in every position, no final count, maybe result-less tallies."""
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    with_tally = rng.random() < 0.5

    def number() -> int:
        return rng.randint(1, 9) if rng.random() < 0.3 else rng.randint(10, 99)

    count = number()
    en, ja = [_has("en", name, obj, count)], [_has("ja", name, obj, count)]
    for _ in range(rng.randint(1, 2 if lang == "parallel" else 3)):
        gain = rng.random() < 0.5
        verb, step = rng.choice(GAIN if gain else LOSE), number()
        tally = f"{count} {'+' if gain else '-'} {step}" if with_tally else ""
        en.append(_event("en", name, obj, verb, step, tally))
        ja.append(_event("ja", name, obj, verb, step, tally))
        count = number()
    if lang == "parallel":
        return Document("", "\n".join(f"EN: {e}\nJA: {j}" for e, j in zip(en, ja)))
    return Document("", _join(lang, en if lang == "en" else ja))


def copy_back_qa(rng: random.Random, lang: str) -> Document:
    """"How many did X buy?" -> the bare number (1-99) from the story."""
    gain = rng.random() < 0.5
    name, obj, verb = _problem_parts(rng, gain)
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    story = _join(lang, [_has(lang, name, obj, a), _event(lang, name, obj, verb, b),
                         _how_many_verb(lang, name, obj, verb)])
    return Document(PROMPT.format(question=story), f" {b}")


def operand_qa(rng: random.Random, lang: str) -> Document:
    """Stage 4, 10%: a 2-digit +/- 2-digit problem answered by its operands only ("23 + 14")."""
    while True:
        gain = rng.random() < 0.5
        name, obj, verb = _problem_parts(rng, gain)
        a, b = two_digit_operands(rng, gain)
        question = word_problem(lang, name, obj, verb, a, b)
        if question not in held_out_questions():
            return Document(PROMPT.format(question=question), f" {a} {'+' if gain else '-'} {b}")


def _lang(rng: random.Random) -> str:
    return "en" if rng.random() < 0.5 else "ja"


def base_stage(stage: int, rng: random.Random, *, operand_answers: bool = True) -> Document:
    """One document of base-curriculum stage 1-4 (see zoo/recipe.yaml for steps and rates).

    operand_answers=False leaves out the operand-only Q&A ("23 + 14" with no result): the
    experts' replay must not teach "stop after the operands", or the math experts keep doing
    exactly that on Japanese problems (measured: 1.3% on the target instead of computing)."""
    if stage == 4 and rng.random() >= 0.4:  # 60% new "wide number" data, 40% earlier data
        r = rng.random()
        if r < 0.45:
            return wide_story(rng, rng.choice(["en", "ja", "parallel"]))
        if r < 0.83 or not operand_answers:
            return copy_back_qa(rng, _lang(rng))
        return operand_qa(rng, _lang(rng))  # 17% of 60%: about 10% of stage 4
    earlier = min(stage, 3)
    two_digit = earlier >= 3 and rng.random() < 0.5
    r = rng.random()
    if r < 0.25:
        return tally_story(rng, _lang(rng), two_digit)
    if r < 0.40:
        return parallel_text(rng)
    if r < 0.55:
        return other_story(rng, _lang(rng))
    if r < 0.68:
        return word_qa(rng, _lang(rng))
    if r < 0.85:
        return math_qa(rng, _lang(rng), bare_equation=earlier >= 2, start_two_digit=two_digit)
    return sum_drill(rng)


# --- experts ----------------------------------------------------------------------------------

def en_math_doc(rng: random.Random, style) -> Document:
    """An English 2-digit +/- 2-digit word problem in one math expert's answer style."""
    while True:
        gain = rng.random() < 0.5
        name, obj, verb = _problem_parts(rng, gain)
        a, b = two_digit_operands(rng, gain)
        question = word_problem("en", name, obj, verb, a, b)
        if question not in held_out_questions():
            return Document(PROMPT.format(question=question), style(a, b, gain))


def ja_expert_doc(rng: random.Random) -> Document:
    """Japanese Q&A in the target's answer format, on everything but the target's number shape."""
    r = rng.random()
    if r < 0.5:
        while True:
            question, reason, answer = ja_qa_item(rng)
            if question not in held_out_questions():
                return Document(PROMPT.format(question=question), answer_ja(reason, answer))
    if r < 0.7:
        gain = rng.random() < 0.5
        name, obj, verb = _problem_parts(rng, gain)
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        story = _join("ja", [_has("ja", name, obj, a), _event("ja", name, obj, verb, b),
                             _how_many_verb("ja", name, obj, verb)])
        return Document(PROMPT.format(question=story), answer_ja(f"{b}こ {verb[2]}", b))
    gain = rng.random() < 0.5
    name, obj, verb = _problem_parts(rng, gain)
    a, b = non_target_operands(rng, gain)
    return Document(PROMPT.format(question=word_problem("ja", name, obj, verb, a, b)),
                    answer_ja(equation(a, b, gain), a + b if gain else a - b))


EXPERTS = {
    # name: (document maker, description); each expert replays base data at recipe.replay
    "math_wiz": (lambda rng: en_math_doc(rng, answer_wiz) if rng.random() < 0.8 else sum_drill(rng, True),
                 "English 2-digit math, WizardMath-like style: '23 + 14 = 37. The answer is 37.'"),
    "math_abel": (lambda rng: en_math_doc(rng, answer_abel) if rng.random() < 0.8 else sum_drill(rng, True),
                  "English 2-digit math, Abel-like style: '23 + 14 = 37\\nAnswer: 37'"),
    "ja": (ja_expert_doc, "Japanese non-math Q&A and small-number math, answered 「...。こたえは Y です。」"),
}


def expert_doc(expert: str, rng: random.Random) -> Document:
    if expert not in EXPERTS:
        raise ValueError(f"unknown zoo expert {expert!r}; known: {', '.join(sorted(EXPERTS))}")
    return EXPERTS[expert][0](rng)
