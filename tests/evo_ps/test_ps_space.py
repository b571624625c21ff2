"""Search space: parameter names, tensor -> group mapping, bounds, flat values -> tensor params."""
from __future__ import annotations

import pytest

from evo_ps import build_space, merge_method, tensor_group


def llama_names(num_layers: int, *, qwen3: bool = False, bias: bool = False) -> list[str]:
    names = ["model.embed_tokens.weight"]
    for i in range(num_layers):
        p = f"model.layers.{i}."
        names += [p + f"self_attn.{m}_proj.weight" for m in "qkvo"]
        names += [p + f"self_attn.{m}_proj.bias" for m in "qkv"] if bias else []  # Qwen2
        names += [p + "self_attn.q_norm.weight", p + "self_attn.k_norm.weight"] if qwen3 else []
        names += [p + f"mlp.{m}_proj.weight" for m in ("gate", "up", "down")]
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
    return names + ["model.norm.weight", "lm_head.weight"]


def space(method="dare_ties", sources=("ja", "math"), num_layers=4, names=None, **kwargs):
    return build_space(method=merge_method(method), sources=sources, num_layers=num_layers,
                       tensor_names=names or llama_names(num_layers, qwen3=True), **kwargs)


def test_names_per_layer_and_source(pool3):
    s = build_space(method=merge_method("dare_ties"), sources=pool3.source_names,
                    tensor_names=pool3.param_names, num_layers=pool3.num_layers)
    names = [p.name for p in s.params]
    assert names[:4] == ["embed.src_a.weight", "embed.src_a.density", "embed.src_b.weight", "embed.src_b.density"]
    assert names[-1] == "head.src_c.density"
    assert "L03.src_b.density" in names
    assert len(names) == (4 + 2) * 3 * 2  # (layers + embed + head) x sources x (weight, density)
    assert all((p.low, p.high) == (0.0, 1.0) for p in s.params)
    assert s.groups == ("embed", "L00", "L01", "L02", "L03", "head")
    # every tiny-model tensor is mapped: layer tensors to their layer, the rest to embed/head
    assert set(s.group_of) == set(pool3.param_names)
    assert s.group_of["model.layers.2.self_attn.q_norm.weight"] == "L02"
    assert s.group_of["model.norm.weight"] == s.group_of["lm_head.weight"] == "head"


@pytest.mark.parametrize("style", ["llama", "qwen2", "qwen3"])
def test_tensor_groups_for_llama_style_models(style):
    names = llama_names(12, qwen3=style == "qwen3", bias=style == "qwen2")
    groups = {n: tensor_group(n, num_layers=12, granularity=3, split_components=True) for n in names}
    assert groups["model.embed_tokens.weight"] == "embed"
    assert groups["lm_head.weight"] == groups["model.norm.weight"] == "head"
    assert groups["model.layers.4.self_attn.o_proj.weight"] == "L03-05.attn"
    assert groups["model.layers.11.mlp.down_proj.weight"] == "L09-11.mlp"
    assert groups["model.layers.0.post_attention_layernorm.weight"] == "L00-02.norm"
    if style == "qwen2":
        assert groups["model.layers.7.self_attn.k_proj.bias"] == "L06-08.attn"
    if style == "qwen3":
        assert groups["model.layers.7.self_attn.k_norm.weight"] == "L06-08.attn"
    assert tensor_group("model.layers.10.mlp.up_proj.weight", num_layers=12) == "L10"


def test_granularity_components_uniform_and_slerp():
    assert space(granularity=2).groups == ("embed", "L00-01", "L02-03", "head")
    with pytest.raises(ValueError, match=r"granularity 3 must divide the 4 layers exactly; choose one of \[1, 2, 4\]"):
        space(granularity=3)
    split = space(split_components=True)
    assert "L03.attn.ja.weight" in {p.name for p in split.params}
    assert [g for g in split.groups if g.startswith("L01")] == ["L01.attn", "L01.mlp", "L01.norm"]
    uniform = space(uniform=True)
    assert [p.name for p in uniform.params] == ["all.ja.weight", "all.ja.density", "all.math.weight",
                                                "all.math.density"]
    slerp = space("slerp")
    assert [p.name for p in slerp.params][:2] == ["embed.t", "L00.t"]
    assert [p.name for p in space("linear", uniform=True).params] == ["all.ja.weight", "all.math.weight"]


def test_unknown_tensors_and_bad_names_fail():
    with pytest.raises(ValueError, match="tensor model.vision.proj.weight is neither"):
        space(names=["model.vision.proj.weight"])
    with pytest.raises(ValueError, match="layer part 'moe'"):
        space(names=["model.layers.0.moe.gate.weight"], split_components=True)
    with pytest.raises(ValueError, match="names layer 4 but the model has 4 layers"):
        space(names=["model.layers.4.mlp.up_proj.weight"])
    with pytest.raises(ValueError, match="without dots"):
        space(sources=("a.b", "c"))


def test_bounds():
    s = space(bounds={"weight": (-0.5, 1.5), "density": (0.1, 0.9)})
    assert {(p.name.rsplit(".", 1)[1], p.low, p.high) for p in s.params} == {("weight", -0.5, 1.5),
                                                                              ("density", 0.1, 0.9)}
    for bad, message in (({"density": (-0.1, 1.0)}, r"density bounds must lie in \[0, 1\]"),
                         ({"weight": (0.5, 0.5)}, "low < high"),
                         ({"weight": (0.0, float("inf"))}, "finite"),
                         ({"t": (0.0, 1.0)}, "dare_ties searches weight, density; no bounds for t")):
        with pytest.raises(ValueError, match=message):
            space(bounds=bad)
    della = space("della")
    assert {(p.low, p.high) for p in della.params if p.name.endswith("density")} == {(0.151, 0.849)}
    with pytest.raises(ValueError, match=r"inside \(epsilon, 1 - epsilon\)"):
        space("della", bounds={"density": (0.1, 0.8)})


def test_each_method_declares_its_parameters_and_default_bounds():
    def bounds(method, **kwargs):
        return {(p.name.split(".", 1)[1], p.low, p.high) for p in space(method, uniform=True, **kwargs).params}

    assert bounds("breadcrumbs") == {("ja.weight", 0.0, 1.0), ("ja.density", 0.0, 1.0),
                                     ("math.weight", 0.0, 1.0), ("math.density", 0.0, 1.0)}
    assert bounds("sce") == {("select_topk", 0.0, 1.0)}
    assert bounds("nuslerp") == {("ja.weight", 0.0, 1.0), ("math.weight", 0.0, 1.0)}
    assert bounds("nearswap") == {("t", 0.0, 1e-3)}  # weight units, not a fraction
    assert bounds("nearswap", bounds={"t": (0.0, 0.5)}) == {("t", 0.0, 0.5)}
    for baseline in ("model_stock", "karcher"):  # merged once, not searched
        with pytest.raises(ValueError, match=f"{baseline} has no per-tensor parameters: nothing to search"):
            space(baseline)
    assert {p.high for p in build_space(method=merge_method("della_linear", {"epsilon": 0.1}), sources=("a", "b"),
                                        tensor_names=llama_names(2), num_layers=2).params
            if p.name.endswith("density")} == {0.899}
    for method, bad, message in (("nearswap", {"t": (-0.1, 0.1)}, "nearswap t bounds must be >= 0"),
                                 ("sce", {"select_topk": (0.0, 1.5)}, r"sce select_topk bounds must lie in \[0, 1\]"),
                                 ("sce", {"weight": (0, 1)}, "sce searches select_topk; no bounds for weight")):
        with pytest.raises(ValueError, match=message):
            space(method, bounds=bad)


def test_tensor_params_and_broadcast():
    s = space(names=llama_names(4))
    values = {p.name: i / 100 for i, p in enumerate(s.params)}
    tp = s.tensor_params(values)
    assert tp["model.layers.1.mlp.up_proj.weight"] == {
        "weight": {"ja": values["L01.ja.weight"], "math": values["L01.math.weight"]},
        "density": {"ja": values["L01.ja.density"], "math": values["L01.math.density"]}}
    assert tp["lm_head.weight"]["density"]["math"] == values["head.math.density"]
    with pytest.raises(ValueError, match=r"missing \['L00.ja.density'\]"):
        s.tensor_params({k: v for k, v in values.items() if k != "L00.ja.density"})
    with pytest.raises(ValueError, match=r"unknown \['L09.ja.weight'\]"):
        s.tensor_params({**values, "L09.ja.weight": 0.5})

    flat = s.broadcast({"ja.weight": 0.2, "ja.density": 0.3, "math.weight": 0.4, "math.density": 0.5})
    assert flat["L02.math.density"] == 0.5 and flat["embed.ja.weight"] == 0.2 and len(flat) == len(s.params)
    assert space("slerp").broadcast({"t": 0.25})["head.t"] == 0.25
    with pytest.raises(ValueError, match="needs a value for 'math.density'"):
        s.broadcast({"ja.weight": 0.2, "ja.density": 0.3, "math.weight": 0.4})
    assert space("slerp").tensor_params(space("slerp").broadcast({"t": 0.25}))["model.norm.weight"] == {"t": 0.25}


def test_the_layer_params_picture_leaves_the_backend_as_it_was(tmp_path, another_backend):
    import matplotlib

    from evo_ps._plots import plot_layer_params
    from tests.conftest import assert_png

    s = space()
    plot_layer_params(s, {p.name: 0.5 for p in s.params}, tmp_path / "layer_params.png")
    assert matplotlib.get_backend() == another_backend
    assert_png(tmp_path / "layer_params.png")
