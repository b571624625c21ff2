"""Issue 10, "nothing lost, nothing mixed, one line for every bad input": each fault of
docs/faults.md, provoked in-process on the tiny models (seconds, not a subprocess per case)."""
from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import optuna
import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file, save_file

from evo_core import (ParamSpec, Tracker, check_signature, load_models, load_pool, make_sampler, model_fingerprint,
                      open_study, register_resolvers, run_cli, run_study, run_trials)
from evo_core._files import SCHEMA_ATTEMPTS, open_store
from evo_ps import PSSearch, save_merged, validate
from objectives import load_split, question_key

REPO_ROOT = Path(__file__).resolve().parents[2]
SPACE = [ParamSpec(name="a", low=0.0, high=1.0)]


def tiny_study(tmp_path, dirs) -> list[str]:
    """Overrides for a 2-trial PS study of the tiny models on 4 problems."""
    return [f"pool.base={dirs['base']}", f"pool.sources.ja={dirs['src_a']}", f"pool.sources.math_wiz={dirs['src_b']}",
            "~pool.sources.math_abel", f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
            "n_trials=2", "space.warm_start_trials=0", "objective.options.max_new_tokens=4", "objective.search.limit=4",
            "+objective.test.limit=4", "merge=task_arithmetic"]


def ps_config(tmp_path, dirs, *overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*tiny_study(tmp_path, dirs), *overrides])


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def random_study(tmp_path, name="s"):
    return open_study(name=name, storage_url=f"sqlite:///{tmp_path / 'study.db'}",
                      sampler=make_sampler("random", space=SPACE, seed=0))


# ---- 1. one error boundary ------------------------------------------------------------------------

def test_an_unexpected_error_is_a_short_traceback_and_one_line(capsys):
    def validate_deeply(cfg):
        def inner():
            raise RuntimeError("boom")
        inner()

    with pytest.raises(SystemExit) as exit:
        run_cli({}, validate=validate_deeply, search=None)
    assert str(exit.value.code) == "error: unexpected RuntimeError: boom"
    err = capsys.readouterr().err
    assert "Traceback" in err and "inner" in err and err.count('File "') <= 4


def test_a_multi_line_message_is_one_line():
    def validate_badly(cfg):
        raise ValueError("dataset 'x' has no split 'tset'\n  known splits:\n  train, test")

    with pytest.raises(SystemExit) as exit:
        run_cli({}, validate=validate_badly, search=None)
    assert str(exit.value.code) == "error: dataset 'x' has no split 'tset' known splits: train, test"


def test_an_os_error_is_one_line_naming_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")

    def open_tracker(cfg):
        Tracker(mlruns_dir=blocker / "mlruns", experiment="x")

    with pytest.raises(SystemExit) as exit:
        run_cli({}, validate=open_tracker, search=None)
    assert str(exit.value.code).startswith(f"error: {blocker / 'mlruns'}: ")


def test_an_unwritable_mlruns_is_one_line_naming_the_key_and_path(tmp_path, monkeypatch):
    monkeypatch.setattr("os.access", lambda path, mode: False)  # as root, chmod would not stop a write

    with pytest.raises(SystemExit) as exit:
        run_cli({}, validate=lambda cfg: Tracker(mlruns_dir=tmp_path / "mlruns", experiment="x"), search=None)
    assert str(exit.value.code) == f"error: {tmp_path / 'mlruns'}: not writable (tracking.mlruns_dir)"


def test_a_failed_export_closes_the_mlflow_run_as_failed_and_writes_no_table(tmp_path, tiny_model_dirs, monkeypatch):
    from mlflow.tracking import MlflowClient

    def broken_export(self, best, study, table):
        raise RuntimeError("disk full")

    monkeypatch.setattr(PSSearch, "export", broken_export)
    cfg = validate(ps_config(tmp_path, tiny_model_dirs, "n_trials=1"))
    with pytest.raises(RuntimeError, match="disk full"):
        run_study(cfg, PSSearch(cfg), resolved="")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    parents = [r for r in client.search_runs([client.get_experiment_by_name("evo_ps").experiment_id])
               if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parents] == ["FAILED"]
    assert not (tmp_path / "run" / "test_table.json").exists(), "the table only after the weights"


# ---- 2. checks before any model loads --------------------------------------------------------------

@pytest.mark.parametrize("device, message", [("cuda", "pool.device=cuda but this machine has no CUDA device"),
                                             ("gpu", "pool.device=gpu is not a torch device")])
def test_an_unusable_device_is_one_line_before_any_model_loads(tmp_path, cli_error, tiny_model_dirs, device, message):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = cli_error("evo_ps", *tiny_study(tmp_path, tiny_model_dirs), f"pool.device={device}")
    assert line.startswith(f"error: {message}"), line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("keep", [0, 0.5])
def test_a_truncated_or_empty_safetensors_is_one_line(tmp_path, tiny_model_dirs, keep):
    bad = copy_model(tiny_model_dirs["src_b"], tmp_path / "src_b")
    weights = bad / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ValueError, match=f"model 'b': {weights}"):
        load_models({"a": tiny_model_dirs["src_a"], "b": bad})


def rewrite_vocab(model_dir: Path, change) -> None:
    path = model_dir / "tokenizer.json"
    spec = json.loads(path.read_text())
    change(spec["model"]["vocab"])
    path.write_text(json.dumps(spec))


def swap_two(vocab):
    (a, i), (b, j) = list(vocab.items())[10:12]
    vocab[a], vocab[b] = j, i


def add_fifty(vocab):
    vocab.update({f"<extra{k}>": len(vocab) + k for k in range(50)})


@pytest.mark.parametrize("change", [swap_two, add_fifty])
def test_a_source_with_another_tokenizer_is_refused(tmp_path, tiny_model_dirs, change):
    other = copy_model(tiny_model_dirs["src_b"], tmp_path / "src_b")
    rewrite_vocab(other, change)
    with pytest.raises(ValueError, match="model 'math'.*tokenizer.*'base'"):
        load_pool(base=tiny_model_dirs["base"], sources={"ja": tiny_model_dirs["src_a"], "math": other})
    with pytest.raises(ValueError, match="model 'math'.*tokenizer.*'A'"):
        load_models({"A": tiny_model_dirs["src_a"], "math": other}, same_shapes=False)


@pytest.mark.parametrize("spoil, message", [
    (lambda model: (model / "model.safetensors").write_bytes(b""), "model 'math_wiz': {model}/model.safetensors"),
    (lambda model: rewrite_vocab(model, add_fifty), "model 'math_wiz': its tokenizer vocabulary differs from 'base''s"),
], ids=["empty_safetensors", "fifty_extra_tokens"])
def test_a_spoilt_source_is_one_line_from_the_command(tmp_path, tiny_model_dirs, cli_error, spoil, message):
    model = copy_model(tiny_model_dirs["src_b"], tmp_path / "src_b")
    spoil(model)
    line = cli_error("evo_ps", *tiny_study(tmp_path, tiny_model_dirs), f"pool.sources.math_wiz={model}")
    assert line.startswith("error: " + message.format(model=model)), line
    assert not (tmp_path / "run" / "study.db").exists()


@pytest.mark.parametrize("content, message", [("", "is empty"),
                                              ('{"question": "1+1", "answer_number"\n', "cannot read")])
def test_an_empty_or_malformed_jsonl_is_one_line(tmp_path, content, message):
    path = tmp_path / "search.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        load_split("search", str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_latin1_tsv_names_the_file_and_line(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_bytes("1+1\t2\n2+2\t4\ncaf\u00e9?\t3\n".encode("latin-1"))
    with pytest.raises(ValueError, match=f"{path}:3: not UTF-8"):
        load_split("test", str(path))


# ---- 3. non-finite weights and values ---------------------------------------------------------------

def test_a_source_with_nan_fails_at_load_naming_model_and_tensor(tmp_path, tiny_model_dirs):
    bad = copy_model(tiny_model_dirs["src_b"], tmp_path / "src_b")
    weights = load_file(bad / "model.safetensors")
    weights["model.norm.weight"][3] = float("nan")
    save_file(weights, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="model 'math': tensor model.norm.weight has 1 non-finite"):
        load_pool(base=tiny_model_dirs["base"], sources={"ja": tiny_model_dirs["src_a"], "math": bad})


def test_failing_trials_record_why_in_optuna_and_mlflow_and_the_study_goes_on(tmp_path):
    def evaluate(params, number):
        if number == 0:
            raise RuntimeError("out of memory")
        return {"acc_ja": float("inf") if number == 1 else 0.5}

    tracker = Tracker(mlruns_dir=tmp_path / "mlruns", experiment="x")
    tracker.start(run_id=None, run_name="s", params={})
    study = random_study(tmp_path)
    run_trials(study, space=SPACE, evaluate=evaluate, fitness=["acc_ja"], n_trials=3, on_trial=[tracker.log_trial])
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "FAIL", "COMPLETE"]
    assert study.trials[0].user_attrs["fail_reason"] == "RuntimeError: out of memory"
    assert "acc_ja" in study.trials[1].user_attrs["fail_reason"]
    assert {r.data.tags.get("fail_reason") for r in tracker.client.search_runs([tracker.experiment_id])} == {
        "RuntimeError: out of memory", "ValueError: non-finite fitness acc_ja=inf", None}


def test_a_non_finite_merge_fails_its_trial_and_the_study_goes_on(tmp_path, tiny_model_dirs):
    from transformers import AutoTokenizer

    cfg = validate(ps_config(tmp_path, tiny_model_dirs))
    search = PSSearch(cfg)
    search.check()
    search.load(AutoTokenizer.from_pretrained(cfg.pool.base))
    candidate = search._candidate(search.space)
    poisoned = {"done": False}
    apply = search.merger.apply

    def apply_once_poisoned(params, seed):
        apply(params, seed=seed)
        if not poisoned["done"]:
            poisoned["done"] = True
            with torch.no_grad():
                search.pool.model.model.norm.weight[0] = float("inf")

    search.merger.apply = apply_once_poisoned
    study = random_study(tmp_path)
    run_trials(study, space=search.space.params, fitness=["acc_ja"], n_trials=2,
               evaluate=lambda values, number: {"acc_ja": 0.0, **candidate(values, number)[1]})
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert "model.norm.weight" in study.trials[0].user_attrs["fail_reason"]


# ---- 4. resume signature ----------------------------------------------------------------------------

def signature_of(tmp_path, dirs, *overrides):
    from transformers import AutoTokenizer

    cfg = validate(ps_config(tmp_path, dirs, *overrides))
    search = PSSearch(cfg)
    search.check()
    search.load(AutoTokenizer.from_pretrained(cfg.pool.base))
    return search.signature()


def test_a_resume_with_replaced_weights_or_another_method_is_refused(tmp_path, tiny_model_dirs):
    dirs = {name: copy_model(path, tmp_path / name) for name, path in tiny_model_dirs.items()}
    study = random_study(tmp_path)
    check_signature(study, signature_of(tmp_path, dirs), "db")
    check_signature(study, signature_of(tmp_path, dirs), "db")  # the same models: resumes
    shutil.copyfile(tiny_model_dirs["src_c"] / "model.safetensors", dirs["src_b"] / "model.safetensors")
    with pytest.raises(ValueError, match="model_hashes"):
        check_signature(study, signature_of(tmp_path, dirs), "db")
    shutil.copyfile(tiny_model_dirs["src_b"] / "model.safetensors", dirs["src_b"] / "model.safetensors")
    with pytest.raises(ValueError, match="method 'task_arithmetic' \\(now 'ties'\\)"):
        check_signature(study, signature_of(tmp_path, dirs, "merge=ties"), "db")


def test_model_fingerprint_sees_the_weights_not_the_place(tmp_path, tiny_model_dirs):
    copy = copy_model(tiny_model_dirs["src_a"], tmp_path / "copy")
    assert model_fingerprint(str(copy)) == model_fingerprint(str(tiny_model_dirs["src_a"]))
    weights = load_file(copy / "model.safetensors")
    weights["model.norm.weight"][0] += 1.0  # one value, same shapes and sizes
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert model_fingerprint(str(copy)) != model_fingerprint(str(tiny_model_dirs["src_a"]))


def test_a_study_recorded_before_model_hashes_resumes_and_records_them(tmp_path):
    study = random_study(tmp_path)
    check_signature(study, {"method": "ties"}, "db")
    check_signature(study, {"method": "ties", "model_hashes": {"a": "1"}}, "db")
    assert study.user_attrs["signature"]["model_hashes"] == {"a": "1"}
    with pytest.raises(ValueError, match="model_hashes"):
        check_signature(study, {"method": "ties", "model_hashes": {"a": "2"}}, "db")


def test_a_moved_mlruns_starts_a_new_run_tagged_with_the_old_id(tmp_path):
    first = Tracker(mlruns_dir=tmp_path / "old", experiment="x")
    old_id = first.start(run_id=None, run_name="s", params={})
    moved = Tracker(mlruns_dir=tmp_path / "new", experiment="x")
    new_id = moved.start(run_id=old_id, run_name="s", params={"seed": 0})
    assert new_id != old_id
    assert moved.client.get_run(new_id).data.tags["resumed_from_run_id"] == old_id


# ---- 5. atomic outputs ------------------------------------------------------------------------------

class FailingTokenizer:
    def save_pretrained(self, out):
        raise OSError(28, "No space left on device")


def test_a_save_that_fails_midway_leaves_no_half_written_model(tmp_path, tiny_model_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["base"])
    card = {"method": "linear", "sources": {"a": "x"}}
    out = tmp_path / "best_model"
    with pytest.raises(OSError):
        save_merged(model, FailingTokenizer(), out, card=card)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    save_merged(model, AutoTokenizer.from_pretrained(tiny_model_dirs["base"]), out, card=card)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(OSError):
        save_merged(model, FailingTokenizer(), out, card=card)
    assert sorted(p.name for p in out.iterdir()) == before and list(tmp_path.iterdir()) == [out]


# ---- 6. one nested MLflow run per finished trial ------------------------------------------------------

def test_trials_failed_by_the_heartbeat_get_their_nested_run(tmp_path):
    tracker = Tracker(mlruns_dir=tmp_path / "mlruns", experiment="x")
    run_id = tracker.start(run_id=None, run_name="s", params={})
    study = random_study(tmp_path)
    run_trials(study, space=SPACE, evaluate=lambda p, n: {"acc_ja": p["a"]}, fitness=["acc_ja"], n_trials=2,
               on_trial=[tracker.log_trial])
    orphan = study.ask()  # a killed worker's trial: failed by the heartbeat, never seen by a callback
    study.tell(orphan, state=optuna.trial.TrialState.FAIL)
    tracker.log_missing_trials([study])
    tracker.log_missing_trials([study])  # once only
    nested = tracker.client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(r.info.run_name for r in nested) == [f"s/trial-{n:04d}" for n in range(3)]


def test_the_lifecycle_logs_the_trials_no_callback_saw(tmp_path, tiny_model_dirs):
    from mlflow.tracking import MlflowClient

    cfg = validate(ps_config(tmp_path, tiny_model_dirs, "sampler=random"))
    (tmp_path / "run").mkdir()
    study = open_study(name=cfg.study_name, storage_url=f"sqlite:///{tmp_path / 'run' / 'study.db'}",
                       sampler=optuna.samplers.RandomSampler())
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # a killed worker's, failed by the heartbeat
    run_study(cfg, PSSearch(cfg), resolved="")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    nested = client.search_runs([client.get_experiment_by_name("evo_ps").experiment_id],
                                "tags.mlflow.parentRunId != ''")
    assert sorted((r.info.run_name, r.data.tags["state"]) for r in nested) == [
        ("toy_ja_math/trial-0000", "FAIL"), ("toy_ja_math/trial-0001", "COMPLETE")]


# ---- 7. workers start on fresh stores at once ----------------------------------------------------------

def at_once(job, n=4) -> list[int]:
    """Run `job` in n forked processes released together; their exit codes (0: it succeeded). Threads
    would not do: SQLAlchemy and alembic serialise much of the race inside one process."""
    context = multiprocessing.get_context("fork")
    start = context.Barrier(n)

    def worker():
        start.wait()
        job()

    processes = [context.Process(target=worker) for _ in range(n)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return [process.exitcode for process in processes]


def test_workers_open_a_fresh_study_db_at_once(tmp_path):
    assert at_once(lambda: random_study(tmp_path, name="shared")) == [0] * 4
    assert len(optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'study.db'}")) == 1


def test_workers_open_a_fresh_mlflow_store_at_once(tmp_path):
    assert at_once(lambda: Tracker(mlruns_dir=tmp_path / "mlruns", experiment="x")) == [0] * 4


def test_a_server_database_retries_a_lost_schema_race_a_bounded_number_of_times(monkeypatch):
    # MySQL (PostgreSQL takes a server-side advisory lock instead: tests/scale/test_postgres.py)
    from sqlalchemy.exc import IntegrityError

    monkeypatch.setattr("time.sleep", lambda seconds: None)
    attempts = []

    def create(fail_times):
        def attempt():
            attempts.append(1)
            if len(attempts) <= fail_times:
                raise IntegrityError("INSERT INTO alembic_version", {}, Exception("duplicate key"))
            return "store"
        return attempt

    assert open_store("mysql://db/optuna", create(fail_times=2)) == "store" and len(attempts) == 3
    attempts.clear()
    with pytest.raises(IntegrityError):
        open_store("mysql://db/optuna", create(fail_times=99))
    assert len(attempts) == SCHEMA_ATTEMPTS


# ---- 8. data hygiene --------------------------------------------------------------------------------

def test_question_key_ignores_bom_and_zero_width_characters():
    plain = question_key("Tom has 3 apples.")
    for dirty in ("\ufeffTom has 3 apples.", "Tom\u200b has 3 apples.", "Tom has\u2060 3 app\u200dles.\u200c"):
        assert question_key(dirty) == plain
