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


def _vqa_files(tmp_path):
    """JA-VG-VQA-500's layout (parquet, image bytes, a list of QAs) and JA-VLM-Bench-In-the-Wild's
    (JSONL, image files beside it), with images of different sizes (LLaVA-1.6 tiles them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = tiny_images(6, seed=11, size=(40, 30)) + tiny_images(3, seed=12, size=(32, 64))
    rows = []
    for i, image in enumerate(images[:6]):
        data = io.BytesIO()
        image.save(data, format="PNG")
        rows.append({"image": {"bytes": data.getvalue(), "path": None}, "image_id": i,
                     "qas": [{"question": f"この しゃしんに なにが ありますか? {i}", "answer": "りんごが あります。"},
                             {"question": "unused", "answer": "unused"}]})
    search = tmp_path / "ja_vg_vqa.parquet"
    pq.write_table(pa.Table.from_pylist(rows), search)
    test = tmp_path / "wild.jsonl"
    lines = []
    for i, image in enumerate(images[6:]):
        image.save(tmp_path / f"wild_{i}.png")
        lines.append(json.dumps({"image": f"wild_{i}.png", "question": "なにいろ ですか?", "answer": "あか です。"},
                                ensure_ascii=False))
    test.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return search, test


@pytest.mark.slow
def test_paper_vlm_experiment_runs_on_local_stand_ins(tmp_path, run_cli, tiny_mistral_vlm_dirs):
    # `+experiment=ja_vlm` as the paper has it (DARE-TIES per layer from x0 = 0.5, the evovlm_ja
    # prompt, ROUGE-L fitness, the two datasets' layouts) with what can't exist here replaced:
    # tiny Mistral / LLaVA-1.6 stand-ins, local files for the hub datasets, the CPU
    dirs = tiny_mistral_vlm_dirs
    search, test = _vqa_files(tmp_path)
    run = tmp_path / "run"
    proc = run_cli(
        "evo_ps", "+experiment=ja_vlm", f"run_dir={run}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
        f"pool.base={dirs['base']}", f"pool.sources.llava={dirs['llava']}", f"pool.sources.shisa={dirs['shisa']}",
        "pool.device=cpu", "pool.dtype=float32", "torch_threads=1", "n_trials=3", "objective.max_new_tokens=4",
        # local copies, as the experiment's header says
        "objective.search.dataset=null", f"objective.search.path={search}",
        "objective.test.dataset=null", f"objective.test.path={test}")
    out = proc.stdout
    assert "space   16 parameters" in out  # (2 layers + embed + head) x 2 sources x 2
    for row in ("| base |", "| llava |", "| shisa |", "| best_merge |"):
        assert row in out, out[-2000:]
    trials = optuna.load_study(study_name="ja_vlm", storage=f"sqlite:///{run / 'study.db'}").trials
    assert len(trials) == 3 and set(trials[0].params.values()) == {0.5}
    assert all(set(t.user_attrs["item_scores"]) == {"rougeL", "rougeL_ja"} for t in trials)
    assert all(len(t.user_attrs["item_scores"]["rougeL_ja"]) == 6 for t in trials)
    table = json.loads((run / "test_table.json").read_text())
    assert set(table["best_merge"]) == {"rougeL", "rougeL_ja"}
    # the best merge's test outputs, with their images, as MLflow artifacts
    samples = [json.loads(line) for line in (run / "samples" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all((run / "samples" / s["image"]).is_file() for s in samples)
    assert {"question", "answer", "output", "rougeL", "rougeL_ja"} <= set(samples[0])
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    parent = [r for r in client.search_runs([client.get_experiment_by_name("evo_ps").experiment_id])
              if "mlflow.parentRunId" not in r.data.tags][0]
    assert {"test.best_merge.rougeL_ja", "test.llava.rougeL"} <= set(parent.data.metrics)
    assert "samples.jsonl" in {os.path.basename(a.path) for a in client.list_artifacts(parent.info.run_id, "samples")}

    # the export: the whole VLM with its processor, no mergekit YAML (mergekit knows no LLaVA)
    model_dir = run / "best_model"
    assert (model_dir / "processor_config.json").is_file() and not (model_dir / "mergekit_config.yml").exists()
    assert "vision tower and projector are unchanged" in (model_dir / "README.md").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    prompt = "[INST] <image>\nなにいろ ですか? [/INST]"
    isolated = subprocess.run([sys.executable, "-S", "-c", ISOLATED, sysconfig.get_paths()["purelib"], str(model_dir),
                               str(tmp_path / "wild_0.png"), prompt], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
    assert isolated.returncode == 0, isolated.stderr[-3000:]
    got = json.loads(isolated.stdout.strip().splitlines()[-1])
    assert got["class"] == "LlavaNextForConditionalGeneration" and got["answer"]


def test_paper_vlm_experiment_without_models_fails_fast(tmp_path, run_cli, error_line):
    proc = run_cli("evo_ps", "+experiment=ja_vlm", f"run_dir={tmp_path / 'run'}",
                   f"tracking.mlruns_dir={tmp_path / 'mlruns'}", ok=False, env={"HF_HUB_OFFLINE": "1"})
    line = error_line(proc)
    assert "llava-hf/llava-v1.6-mistral-7b-hf" in line and "augmxnt/shisa-gamma-7b-v1" in line, line
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
