"""Model pool: load causal LMs (or vision-language models' LLMs) once, validated before any weight is read.

Parameter-space search (one live model whose weights each trial overwrites):

    from evo_core import load_pool
    pool = load_pool(base="zoo/models/base", sources={"ja": ".../ja", "math": ".../math"},
                     dtype="bfloat16", device="cuda")
    pool.model                                  # live copy of base on `device`; mergers write into it
    pool.base["model.norm.weight"]              # host (CPU) copies of the base weights
    pool.sources["ja"]["model.norm.weight"]     # host copies of every source's weights
    pool.reset()                                # live model := base again

A source may be a vision-language model (LLaVA-style: `config.vision_config` + `config.text_config`,
its LLM under `model.language_model`): only its LLM is merged, under causal-LM names
(`model.language_model.X` <-> `model.X`, `lm_head.weight` stays), and the live model is then that
VLM, so its vision tower and projector stay as they are. A VLM's vocabulary may extend the base's
(LLaVA adds `<image>`: llava-v1.6-mistral has 32064 rows, Mistral 32000): the first rows are merged,
the extra rows keep the VLM's values.

    pool = load_pool(base="zoo/models/base", sources={"vlm": "zoo/models/vlm", "ja": "zoo/models/ja"})
    pool.model                                  # the live LlavaForConditionalGeneration
    pool.live_name                              # "vlm": whose vision tower and extra rows it keeps
    pool.use(pool.sources["ja"])                # the live VLM with the Japanese LLM's weights

Data-flow search (several models side by side, nothing merged):

    models = load_models({"ja": ".../ja", "math": ".../math"}, dtype="float32", device="cpu")

Paths are local model directories; anything that is not an existing directory but looks like a
Hugging Face hub id (`owner/name`) is loaded from the hub (a GPU user's setup). Checks, each failing
with a one-line error before any weight is loaded: the device exists (`check_device`, from a
search's check()), the path exists, every model has the base's architecture and the base's
tokenizer vocabulary (same tokens, same ids: weights of different vocabularies would mix token
rows), and, where safetensors files are local, each is complete (header and data) and every tensor
has the base's shape. Once loaded: the parameters are checked again, naming the first mismatched
tensor, and every tensor must be finite (a NaN in a source would poison every merge).

`model_fingerprint(path)` is a cheap content hash (seconds for a 7B model) that a resumed study
compares: a model replaced under the same path is a different search.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer, PreTrainedModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# source names become parts of search-parameter names ("L03.<source>.weight"), so no dots
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; known: {', '.join(DTYPES)}")
    return DTYPES[name]


def check_model_path(name: str, path: str | Path) -> str:
    """The path to load model `name` from: an existing local directory, or a hub id."""
    local = Path(path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"model {name!r}: {local} has no config.json; point it at a Hugging Face model directory")
        return str(local)
    if not local.exists() and _HUB_ID.fullmatch(str(path)) and not str(path).startswith("."):
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


def require_models(refs: Mapping[str, str | Path]) -> None:
    """Fail in one line, before anything loads, naming every model that cannot be had.

    `refs` maps the config key a user would override (e.g. "pool.sources.shisa") to a local
    directory or a hub id."""
    missing = []
    for key, ref in refs.items():
        local = Path(ref).expanduser()
        if local.is_dir() and (local / "config.json").is_file():
            continue
        if not local.exists() and _HUB_ID.fullmatch(str(ref)) and _hub_reachable(str(ref)):
            continue
        missing.append(f"{key}={ref}")
    if missing:
        raise FileNotFoundError(
            f"models not found locally, in the HF cache or on the hub: {', '.join(missing)}; "
            f"download them (huggingface-cli download ID --local-dir DIR) and set those keys to the local copies")


def _load_config(name: str, path: str):
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


def _safetensors_header(file: Path) -> tuple[bytes, dict]:
    """A safetensors file's raw header and its parsed form, after checking that the file holds all
    the data the header declares (a copy cut short fails here, not as a loader traceback)."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else None
        raw = handle.read(length) if length is not None and 8 + length <= size else b""
    try:
        header = json.loads(raw)
    except ValueError:
        raise ValueError(f"{file}: not a complete safetensors file ({size} bytes, unreadable header); "
                         f"download or save it again") from None
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if 8 + len(raw) + end > size:
        raise ValueError(f"{file}: truncated ({size} bytes; its header declares {8 + len(raw) + end}); "
                         f"download or save it again")
    return raw, header


def _safetensors_files(path: str) -> list[Path]:
    return sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []


def _header_shapes(name: str, path: str) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes from local safetensors headers (no weights read), every file checked complete;
    None if not local."""
    files = _safetensors_files(path)
    if not files:
        return None
    shapes = {}
    for file in files:
        try:
            _, header = _safetensors_header(file)
        except ValueError as err:
            raise ValueError(f"model {name!r}: {err}") from None
        shapes.update({key: tuple(entry["shape"]) for key, entry in header.items() if key != "__metadata__"})
    return shapes


FINGERPRINT_SAMPLES = 3  # 1 MiB samples per safetensors file: its start, middle and end
SAMPLE_BYTES = 1 << 20


def model_fingerprint(path: str) -> str:
    """sha256 over what identifies a model's weights without reading them all: config.json, and per
    safetensors file its name, size, header (every tensor's name, dtype, shape and offsets) and three
    1 MiB samples (start, middle, end of the data). Weights replaced by a fine-tune or a re-download
    of another revision change it; an edit confined to bytes outside the samples that keeps every
    shape does not. A hub id hashes its cached snapshot when there is one, else just the id."""
    local = Path(path)
    if not local.is_dir():
        local = _cached_snapshot(path)
        if local is None:
            return f"hub:{path}"
    digest = hashlib.sha256((local / "config.json").read_bytes())
    for file in _safetensors_files(str(local)):
        raw, _ = _safetensors_header(file)
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}:".encode() + raw)
        with open(file, "rb") as handle:
            for start in _sample_offsets(size):
                handle.seek(start)
                digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def _sample_offsets(size: int) -> Iterable[int]:
    last = max(size - SAMPLE_BYTES, 0)
    return sorted({last * k // (FINGERPRINT_SAMPLES - 1) for k in range(FINGERPRINT_SAMPLES)})


def _cached_snapshot(repo_id: str) -> Path | None:
    import huggingface_hub

    try:
        return Path(huggingface_hub.snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not (fully) cached: nothing local to hash
        return None


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


def is_vision_language(config: object) -> bool:
    """A LLaVA-style VLM config: a vision tower's config and its language model's config."""
    return hasattr(config, "vision_config") and hasattr(config, "text_config")


def text_config(config: object) -> object:
    """The language model's config: a VLM's text_config, else the config itself."""
    return config.text_config if is_vision_language(config) else config


def vision_language_sources(paths: Mapping[str, str | Path]) -> list[str]:
    """The names of the models in `paths` that are vision-language models (by their config.json;
    models not available locally count as not: loading them reports them)."""
    found = []
    for name, path in paths.items():
        config = Path(path).expanduser() / "config.json"
        if config.is_file() and {"vision_config", "text_config"} <= json.loads(config.read_text()).keys():
            found.append(name)
        elif not config.is_file() and _HUB_ID.fullmatch(str(path)):
            with contextlib.suppress(Exception):  # offline, gated: the loader's own check says so later
                if is_vision_language(AutoConfig.from_pretrained(str(path))):
                    found.append(name)
    return found


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


def _param_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(p.shape) for key, p in language_model_params(model).items()}


def language_model_params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The causal-LM parameters of `model` under causal-LM names, in `named_parameters` order: a
    VLM's `model.language_model.X` is `model.X`, its `lm_head.weight` stays (unless tied)."""
    if not is_vision_language(getattr(model, "config", None)):
        return dict(model.named_parameters())
    language_model = model.model.language_model
    params = {f"model.{key}": p for key, p in language_model.named_parameters()}
    head = model.get_output_embeddings().weight
    if head is not language_model.get_input_embeddings().weight:
        params["lm_head.weight"] = head
    return params


_VLM_CHECKPOINT_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."),
                            ("language_model.lm_head.", "lm_head."), ("lm_head.", "lm_head."))


def _language_model_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """A VLM checkpoint's LLM tensors under causal-LM names (both LLaVA layouts: transformers 5's
    `model.language_model.*` and the older `language_model.model.*`); vision tensors left out."""
    renamed = {}
    for key, shape in shapes.items():
        for old, new in _VLM_CHECKPOINT_PREFIXES:
            if key.startswith(old):
                renamed[new + key.removeprefix(old)] = shape
                break
    return renamed


def load_models(paths: Mapping[str, str | Path], *, dtype: str = "float32", device: str = "cpu",
                same_shapes: bool = True) -> dict[str, PreTrainedModel]:
    """Load each named causal LM (eval mode, no grad) after checking paths, architectures and
    tokenizers, and tensor shapes where local safetensors headers tell them; shapes are checked
    again once loaded, and every weight must be finite.

    same_shapes=False skips the shape checks (e.g. data-flow models of different depths).
    """
    torch_dtype = resolve_dtype(dtype)
    if not paths:
        raise ValueError("no models to load")
    for name in paths:
        if not _NAME.fullmatch(name):
            raise ValueError(f"model name {name!r} must use only letters, digits, '_' and '-'")
    resolved = {name: check_model_path(name, path) for name, path in paths.items()}
    configs = {name: _load_config(name, path) for name, path in resolved.items()}
    check_same_architecture(configs)
    vlms = [name for name, cfg in configs.items() if is_vision_language(cfg)]
    check_same_tokenizer(resolved, may_extend=vlms)
    # a VLM may have more vocabulary rows than the first model (LLaVA's <image>, ...)
    extra_rows = {name: text_config(next(iter(configs.values()))).vocab_size for name in vlms}
    headers = {name: _header_shapes(name, path) for name, path in resolved.items()}
    if same_shapes and all(h is not None for h in headers.values()):
        check_same_shapes({name: _language_model_shapes(h) if name in vlms else h for name, h in headers.items()},
                          extra_rows=extra_rows)

    models = {}
    for name, path in resolved.items():
        auto = AutoModelForImageTextToText if name in vlms else AutoModelForCausalLM
        model = auto.from_pretrained(path, dtype=torch_dtype)
        check_finite(name, model)
        models[name] = model.to(device).eval().requires_grad_(False)
    if same_shapes:
        check_same_shapes({name: _param_shapes(model) for name, model in models.items()}, extra_rows=extra_rows)
    return models


@torch.no_grad()
def use_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Overwrite a live model's (language-model) parameters in place with `weights`, keyed by
    causal-LM names (e.g. to score one source model as it is). A VLM's appended vocabulary rows,
    which `weights` may lack, keep their values."""
    for key, param in language_model_params(model).items():
        _leading_rows(param, weights[key]).copy_(weights[key])


def _leading_rows(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`tensor` cut down to `like`'s rows (a VLM's vocabulary tensor viewed as the base's)."""
    return tensor[:like.shape[0]] if tensor.dim() and tensor.shape != like.shape else tensor


@dataclass(eq=False)
class ModelPool:
    """A base and its sources, loaded once. `model` is the live model trials write into.

    `base` and `sources` hold host (CPU) copies keyed by causal-LM parameter name (tied weights
    once, as `named_parameters()` lists them); `param_names` is that order. With a VLM among the
    sources, `model` is that VLM (`live_name`) and only its language model is written.
    """

    model: PreTrainedModel
    tokenizer: object
    config: object
    base: dict[str, torch.Tensor]
    sources: dict[str, dict[str, torch.Tensor]]
    paths: dict[str, str]  # "base" and every source name -> where it was loaded from
    base_name: str
    num_layers: int
    dtype: torch.dtype
    device: torch.device
    live_name: str = "base"  # the model `model` was loaded as: the base, or a VLM source

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(self.sources)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.base)

    def live_params(self) -> dict[str, torch.Tensor]:
        """The live model's merged tensors by causal-LM name: views a merge writes into (a VLM's
        vocabulary tensors are viewed down to the base's rows)."""
        live = language_model_params(self.model)
        return {key: _leading_rows(live[key], self.base[key]) for key in self.base}

    def use(self, weights: Mapping[str, torch.Tensor]) -> None:
        """The live model with `weights` (the base's, a source's) as its language model."""
        use_weights(self.model, weights)

    def reset(self) -> None:
        """Overwrite the live model with the base weights."""
        self.use(self.base)


def load_pool(*, base: str | Path, sources: Mapping[str, str | Path], dtype: str = "float32",
              device: str = "cpu", base_name: str = "base", tokenizer: object | None = None) -> ModelPool:
    """Load base + at least two sources for parameter-space merging; the live model on `device`.
    `tokenizer`: the base's, if the caller has already loaded it (else it is loaded here)."""
    if len(sources) < 2:
        raise ValueError(
            f"parameter-space merging needs at least 2 source models; "
            f"got {len(sources)}: {', '.join(sources) or 'none'}")
    if base_name in sources:
        raise ValueError(f"source name {base_name!r} is taken by the base model; rename the source")
    paths = {name: check_model_path(name, path) for name, path in {base_name: base, **sources}.items()}
    vlms = vision_language_sources(paths)
    if base_name in vlms:
        raise ValueError(f"the base {paths[base_name]} is a vision-language model; the base is the LLM the "
                         f"sources were fine-tuned from (e.g. Mistral-7B-v0.1 for LLaVA-1.6-Mistral)")
    if len(vlms) > 1:
        raise ValueError(f"sources {', '.join(vlms)} are all vision-language models; a pool keeps one vision "
                         f"tower, so at most one source may be a VLM")
    # load on CPU: the host copies stay there; only the live model moves to `device`
    models = load_models(paths, dtype=dtype, device="cpu")
    live_name = vlms[0] if vlms else base_name
    base_params = language_model_params(models[base_name])
    host = {}
    for name, m in models.items():
        host[name] = {key: _leading_rows(p.detach(), base_params[key]) for key, p in language_model_params(m).items()}
    # the live model's own weights are copied: merges overwrite them
    host[live_name] = {key: t.clone() for key, t in host[live_name].items()}
    live = models[live_name]
    live.to(device)
    return ModelPool(
        model=live,
        tokenizer=tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(paths[live_name]),
        config=live.config,
        base=host.pop(base_name),
        sources=host,
        paths=paths,
        base_name=base_name,
        num_layers=text_config(live.config).num_hidden_layers,
        dtype=resolve_dtype(dtype),
        device=torch.device(device),
        live_name=live_name,
    )
