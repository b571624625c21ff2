"""The paper's EvoVLM-JP experiment (`+experiment=ja_vlm`) end to end on tiny local stand-ins, and
its export: a LLaVA-1.6 directory that transformers alone loads and runs."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import sysconfig

import optuna
import pytest

from tests.conftest import tiny_images

# `python -S` (no site: the editable install stays off) with only the interpreter's site-packages
# appended, from a temp cwd: transformers' own classes answer a question about an image
ISOLATED = r"""
import json, sys
sys.path.append(sys.argv[1])
for module in ("evo_core", "evo_ps", "objectives", "zoo"):
    try:
        __import__(module)
        sys.exit(f"{module} must not be importable here")
    except ImportError:
        pass
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaNextForConditionalGeneration
model = LlavaNextForConditionalGeneration.from_pretrained(sys.argv[2]).eval()
processor = AutoProcessor.from_pretrained(sys.argv[2])
enc = processor(images=[Image.open(sys.argv[3])], text=[sys.argv[4]], return_tensors="pt")
with torch.no_grad():
    ids = model.generate(**enc, max_new_tokens=4, do_sample=False)
print(json.dumps({"class": type(model).__name__, "answer": processor.tokenizer.decode(ids[0, enc["input_ids"].shape[1]:])}))
"""


def _vg_parquet(path, images, image_ids, question):
    """JA-VG-VQA-500's layout: a row per image with its Visual Genome id and a list of QAs (the
    first is the item), the image as parquet bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for image_id, image in zip(image_ids, images):
        data = io.BytesIO()
        image.save(data, format="PNG")
        rows.append({"image_id": image_id, "url": f"https://example.org/VG/{image_id}.jpg",
                     "image": {"bytes": data.getvalue(), "path": None},
                     "qas": [{"question": f"{question} {image_id}", "answer": "りんごが あります。"},
                             {"question": "unused", "answer": "unused"}]})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _vqa_files(tmp_path, *, test_image_ids=(100, 101, 102, 103)):
    """The paper's three sets in their layouts, with images of different sizes (LLaVA-1.6 tiles
    them): a search set and a test set in JA-VG-VQA-500's (parquet; other Visual Genome ids),
    and JA-VLM-Bench-In-the-Wild's (JSONL with image_url, image files beside it)."""
    images = tiny_images(10, seed=11, size=(40, 30)) + tiny_images(3, seed=12, size=(32, 64))
    search = _vg_parquet(tmp_path / "vg_train.parquet", images[:6], range(6), "この しゃしんに なにが ありますか?")
    test = _vg_parquet(tmp_path / "vg_test.parquet", images[6:10], test_image_ids, "なにが みえますか?")
    wild = tmp_path / "wild.jsonl"
    lines = []
    for i, image in enumerate(images[10:]):
        image.save(tmp_path / f"wild_{i}.png")
        lines.append(json.dumps({"page_url": "https://example.org/page", "image_url": f"https://example.org/{i}.jpg",
                                 "image": f"wild_{i}.png", "question": "なにいろ ですか?", "answer": "あか です。"},
                                ensure_ascii=False))
    wild.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return search, test, wild


def _local_data(search, test, wild) -> list[str]:
    """The overrides that point `+experiment=ja_vlm` at local copies, as its header says."""
    return ["objective.search.dataset=null", f"objective.search.path={search}",
            "objective.test.ja_vg_vqa_500.dataset=null", f"objective.test.ja_vg_vqa_500.path={test}",
            "objective.test.ja_vlm_wild.dataset=null", f"objective.test.ja_vlm_wild.path={wild}"]


def _stand_in_models(dirs) -> list[str]:
    return [f"pool.base={dirs['base']}", f"pool.sources.llava={dirs['llava']}", f"pool.sources.shisa={dirs['shisa']}",
            "pool.device=cpu", "pool.dtype=float32", "torch_threads=1"]


@pytest.mark.slow
def test_paper_vlm_experiment_runs_on_local_stand_ins(tmp_path, run_cli, tiny_mistral_vlm_dirs, machine_paths):
    # `+experiment=ja_vlm` as the paper has it (DARE-TIES per layer from x0 = 0.5, the evovlm_ja
    # prompt, ROUGE-L fitness, search on a Visual Genome set disjoint from both test sets, one
    # table per test set) with what can't exist here replaced: tiny Mistral / LLaVA-1.6
    # stand-ins, local files for the hub datasets, the CPU
    run = tmp_path / "run"
    proc = run_cli("evo_ps", "+experiment=ja_vlm", f"run_dir={run}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
                   *_stand_in_models(tiny_mistral_vlm_dirs), "n_trials=3", "objective.options.max_new_tokens=4",
                   *_local_data(*_vqa_files(tmp_path)))
    out = proc.stdout
    assert "space   16 parameters" in out  # (2 layers + embed + head) x 2 sources x 2
    # two tables, as the paper's Table 2: JA-VG-VQA-500 (4 stand-in items here) and In-the-Wild (3)
    vg_at, wild_at = out.index("test set ja_vg_vqa_500 (4 items)"), out.index("test set ja_vlm_wild (3 items)")
    assert vg_at < wild_at and "test split (" not in out
    for row in ("| base |", "| llava |", "| shisa |", "| best_merge |"):
        assert out[vg_at:wild_at].count(row) == 1 and out[wild_at:].count(row) == 1, out[-2000:]
    trials = optuna.load_study(study_name="ja_vlm", storage=f"sqlite:///{run / 'study.db'}").trials
    assert len(trials) == 3 and set(trials[0].params.values()) == {0.5}
    assert all(set(t.user_attrs["item_scores"]) == {"rougeL", "rougeL_ja"} for t in trials)
    assert all(len(t.user_attrs["item_scores"]["rougeL_ja"]) == 6 for t in trials)
    table = json.loads((run / "test_table.json").read_text())
    assert list(table) == ["ja_vg_vqa_500", "ja_vlm_wild"]
    assert all(list(t) == ["base", "llava", "shisa", "best_merge"] for t in table.values())
    assert all(set(row) == {"rougeL", "rougeL_ja"} for t in table.values() for row in t.values())
    # the best merge's test outputs per set, with their images, as MLflow artifacts
    for name, size in (("ja_vg_vqa_500", 4), ("ja_vlm_wild", 3)):
        folder = run / "samples" / name
        samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == size and all((folder / s["image"]).is_file() for s in samples)
        assert {"question", "answer", "output", "rougeL", "rougeL_ja"} <= set(samples[0])
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    parent = [r for r in client.search_runs([client.get_experiment_by_name("evo_ps").experiment_id])
              if "mlflow.parentRunId" not in r.data.tags][0]
    metrics = parent.data.metrics
    assert {"test.ja_vg_vqa_500.best_merge.rougeL_ja", "test.ja_vlm_wild.best_merge.rougeL_ja",
            "test.ja_vg_vqa_500.llava.rougeL", "test.ja_vlm_wild.shisa.rougeL"} <= set(metrics)
    assert metrics["test.ja_vlm_wild.best_merge.rougeL"] == table["ja_vlm_wild"]["best_merge"]["rougeL"]
    for name in ("ja_vg_vqa_500", "ja_vlm_wild"):
        assert "samples.jsonl" in {os.path.basename(a.path)
                                   for a in client.list_artifacts(parent.info.run_id, f"samples/{name}")}

    # the export: the whole VLM with its processor, no mergekit YAML (mergekit knows no LLaVA)
    model_dir = run / "best_model"
    assert (model_dir / "processor_config.json").is_file() and not (model_dir / "mergekit_config.yml").exists()
    assert "vision tower and projector are unchanged" in (model_dir / "README.md").read_text()
    # no path of this machine, though the stand-in LLaVA's config carries its builder's (text_config)
    assert machine_paths(model_dir, also=[tmp_path, tiny_mistral_vlm_dirs["base"].parent]) == {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    prompt = "[INST] <image>\nなにいろ ですか? [/INST]"
    isolated = subprocess.run([sys.executable, "-S", "-c", ISOLATED, sysconfig.get_paths()["purelib"], str(model_dir),
                               str(tmp_path / "wild_0.png"), prompt], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
    assert isolated.returncode == 0, isolated.stderr[-3000:]
    got = json.loads(isolated.stdout.strip().splitlines()[-1])
    assert got["class"] == "LlavaNextForConditionalGeneration" and got["answer"]


@pytest.mark.slow
def test_paper_vlm_experiment_without_models_fails_fast(tmp_path, run_cli, error_line):
    proc = run_cli("evo_ps", "+experiment=ja_vlm", f"run_dir={tmp_path / 'run'}",
                   f"tracking.mlruns_dir={tmp_path / 'mlruns'}", ok=False, env={"HF_HUB_OFFLINE": "1"})
    line = error_line(proc)
    assert "llava-hf/llava-v1.6-mistral-7b-hf" in line and "augmxnt/shisa-gamma-7b-v1" in line, line
    assert not (tmp_path / "run" / "study.db").exists() and not (tmp_path / "mlruns").exists()


def test_paper_vlm_experiment_refuses_a_search_set_overlapping_a_test_set(tmp_path, cli_error,
                                                                         tiny_mistral_vlm_dirs, monkeypatch):
    # the JA-VG-VQA-500 stand-in shows the search set's Visual Genome image 3 (other pixels, other
    # question): refused before any model loads
    from evo_ps._search import PSSearch

    monkeypatch.setattr(PSSearch, "load", lambda self, tokenizer: pytest.fail("the models were loaded"))
    files = _vqa_files(tmp_path, test_image_ids=(100, 3, 102, 103))
    line = cli_error("evo_ps", "+experiment=ja_vlm", f"run_dir={tmp_path / 'run'}",
                     f"tracking.mlruns_dir={tmp_path / 'mlruns'}", *_stand_in_models(tiny_mistral_vlm_dirs),
                     *_local_data(*files))
    assert line == ("error: splits 'search' and 'test.ja_vg_vqa_500' share 1 problem(s), e.g. image visual_genome:3 "
                    "('なにが みえますか? 3'); pass allow_overlap=True only if that is intended")
    assert not (tmp_path / "run" / "study.db").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_toy_vqa_experiment_end_to_end(tmp_path, run_cli):
    # the embedded VQA default, shortened: the zoo's tiny LLaVA and Japanese LLM, the documented command
    run = tmp_path / "run"
    proc = run_cli("evo_ps", "+experiment=toy_ja_vqa", f"run_dir={run}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
                   "n_trials=3", "space.warm_start_trials=2", "+objective.search.limit=24", "+objective.test.limit=12")
    for row in ("| base |", "| vlm |", "| ja |", "| best_uniform |", "| best_merge |"):
        assert row in proc.stdout, proc.stdout[-2000:]
    assert "test split (12 items)" in proc.stdout
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    assert isinstance(LlavaForConditionalGeneration.from_pretrained(run / "best_model"), LlavaForConditionalGeneration)
    assert AutoProcessor.from_pretrained(run / "best_model").image_token == "<image>"
