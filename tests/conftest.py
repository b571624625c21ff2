"""Session fixtures shared by every test package.

`tiny_model_dirs`: a random tiny Qwen3 base and three "fine-tunes" of it (base + noise), saved as
ordinary HF model directories with the zoo tokenizer. Cheap (< 1 s); for merge/path mechanics.
The trained zoo itself (for effects) is in `zoo/models/`, see `zoo_dirs`.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

import zoo  # noqa: F401  (registers the "zoo" data source)
from zoo.tokenizer import build_tokenizer

# Tiny models on a busy 2-core machine: extra intra-op threads only spin (a 3-layer forward took
# 0.37 s with 2 threads vs 2 ms with one), so the whole suite runs single-threaded.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_SOURCES = ("src_a", "src_b", "src_c")


def tiny_config(vocab_size: int) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )


@pytest.fixture(autouse=True)
def own_row_cache(tmp_path_factory, monkeypatch):
    """Each test its own empty test-row cache (evo_core/_row_cache.py): none reads rows another test
    (or the user's runs) scored, and none writes into the user's cache. In-process runs read the
    variable when they run, and subprocesses inherit it."""
    monkeypatch.setenv("EVO_CACHE_DIR", str(tmp_path_factory.mktemp("evo_cache")))


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    base = Qwen3ForCausalLM(tiny_config(len(tokenizer))).eval()
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    dirs = {}
    for i, name in enumerate(("base",) + TINY_SOURCES):
        gen = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for key, param in base.state_dict().items():
                noise = 0.0 if name == "base" else 0.02 * torch.randn(param.shape, generator=gen)
                param.copy_(base_state[key] + noise)
        out = root / name
        base.save_pretrained(out)
        tokenizer.save_pretrained(out)
        dirs[name] = out
    return dirs


@pytest.fixture(scope="session")
def run_mergekit(tmp_path_factory):
    """config dict -> mergekit 0.1.5 run_merge output tensors (it runs unpatched on transformers 5.23);
    the reference for evo_ps's merges and evo_breed's DELLA crossover; lora_merge_cache: where mergekit
    merges `base+adapter` models (needed when the config has any)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from safetensors.torch import load_file

    def run(config: dict, *, seed: int | None = None, lora_merge_cache: str | None = None) -> dict[str, torch.Tensor]:
        out = tmp_path_factory.mktemp("mergekit_out")
        run_merge(MergeConfiguration.model_validate(config), str(out),
                  MergeOptions(quiet=True, random_seed=seed, write_model_card=False, lora_merge_cache=lora_merge_cache))
        return load_file(Path(out) / "model.safetensors")

    return run


@pytest.fixture(scope="session")
def mgsm_ja_tsv() -> Path:
    """MGSM-JA as the project ships it (objectives/data/mgsm/)."""
    from objectives import MGSM_JA_TSV

    return MGSM_JA_TSV


def _run_cli(module: str, *overrides: str, ok: bool = True, timeout: float = 900, env: dict | None = None,
             cwd: Path = REPO_ROOT, new_process: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m module overrides...` as a user would; check its exit status. In this process
    (no interpreter start, no re-import of torch and transformers: seconds saved per call) unless
    the call needs a process of its own: `env` (read at import by the libraries), another `cwd`,
    or new_process=True (what must be seen from outside, e.g. a kill)."""
    if env is None and cwd == REPO_ROOT and not new_process:
        proc = _run_in_process(module, overrides)
    else:
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
        proc = subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, env=full_env, text=True,
                              capture_output=True, timeout=timeout)
    if ok:
        assert proc.returncode == 0, f"{module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    else:
        assert proc.returncode != 0, f"{module} should have failed:\n{proc.stdout[-2000:]}"
    return proc


def _run_in_process(module: str, overrides: Sequence[str]) -> subprocess.CompletedProcess:
    """`python -m module overrides...` run by runpy in this interpreter, its stdout and stderr
    captured and its exit status taken from SystemExit, as the interpreter would report them."""
    import contextlib
    import io
    import runpy
    from unittest import mock

    out, err = io.StringIO(), io.StringIO()
    argv = [module, *overrides]
    with mock.patch.object(sys, "argv", argv), mock.patch.dict(os.environ, {"HYDRA_FULL_ERROR": "0"}), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit:
            code = exit.code
            if isinstance(code, str):  # sys.exit("error: ..."): the interpreter prints it and exits 1
                print(code, file=sys.stderr)
                code = 1
            code = code or 0
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def run_cli():
    """run_cli("evo_ps", "n_trials=2", ..., ok=True) -> CompletedProcess (stdout, stderr)."""
    return _run_cli


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The one-line error a failed CLI printed (its last stderr line), checked to be alone."""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line
             and not line.startswith("  ")]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, f"expected one 'error:' line, got:\n{proc.stderr[-2000:]}"
    return errors[0]


def _cli_error(command: str, *overrides: str) -> str:
    """A command's config run in-process, as `python -m command overrides...` runs it but without a
    new interpreter (seconds instead of half a minute); it must fail: -> its one `error:` line."""
    from hydra import compose, initialize_config_dir

    from evo_breed import BreedSearch
    from evo_breed import validate as validate_breed
    from evo_core import register_resolvers, run_cli
    from evo_dfs import DFSSearch
    from evo_dfs import validate as validate_dfs
    from evo_genome import GenomeSearch
    from evo_genome import validate as validate_genome
    from evo_ps import PSSearch
    from evo_ps import validate as validate_ps

    conf_dir, validate, search = {"evo_ps": (REPO_ROOT / "conf", validate_ps, PSSearch),
                                  "evo_dfs": (REPO_ROOT / "conf" / "dfs", validate_dfs, DFSSearch),
                                  "evo_breed": (REPO_ROOT / "conf" / "breed", validate_breed, BreedSearch),
                                  "evo_genome": (REPO_ROOT / "conf" / "genome", validate_genome, GenomeSearch)}[command]
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    with pytest.raises(SystemExit) as exit:
        run_cli(cfg, validate=validate, search=search)
    line = str(exit.value.code)
    assert line.startswith("error: ") and "\n" not in line, line
    return line


@pytest.fixture(scope="session")
def cli_error():
    """cli_error("evo_ps", "key=value", ...) -> the one `error: ...` line that config fails with."""
    return _cli_error


@pytest.fixture(scope="session")
def error_line():
    """error_line(proc) -> the single 'error: ...' line a failed CLI printed."""
    return _error_line


# an absolute path in text (/a/b..., ~/a): not a URL's path (https://host/a/b), not a relative path's tail
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~@+-])(?:~|/[\w.@+-]+)(?:/[\w.@+-]+)+")


def _machine_paths(root: Path, *, also: Iterable[str | Path] = ()) -> dict[str, list[str]]:
    """Every absolute path (or ~/...) in the text files under `root` (binary files, such as weights
    and pictures, skipped), and every occurrence of the strings in `also` (this run's tmp dir, the
    repo root, the home dir): {file relative to root: hits}; {} when what is there names no path."""
    literals = [str(a) for a in also] + [str(REPO_ROOT), str(Path.home())]
    hits = {}
    for file in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found = _ABSOLUTE_PATH.findall(text) + [literal for literal in literals if literal in text]
        if found:
            hits[str(file.relative_to(root))] = found
    return hits


@pytest.fixture(scope="session")
def machine_paths():
    """machine_paths(dir, also=(tmp_path,)) -> {file: absolute paths in it}; {} for a publishable dir."""
    return _machine_paths


def _tiny_llava(language_model_dir: Path, out: Path, *, seed: int, next_version: bool = False) -> Path:
    """A LLaVA (transformers' own classes) around a copy of a tiny causal LM, on 32x32 images with
    patch 8, and the LM's tokenizer plus an `<image>` token appended (one more vocabulary row, as
    llava-v1.6-mistral has over Mistral). next_version=False: LlavaForConditionalGeneration with a
    random 2-layer SigLIP tower (16 image tokens); True: LlavaNextForConditionalGeneration (the
    paper's LLaVA-1.6) with a CLIP tower and any-resolution tiles."""
    import transformers as tf

    lm = tf.AutoModelForCausalLM.from_pretrained(language_model_dir)
    tokenizer = tf.AutoTokenizer.from_pretrained(language_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": [tf.AddedToken("<image>", special=True,
                                                                              normalized=False)]})
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                 patch_size=8)
    text = lm.config.to_dict() | {"vocab_size": len(tokenizer)}
    if next_version:
        grid = [[32, 32], [32, 64], [64, 32]]
        config = tf.LlavaNextConfig(vision_config=tf.CLIPVisionConfig(**tower), text_config=text, vision_feature_layer=-1,
                                    image_token_index=len(tokenizer) - 1, image_grid_pinpoints=grid)
        images = tf.LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                            image_grid_pinpoints=grid)
        processor = tf.LlavaNextProcessor(image_processor=images, tokenizer=tokenizer, patch_size=8,
                                          vision_feature_select_strategy="default", image_token="<image>",
                                          num_additional_image_tokens=1)
        model_class = tf.LlavaNextForConditionalGeneration
    else:
        config = tf.LlavaConfig(vision_config=tf.SiglipVisionConfig(**tower), text_config=text, vision_feature_layer=-1,
                                image_token_index=len(tokenizer) - 1, vision_feature_select_strategy="full",
                                image_seq_length=16)
        processor = tf.LlavaProcessor(image_processor=tf.SiglipImageProcessor(size={"height": 32, "width": 32}),
                                      tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="full",
                                      image_token="<image>", num_additional_image_tokens=0)
        model_class = tf.LlavaForConditionalGeneration
    torch.manual_seed(seed)
    vlm = model_class(config).eval()
    with torch.no_grad():
        for key, param in vlm.model.language_model.named_parameters():
            source = lm.get_parameter(f"model.{key}")
            param[:source.shape[0]].copy_(source)
        vlm.lm_head.weight[:lm.lm_head.weight.shape[0]].copy_(lm.lm_head.weight)
    vlm.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_vlm_dirs(tiny_model_dirs, tmp_path_factory) -> dict[str, Path]:
    """base, "vlm" (a tiny LLaVA whose LM is the tiny src_a) and "ja" (the tiny src_b, text only)."""
    vlm = _tiny_llava(tiny_model_dirs["src_a"], tmp_path_factory.mktemp("tiny_vlm") / "vlm", seed=7)
    return {"base": tiny_model_dirs["base"], "vlm": vlm, "ja": tiny_model_dirs["src_b"]}


@pytest.fixture(scope="session")
def tiny_mistral_vlm_dirs(tmp_path_factory) -> dict[str, Path]:
    """Stand-ins for the paper's EvoVLM-JP pool: a tiny Mistral "base", a fine-tune "shisa" (text)
    and a LLaVA-1.6 (LlavaNext) whose LLM is another fine-tune of that base."""
    from transformers import MistralConfig, MistralForCausalLM

    root = tmp_path_factory.mktemp("tiny_mistral")
    tokenizer = build_tokenizer()
    torch.manual_seed(1)
    base = MistralForCausalLM(MistralConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                            head_dim=16, pad_token_id=0, eos_token_id=1, bos_token_id=1))
    state = {k: v.clone() for k, v in base.state_dict().items()}
    dirs = {}
    for i, name in enumerate(("base", "shisa", "llava_lm")):
        with torch.no_grad():
            for key, param in base.state_dict().items():
                param.copy_(state[key] + (0.0 if name == "base" else 0.02 * torch.randn(param.shape)))
        dirs[name] = root / name
        base.save_pretrained(dirs[name])
        tokenizer.save_pretrained(dirs[name])
    dirs["llava"] = _tiny_llava(dirs.pop("llava_lm"), root / "llava", seed=2, next_version=True)
    return dirs


def tiny_images(n: int, *, seed: int, size: tuple[int, int] = (32, 32)) -> list:
    """n distinct random RGB images of `size` (width, height)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8")) for _ in range(n)]


@pytest.fixture
def another_backend():
    """pyplot on a backend other than the one a headless run resolves to (svg), as a user's
    environment may set it; restored after. A picture must save its PNG without switching it."""
    import matplotlib
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        yield "svg"
        assert plt.get_fignums() == [], "a picture left a figure open in pyplot"
    finally:
        plt.switch_backend(before)


def assert_png(path: Path, *, min_width: int = 300) -> None:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= min_width, (image.format, image.size)
