"""Bad input to `python -m evo_genome` is one line before any model loads or any study exists:
an adapter for another base, adapters that cannot mix (rank, target modules), an empty
population, rates outside [0, 1], sigma < 0, k > N, a corrupt adapter_model.safetensors."""
from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="module")
def tiny_adapters(tiny_model_dirs, tmp_path_factory, make_adapter):
    root, base = tmp_path_factory.mktemp("genome_adapters"), tiny_model_dirs["base"]
    return {"one": make_adapter(base, root / "one", seed=1), "two": make_adapter(base, root / "two", seed=2),
            "rank4": make_adapter(base, root / "rank4", seed=3, r=4),
            "mlp": make_adapter(base, root / "mlp", seed=4, targets=("q_proj", "up_proj"))}


def experts(**folders) -> tuple[str, str]:
    """The overrides that make `folders` the population (instead of the zoo's experts)."""
    return "~lora.experts", "+lora.experts={" + ",".join(f"{name}:'{path}'" for name, path in folders.items()) + "}"


def refused(cli_error, tmp_path, *overrides) -> str:
    line = cli_error("evo_genome", f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
                     *overrides)
    assert not (tmp_path / "run" / "study.db").exists() and not (tmp_path / "mlruns").exists()
    return line


def test_an_adapter_for_another_base(cli_error, tmp_path, tiny_adapters):
    # the zoo's base with an adapter trained on the tests' tiny base
    line = refused(cli_error, tmp_path, *experts(one=tiny_adapters["one"]))
    assert "adapter 'one' is for another base" in line and "features" in line, line


def test_adapters_of_different_ranks_or_targets(cli_error, tmp_path, tiny_model_dirs, tiny_adapters):
    base = f"lora.base={tiny_model_dirs['base']}"
    line = refused(cli_error, tmp_path, base, *experts(one=tiny_adapters["one"], rank4=tiny_adapters["rank4"]))
    assert "adapters 'one' and 'rank4' differ in r (2 vs 4)" in line, line
    line = refused(cli_error, tmp_path, base, *experts(one=tiny_adapters["one"], mlp=tiny_adapters["mlp"]))
    assert "adapters 'one' and 'mlp' differ in target_modules" in line and "up_proj" in line, line


def test_an_empty_population(cli_error, tmp_path):
    assert "lora.experts is empty: an empty population" in refused(cli_error, tmp_path, "~lora.experts", "+lora.experts={}")


@pytest.mark.parametrize("override, message", [
    ("genome.crossover_rate=1.5", "genome.crossover_rate must be in [0, 1]; got 1.5"),
    ("genome.individual_mutation_rate=-0.1", "genome.individual_mutation_rate must be in [0, 1]; got -0.1"),
    ("genome.gene_mutation_rate=2", "genome.gene_mutation_rate must be in [0, 1]; got 2"),
    ("genome.alpha=1.01", "genome.alpha must be in [0, 1]; got 1.01"),
    ("genome.sigma=-0.001", "genome.sigma must be >= 0; got -0.001"),
    ("genome.ensemble_k=11", "genome.ensemble_k (11) must be <= genome.population (10)"),
    ("genome.population=0", "genome.population must be >= 1; got 0"),
    ("genome.phi=[1,2,3]", "genome.phi must be 4 non-negative weights"),
    ("mode=nosuch", "mode must be one of genome, experts, mixing"),
    ("helper=true", "evo_genome runs one worker"),
])
def test_bad_settings(cli_error, tmp_path, override, message):
    assert message in refused(cli_error, tmp_path, override)


def test_a_corrupt_adapter_model_safetensors(cli_error, tmp_path, tiny_model_dirs, tiny_adapters):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_adapters["two"], corrupt)
    weights = corrupt / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    line = refused(cli_error, tmp_path, f"lora.base={tiny_model_dirs['base']}",
                   *experts(one=tiny_adapters["one"], corrupt=corrupt))
    assert "adapter 'corrupt': corrupt adapter_model.safetensors" in line, line
