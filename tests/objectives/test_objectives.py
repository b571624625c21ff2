"""Registered objectives: registry, oracle scoring on real MGSM-JA, the paper's metric against the
released code, isolation, bad input, hot path."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import objectives
from objectives import AnswerMatchObjective, NumericAnswerObjective, greedy_generate
from zoo.world import PROMPT

ROWS = [("ねこは なんびき？", "3"), ("いぬは なんびき？", "2,125"), ("とりは なんわ？", "7")]
MGSM_METRICS = ["acc", "acc_ja", "paper_acc", "paper_acc_ja"]
# outputs scored by a re-implementation of the paper's released evaluation (make_mgsm_released_cases.py)
RELEASED_CASES = Path(__file__).resolve().parent / "data" / "mgsm_released_cases.jsonl"


@pytest.fixture(scope="module")
def mgsm(mgsm_ja_tsv):
    from zoo.tokenizer import build_tokenizer

    return objectives.build("mgsm_ja", tokenizer=build_tokenizer(),
                            splits={"test": {"source": "tsv", "path": mgsm_ja_tsv}})


def tsv_objective(name, tok, write_tsv, rows=ROWS, **kwargs):
    return objectives.build(name, tokenizer=tok, splits={"search": {"source": "tsv", "path": write_tsv(rows)}},
                            **kwargs)


# -- registry ---------------------------------------------------------------------------------

def test_registry():
    assert objectives.names() == ["answer_match", "ja_vqa", "lm_eval", "mgsm_ja"]
    assert objectives.get("ja_vqa") is objectives.VQAObjective
    assert objectives.get("mgsm_ja") is NumericAnswerObjective
    assert objectives.get("answer_match") is AnswerMatchObjective
    with pytest.raises(ValueError, match="unknown objective 'mgsm'; known: answer_match, ja_vqa, lm_eval, mgsm_ja"):
        objectives.build("mgsm", tokenizer=None, splits={})


# -- oracle answer sheets on the real MGSM-JA test set ---------------------------------------

def test_real_mgsm_ja_japanese_oracle_scores_one(mgsm):
    golds = [answer for _, answer in mgsm.items("test")]
    assert len(golds) == 250 and sum("," in g for g in golds) == 4  # 2,125 114,200 276,000 5,600
    sheet = [f"{q[:20]}……順番に計算します。なので、答えは {g} です。" for q, g in mgsm.items("test")]
    # the paper's regex reads "2,125" as 125: the 4 golds written with a comma are wrong there
    assert mgsm.score_outputs(sheet, "test") == {"acc": 1.0, "acc_ja": 1.0, "paper_acc": 246 / 250,
                                                 "paper_acc_ja": 246 / 250, "n": 250}


def test_real_mgsm_ja_english_oracle_is_right_but_not_japanese(mgsm):
    sheet = [f"Let me compute step by step. So the answer is {g}." for _, g in mgsm.items("test")]
    assert mgsm.score_outputs(sheet, "test") == {"acc": 1.0, "acc_ja": 0.0, "paper_acc": 246 / 250,
                                                 "paper_acc_ja": 0.0, "n": 250}


def test_real_mgsm_ja_wrong_and_partial_sheets(mgsm):
    items = mgsm.items("test")
    off_by_one = [f"答えは {int(g.replace(',', '')) + 1} です。" for _, g in items]
    assert mgsm.score_outputs(off_by_one, "test")["acc"] == 0.0
    # the first 100 right in Japanese, the next 50 right in English, the rest without a number
    sheet = ([f"答えは {g} です。" for _, g in items[:100]] + [f"The answer is {g}." for _, g in items[100:150]]
             + ["わかりません。"] * 100)
    # item 146 (2,125, answered in English) is the one comma gold among the right answers
    assert mgsm.score_outputs(sheet, "test") == {"acc": 150 / 250, "acc_ja": 100 / 250, "paper_acc": 149 / 250,
                                                 "paper_acc_ja": 100 / 250, "n": 250}
    records = mgsm.records(sheet, "test")
    assert records[0]["prediction"] == "18" and records[0]["correct"] and records[0]["japanese"]
    assert records[0]["paper_prediction"] == 18.0 and records[0]["paper_correct"]
    assert records[146]["prediction"] == "2125" and records[146]["paper_prediction"] == 125.0
    assert records[146]["correct"] and not records[146]["paper_correct"]
    assert records[200]["prediction"] is None and not records[200]["correct"]
    assert records[200]["paper_prediction"] is None and not records[200]["paper_correct"]


def test_mgsm_ja_defaults_are_the_papers(mgsm):
    assert mgsm.prompt_template == objectives.MGSM_JA_PROMPT_TEMPLATE
    assert mgsm.stop_strings == ("Instruction:", "Instruction", "Response:", "Response")
    assert mgsm.max_new_tokens == 1024
    assert mgsm.default_fitness == "acc_ja" and [m.name for m in mgsm.metrics] == MGSM_METRICS


def test_score_outputs_checks_length_and_split(mgsm):
    with pytest.raises(ValueError, match="has 250 items but got 2 outputs"):
        mgsm.score_outputs(["1", "2"], "test")
    with pytest.raises(ValueError, match="unknown split 'search'; known: test"):
        mgsm.score_outputs([], "search")


# -- the paper's metric against the released code -------------------------------------------

def released_cases():
    return [json.loads(line) for line in RELEASED_CASES.read_text(encoding="utf-8").splitlines()]


def test_released_code_cases_both_metrics(tok, write_tsv):
    """The released-code set (74 adversarial outputs, tests/objectives/data, scored by
    make_mgsm_released_cases.py's re-implementation of Sakana's ja_mgsm.py + fastText lid.176):
    paper_acc and paper_acc_ja equal the released code's item by item, with the real fastText
    detector; acc differs from paper_acc on 18 items, each where the issue says it should."""
    cases = released_cases()
    assert len(cases) >= 60
    obj = tsv_objective("mgsm_ja", tok, write_tsv, [(f"問題 {i}", c["answer"]) for i, c in enumerate(cases)],
                        language_detector="fasttext")
    outputs = [c["output"] for c in cases]
    scores = obj.item_scores(outputs, "search")
    records = obj.records(outputs, "search")
    for case, record, paper, paper_ja in zip(cases, records, scores["paper_acc"], scores["paper_acc_ja"]):
        released = case["released"]
        assert (paper, paper_ja) == (released["acc"], released["acc_ja"]), case
        assert record["paper_prediction"] == released["prediction"], case
        assert record["japanese"] == (released["ja_probability"] > 0.5), case
    by_case = {c["case"]: (acc, paper) for c, acc, paper in zip(cases, scores["acc"], scores["paper_acc"])}
    differ = sorted(name for name, (acc, paper) in by_case.items() if acc != paper)
    # (acc, paper_acc): the project reads separators, minus signs, full-width points and exact
    # decimals; the released regex does not
    assert {name: by_case[name] for name in differ} == {
        "separator ja": (1, 0), "separator en": (1, 0), "separator 1,000": (1, 0), "separator six digits": (1, 0),
        "separator two groups": (1, 0), "separator with decimals": (1, 0), "separator after a dollar sign": (1, 0),
        "full-width separator": (1, 0), "full-width 1,000": (1, 0), "full-width decimal point": (1, 0),
        "two dots": (1, 0), "integer above 2**53": (1, 0), "negative": (1, 0), "minus sign U+2212": (1, 0),
        "full-width minus": (1, 0), "negative decimal": (1, 0),
        "negative output, positive gold": (0, 1), "float noise beyond double": (0, 1)}
    ja_differ = sum(a != b for a, b in zip(scores["acc_ja"], scores["paper_acc_ja"]))
    assert ja_differ == 16  # the 18 less the two in English ("So the answer is 2,125.", "The total is $1,200.")
    # both metrics read the unit and circled-number cases as 25
    for name in ("square metres", "square metre symbol", "cubic centimetres", "circled number after",
                 "leading-dot decimal", "leading-dot decimal, no space"):
        assert by_case[name] == (1, 1), name


def zoo_study_config(tmp_path, dirs, *overrides):
    """The default study (zoo_ja_math objective) on the tiny models: 2 trials, 4 problems, 4 tokens."""
    from hydra import compose, initialize_config_dir

    from evo_core import register_resolvers
    from evo_ps import validate

    register_resolvers()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"):
        return validate(compose("config", overrides=[
            f"pool.base={dirs['base']}", f"pool.sources.ja={dirs['src_a']}", f"pool.sources.math_wiz={dirs['src_b']}",
            f"pool.sources.math_abel={dirs['src_c']}", f"run_dir={tmp_path / 'run'}",
            f"tracking.mlruns_dir={tmp_path / 'mlruns'}", "n_trials=2", "space.warm_start_trials=0",
            "objective.options.max_new_tokens=4", "objective.search.limit=4", "+objective.test.limit=4", *overrides]))


def test_fitness_paper_acc_ja_is_a_config_key(tmp_path, tiny_model_dirs):
    """objective.fitness=paper_acc_ja: the study maximises the paper's metric; every trial keeps
    all four metrics per item and the test table shows all four."""
    import optuna

    from evo_core import run_study
    from evo_ps import PSSearch

    cfg = zoo_study_config(tmp_path, tiny_model_dirs, "objective.fitness=paper_acc_ja")
    table = run_study(cfg, PSSearch(cfg), resolved="")
    assert all(set(row) == set(MGSM_METRICS) for row in table.values())
    study = optuna.load_study(study_name=cfg.study_name, storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert len(study.trials) == 2
    for trial in study.trials:
        items = trial.user_attrs["item_scores"]
        assert set(items) == set(MGSM_METRICS) and len(items["paper_acc_ja"]) == 4
        assert trial.values[0] == pytest.approx(sum(items["paper_acc_ja"]) / 4)
    samples = (tmp_path / "run" / "samples" / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    assert all({"prediction", "paper_prediction", "paper_correct"} <= set(json.loads(line)) for line in samples)


def test_unknown_fitness_is_refused_naming_the_metrics(tmp_path, tiny_model_dirs):
    from evo_core import run_study
    from evo_ps import PSSearch

    cfg = zoo_study_config(tmp_path, tiny_model_dirs, "objective.fitness=paper_acc_jp")
    with pytest.raises(ValueError, match="objective.fitness 'paper_acc_jp' is not a metric of objective 'mgsm_ja'; "
                                         "known: acc, acc_ja, paper_acc, paper_acc_ja"):
        run_study(cfg, PSSearch(cfg), resolved="")


# -- scoring a model --------------------------------------------------------------------------

class CountingTokenizer:
    """Delegates to a tokenizer, counting encode calls (there must be none per trial)."""

    def __init__(self, inner):
        self.inner, self.encodes = inner, 0

    def __call__(self, *args, **kwargs):
        self.encodes += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_score_model_without_data_or_tokenizer_work(tiny_model, tok, write_tsv):
    counting = CountingTokenizer(tok)
    path = write_tsv(ROWS)
    obj = objectives.build("mgsm_ja", tokenizer=counting, splits={"search": {"source": "tsv", "path": path}},
                           prompt_template="Q: {question}\nA:", max_new_tokens=6, batch_size=2,
                           stop_strings=["\n"])
    encodes = counting.encodes
    path.unlink()  # scoring must not read the data again
    outputs = obj.generate(tiny_model, "search")
    metrics = obj.score(tiny_model, "search")
    assert counting.encodes == encodes
    prompts = [f"Q: {q}\nA:" for q, _ in ROWS]
    assert outputs == greedy_generate(tiny_model, tok, prompts, max_new_tokens=6, stop_strings=["\n"], batch_size=3)
    assert metrics == obj.score_outputs(outputs, "search")
    assert set(metrics) == {m.name for m in obj.metrics} | {"n"} and metrics["n"] == 3
    assert 0.0 <= metrics["acc_ja"] <= metrics["acc"] <= 1.0


# -- answer_match -----------------------------------------------------------------------------

QA_ROWS = [("ねこは なにを たべる？", "さかな"), ("いぬは なんと なく？", "わん")]


def test_answer_match_default_pattern(tok, write_tsv):
    obj = tsv_objective("answer_match", tok, write_tsv, QA_ROWS)
    right = ["ねこは さかなが すきです。こたえは さかな です。", "こたえは わん です。"]
    assert obj.score_outputs(right, "search") == {"acc": 1.0, "acc_ja": 1.0, "n": 2}
    # the last capture counts; no capture counts as wrong
    assert obj.score_outputs(["こたえは さかな です。こたえは にく です。", "わん"], "search")["acc"] == 0.0


def test_answer_match_custom_pattern(tok, write_tsv):
    obj = tsv_objective("answer_match", tok, write_tsv, [("What do cats eat?", "fish")],
                        answer_pattern=r"answer is (\w+)")
    assert obj.score_outputs(["The answer is fish."], "search") == {"acc": 1.0, "acc_ja": 0.0, "n": 1}
    with pytest.raises(ValueError, match="exactly one capture group"):
        tsv_objective("answer_match", tok, write_tsv, QA_ROWS, answer_pattern=r"answer is \w+")


# -- isolation and bad input ------------------------------------------------------------------

def test_overlapping_splits_are_refused(tok, write_tsv):
    search = write_tsv(ROWS, "search.tsv")
    test = write_tsv([("いぬは  なんびき？", "2,125"), ("べつの もんだい", "1")], "test.tsv")
    splits = {"search": {"source": "tsv", "path": search}, "test": {"source": "tsv", "path": test}}
    with pytest.raises(ValueError, match=r"^splits 'search' and 'test' share 1 problem\(s\), e\.g\. 'いぬは") as err:
        objectives.build("mgsm_ja", tokenizer=tok, splits=splits)
    assert "\n" not in str(err.value)
    obj = objectives.build("mgsm_ja", tokenizer=tok, splits=splits, allow_overlap=True)
    assert obj.split_names() == ["search", "test"]


def test_bad_inputs(tok, write_tsv, tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found"):
        objectives.build("mgsm_ja", tokenizer=tok, splits={"test": {"source": "tsv", "path": tmp_path / "x.tsv"}})
    with pytest.raises(ValueError, match="0 items"):
        tsv_objective("mgsm_ja", tok, write_tsv, [])
    with pytest.raises(ValueError, match="row has no TAB"):
        tsv_objective("mgsm_ja", tok, write_tsv, ["question without answer"])
    with pytest.raises(ValueError, match="split 'search' item 1: gold answer 'たくさん' is not a number"):
        tsv_objective("mgsm_ja", tok, write_tsv, [("q", "1"), ("q2", "たくさん")])
    with pytest.raises(ValueError, match="neither a known name"):
        tsv_objective("mgsm_ja", tok, write_tsv, prompt_template="Q: {input}")
    with pytest.raises(ValueError, match="unknown language detector"):
        tsv_objective("mgsm_ja", tok, write_tsv, language_detector="cld3")
    with pytest.raises(ValueError, match="must be a list of strings"):
        tsv_objective("mgsm_ja", tok, write_tsv, stop_strings="\n")
    with pytest.raises(ValueError, match="at least one split"):
        objectives.build("mgsm_ja", tokenizer=tok, splits={})


def test_chat_template_wraps_the_filled_prompt(tok, write_tsv):
    with pytest.raises(ValueError, match="the tokenizer has no chat template"):
        tsv_objective("mgsm_ja", tok, write_tsv, prompt_template="plain", chat_template=True)
    chat = copy.deepcopy(tok)
    chat.chat_template = ("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
                          "{% if add_generation_prompt %}[assistant]{% endif %}")
    obj = tsv_objective("mgsm_ja", chat, write_tsv, prompt_template="Q: {question}", chat_template=True)
    assert obj.prompt_ids(ROWS[0][0]) == chat(f"[user]Q: {ROWS[0][0]}[assistant]")["input_ids"]
    plain = tsv_objective("mgsm_ja", chat, write_tsv, prompt_template="Q: {question}")
    assert plain.prompt_ids(ROWS[0][0]) == chat(f"Q: {ROWS[0][0]}")["input_ids"]


def test_generation_backends_are_registered_by_name(tok, write_tsv):
    assert {"hf_greedy", "fast_greedy", "hf_generate"} <= set(objectives.GENERATION_BACKENDS)
    # vLLM until a study can load its merges into the engine: refused before any data is read
    with pytest.raises(ValueError, match=r"^generation backend 'vllm' is not available: a study merges each trial in "
                                         r"memory, and nothing loads those weights into a vLLM engine yet"):
        objectives.build("mgsm_ja", tokenizer=tok, splits={"search": {"source": "tsv", "path": "/no/such.tsv"}},
                         generation_backend="vllm")
    with pytest.raises(ValueError, match="unknown generation backend 'nosuch'; known: .*fast_greedy"):
        tsv_objective("mgsm_ja", tok, write_tsv, generation_backend="nosuch")
    with pytest.raises(ValueError, match="unknown prompt template 'nosuch'|neither a known name"):
        tsv_objective("mgsm_ja", tok, write_tsv, prompt_template="nosuch")


def test_templates_and_script_detector(tok, write_tsv):
    obj = tsv_objective("mgsm_ja", tok, write_tsv, prompt_template='{"q": "{question}"}',
                        language_detector="script")
    assert obj.prompt_template == '{"q": "{question}"}'
    sheet = [f"こたえは {g} です。" for _, g in ROWS]
    # ROWS holds 2,125: the paper's regex reads it as 125
    assert obj.score_outputs(sheet, "search") == {"acc": 1.0, "acc_ja": 1.0, "paper_acc": 2 / 3,
                                                  "paper_acc_ja": 2 / 3, "n": 3}


# -- the zoo's tasks -------------------------------------------------------------------------

@pytest.mark.parametrize("objective, task, sheet", [
    ("mgsm_ja", "ja_math", "けいさんすると、こたえは {} です。"),
    ("mgsm_ja", "en_math", "So the answer is {}."),
    ("answer_match", "ja_qa", "よく かんがえます。こたえは {} です。"),
])
def test_zoo_tasks(objective, task, sheet, tok):
    obj = objectives.build(objective, tokenizer=tok, prompt_template=PROMPT,
                           splits={s: {"source": "zoo", "task": task, "split": s} for s in ("search", "test")})
    for split in obj.split_names():
        metrics = obj.score_outputs([sheet.format(a) for _, a in obj.items(split)], split)
        assert metrics["acc"] == 1.0
        assert metrics["acc_ja"] == (0.0 if task == "en_math" else 1.0)


def test_hydra_config_values(tok, write_tsv):
    """Splits and stop strings straight from a Hydra/OmegaConf config."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"splits": {"search": {"source": "tsv", "path": str(write_tsv(ROWS)), "limit": 2}},
                            "stop_strings": ["\n\n"], "prompt_template": "ja_alpaca_cot"})
    obj = objectives.build("mgsm_ja", tokenizer=tok, splits=cfg.splits, stop_strings=cfg.stop_strings,
                           prompt_template=cfg.prompt_template)
    assert obj.items("search") == ROWS[:2] and obj.stop_strings == ("\n\n",)


def test_scoring_a_subset_equals_the_whole_split_restricted_to_it(tok):
    # racing's blocks (evaluation=racing): a zoo math expert (right on most items, never Japanese)
    # on 40 search problems, whole vs items [30, 3, 17, ...]: the same outputs and per-item scores,
    # batches planned once per subset from the prompts tokenized at construction
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(Path(__file__).resolve().parents[2] / "zoo" / "models" / "math_wiz").eval()
    counting = CountingTokenizer(tok)
    obj = objectives.build("mgsm_ja", tokenizer=counting, prompt_template=PROMPT, max_new_tokens=40,
                           stop_strings=["\n"], batch_size=16,
                           splits={"search": {"source": "zoo", "task": "ja_math", "split": "search", "limit": 40}})
    encodes = counting.encodes
    whole_outputs = obj.generate(model, "search")
    whole = obj.score_items(model, "search")
    assert obj.n_items("search") == 40 and 0 < sum(whole["acc"]) < 40  # not a trivial all-0 or all-1 case
    items = [30, 3, 17, 0, 39, 8, 22]
    assert obj.generate(model, "search", items) == [whole_outputs[i] for i in items]
    subset = obj.score_items(model, "search", items=items)
    assert subset == {metric: [scores[i] for i in items] for metric, scores in whole.items()}
    assert 0 < obj.last_work["generated_tokens"] < 40 * 40 and counting.encodes == encodes
    obj.score_items(model, "search", items=items)
    assert len(obj._split("search").subsets) == 1  # planned once, reused by every later trial
    for bad in ([40], [1, 1], []):
        with pytest.raises(ValueError, match="must be distinct indices in 0..39"):
            obj.score_items(model, "search", items=bad)
