"""Checks that fail in one line before any weight is loaded (and two that run once it is).

Before: the device exists (`check_device`, from a search's check()); a model path is an existing
local directory with config.json or has the shape of a hub id (`check_model_path`); a local model's
weights are safetensors (`check_weights_format`: pickled weights, `pytorch_model.bin` and the like,
are refused with the command that converts them, unless the pool's `allow_pickle_weights` opts in;
they are then read by torch.load(weights_only=True) only, and a pickle holding more than tensors is
refused in one line: `load_weights_error`); every model a config names can be had, locally, from
the HF cache or the hub (`require_models`); every model has
the first one's architecture (`check_same_architecture`; a VLM counts as its language model) and
its tokenizer vocabulary (`check_same_tokenizer`: same tokens, same ids, or weights of different
vocabularies would mix token rows); tensor names and shapes agree (`check_same_shapes`, from local
safetensors headers, each file checked complete: _safetensors.py).
After loading: the parameters' shapes again (naming the first mismatched tensor), and every tensor
is finite (`check_finite`: a NaN in a source would poison every merge).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer

from ._paths import looks_like_hub_id, split_adapter_ref
from ._vlm import is_vision_language, text_config


def check_model_path(name: str, path: str | Path) -> str:
    """The path to load model `name` from: an existing local directory, or a hub id."""
    local = Path(path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"model {name!r}: {local} has no config.json; point it at a Hugging Face model directory")
        return str(local)
    if not local.exists() and looks_like_hub_id(path) and not str(path).startswith("."):
        return str(path)
    raise FileNotFoundError(
        f"model {name!r}: {path} does not exist; point model {name!r} in the config at a local copy "
        f"(a directory with config.json and *.safetensors)")


def _hub_reachable(repo_id: str) -> bool:
    """A cached copy, or one quick hub query (no download retries: offline fails in seconds)."""
    import huggingface_hub

    if isinstance(huggingface_hub.try_to_load_from_cache(repo_id, "config.json"), str):
        return True
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return False
    try:
        huggingface_hub.HfApi().model_info(repo_id, timeout=5)
        return True
    except Exception:  # offline, unknown, gated: all mean "not loadable from here"
        return False


# the config key that lets a pool load pickled weights (each search's `pool` group has it)
PICKLE_OPT_IN = "pool.allow_pickle_weights"
# what torch.save writes: pickles, whose loading may run code (transformers' pytorch_model*.bin among them)
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def pickled_weight_files(path: str | Path) -> list[Path]:
    """The pickled weight files of a local model directory (none for a hub id)."""
    local = Path(path).expanduser()
    return sorted(f for pattern in PICKLE_PATTERNS for f in local.glob(pattern)) if local.is_dir() else []


def convert_command(path: str | Path) -> str:
    """A shell command that writes safetensors weights beside a local model's pickled ones (loaded
    by transformers with torch.load(weights_only=True); transformers >= 4.35 saves safetensors)."""
    local = Path(path).expanduser()
    config = local / "config.json"
    vision = config.is_file() and {"vision_config", "text_config"} <= json.loads(config.read_text()).keys()
    auto = "AutoModelForImageTextToText" if vision else "AutoModelForCausalLM"
    return (f"python -c \"from transformers import {auto} as M; "
            f"M.from_pretrained('{local}', use_safetensors=False).save_pretrained('{local}')\"")


def check_weights_format(name: str, path: str | Path, *, allow_pickle: bool) -> None:
    """A local model directory holds safetensors weights, or (with `allow_pickle`) pickled ones;
    a hub id is left to the loader (loaded with use_safetensors unless `allow_pickle`). Reads no
    weight: only the file names."""
    local = Path(path).expanduser()
    if not local.is_dir() or any(local.glob("*.safetensors")):
        return
    pickled = pickled_weight_files(local)
    if not pickled:
        raise FileNotFoundError(f"model {name!r}: {local} has no weights (no *.safetensors file); download or "
                                f"save the model again")
    if not allow_pickle:
        raise ValueError(f"model {name!r}: {local} has pickled weights only ({pickled[0].name}), which can run code "
                         f"when loaded; convert them to safetensors once: {convert_command(local)} "
                         f"(or set {PICKLE_OPT_IN}=true to load them with torch.load(weights_only=True))")


def load_weights_error(name: str, path: str, err: Exception) -> ValueError:
    """The one line for pickled weights torch.load(weights_only=True) refused: what it found (e.g.
    `unsupported GLOBAL posix.system`), without torch's advice to retry with weights_only=False."""
    found = [line.strip().rstrip(".") for line in str(err).splitlines() if "GLOBAL" in line or "Unsupported" in line]
    reason = f" ({found[0][:200]})" if found else ""
    return ValueError(f"model {name!r}: the pickled weights in {path} hold more than tensors{reason}; refused "
                      f"(unpickling them could run code): get safetensors weights from a source you trust")


def require_models(refs: Mapping[str, str | Path], *, allow_pickle_weights: bool = False) -> None:
    """Fail in one line, before anything loads, naming every model that cannot be had, and a local
    model without safetensors weights (check_weights_format).

    `refs` maps the config key a user would override (e.g. "pool.sources.shisa") to a local
    directory or a hub id."""
    missing = []
    for key, ref in _adapter_bases(refs).items():
        local = Path(ref).expanduser()
        if local.is_dir() and (local / "config.json").is_file():
            check_weights_format(key.rpartition(".")[2], local, allow_pickle=allow_pickle_weights)
            continue
        if not local.exists() and looks_like_hub_id(ref) and _hub_reachable(str(ref)):
            continue
        missing.append(f"{key}={ref}")
    if missing:
        raise FileNotFoundError(
            f"models not found locally, in the HF cache or on the hub: {', '.join(missing)}; "
            f"download them (hf download ID --local-dir DIR) and set those keys to the local copies")


def _adapter_bases(refs: Mapping[str, str | Path]) -> dict[str, str | Path]:
    """`refs` with each LoRA adapter source (`BASE+ADAPTER`, _adapters.py) as its base, the one
    model it needs (its adapter folder is checked by check_adapter_sources)."""
    out = {}
    for key, ref in refs.items():
        split = split_adapter_ref(ref)
        out[f"{key} (its base)" if split else key] = split[0] if split else ref
    return out


def load_config(name: str, path: str):
    try:
        return AutoConfig.from_pretrained(path)
    except OSError as err:  # a hub id that cannot be fetched (offline, private, misspelt)
        raise FileNotFoundError(
            f"model {name!r}: cannot load {path!r} ({type(err).__name__}); download it and point "
            f"model {name!r} in the config at the local copy") from None


def check_device(device: str, *, key: str) -> None:
    """The device can be used here; config key `key` names it in the one-line error."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{key}={device} is not a torch device (cpu, cuda, cuda:1, mps)") from None
    kind = parsed.type
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key}={device} but this machine has no CUDA device (torch {torch.__version__}); "
                         f"set {key}=cpu or run on a GPU machine")
    if kind == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"{key}={device} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{key}={device} but MPS is not available here; set {key}=cpu")


def check_same_tokenizer(paths: Mapping[str, str], *, may_extend: Iterable[str] = ()) -> None:
    """Every model's tokenizer maps the same tokens to the same ids as the first model's; models
    without tokenizer files are skipped (nothing to compare; they are prompted with the first's).
    Models named in `may_extend` (VLMs) may add tokens after the first model's last id."""
    (ref_name, ref_path), *rest = paths.items()
    ref = _vocabulary(ref_path)
    if ref is None:
        return
    may_extend = set(may_extend)
    for name, path in rest:
        own = _vocabulary(path)
        if own is None or own == ref:
            continue
        if name in may_extend:
            own = {t: i for t, i in own.items() if t in ref or i < len(ref)}  # appended tokens are allowed
            if own == ref:
                continue
        extra, missing = sorted(own.keys() - ref.keys()), sorted(ref.keys() - own.keys())
        moved = sorted(t for t in own.keys() & ref.keys() if own[t] != ref[t])
        details = [f"{len(items)} tokens {label}, e.g. {items[:3]}" for label, items in
                   (("only in it", extra), (f"only in {ref_name!r}", missing), ("with other ids", moved)) if items]
        raise ValueError(f"model {name!r}: its tokenizer vocabulary differs from {ref_name!r}'s "
                         f"({'; '.join(details)}); merging would mix token rows: use models that share one tokenizer")


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def _vocabulary(path: str) -> dict[str, int] | None:
    """token -> id of the model's tokenizer; None for a local directory without tokenizer files
    (AutoTokenizer would make up a near-empty one from the config)."""
    local = Path(path)
    if local.is_dir() and not any((local / file).is_file() for file in _TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(path).get_vocab()
    except (OSError, ValueError):  # a hub model without a tokenizer
        return None


def check_finite(name: str, model: torch.nn.Module) -> None:
    """Every parameter of `model` is finite; the error names the model and the first bad tensor."""
    for key, param in model.named_parameters():
        finite = torch.isfinite(param)
        if not finite.all():
            raise ValueError(f"model {name!r}: tensor {key} has {int((~finite).sum())} non-finite value(s) "
                             f"(NaN or inf)")


def check_same_architecture(configs: Mapping[str, object]) -> None:
    """All configs share the first one's architectures and model type; a VLM counts as its
    language model's model type (its LLM is what is merged)."""
    (ref_name, ref), *rest = configs.items()
    with_vlm = any(is_vision_language(cfg) for cfg in configs.values())

    def signature(cfg):
        if with_vlm:
            return ("language model", text_config(cfg).model_type)
        return (tuple(cfg.architectures or ()), cfg.model_type)

    for name, cfg in rest:
        if signature(cfg) != signature(ref):
            raise ValueError(f"model {name!r} is {signature(cfg)} but {ref_name!r} is {signature(ref)} "
                             f"(architectures, model_type); the pool needs one architecture")


def check_same_shapes(shapes: Mapping[str, Mapping[str, tuple[int, ...]]], *,
                      extra_rows: Mapping[str, int] | None = None) -> None:
    """All models have the first one's tensor names and shapes; the error names the tensor.
    `extra_rows`: models (VLMs) whose tensors with the first model's vocabulary size as their first
    dimension may have more rows than that (appended tokens)."""
    (ref_name, ref), *rest = shapes.items()
    for name, own in rest:
        vocab = (extra_rows or {}).get(name)
        for key in sorted(set(ref) | set(own)):
            if key not in own or key not in ref:
                holder, lacker = (ref_name, name) if key not in own else (name, ref_name)
                raise ValueError(f"tensor {key} is in model {holder!r} but not in {lacker!r}")
            mine, theirs = tuple(own[key]), tuple(ref[key])
            if vocab is not None and theirs[:1] == (vocab,) and mine[1:] == theirs[1:] and mine[0] >= vocab:
                continue
            if tuple(own[key]) != tuple(ref[key]):
                raise ValueError(
                    f"tensor {key} has shape {tuple(own[key])} in model {name!r} "
                    f"but {tuple(ref[key])} in {ref_name!r}")
