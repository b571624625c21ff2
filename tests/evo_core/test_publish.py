"""What exports publish names models by hub id or folder name, never by a path of this machine."""
from __future__ import annotations

import json

from evo_core import name_models_in_configs, published_name


def test_a_model_is_published_by_hub_id_or_folder_name(tmp_path):
    local = tmp_path / "models" / "shisa-gamma-7b-v1"
    local.mkdir(parents=True)
    snapshot = tmp_path / "hub" / "models--augmxnt--shisa-gamma-7b-v1" / "snapshots" / "0123abc"
    assert published_name("augmxnt/shisa-gamma-7b-v1") == "augmxnt/shisa-gamma-7b-v1"
    assert published_name(snapshot) == "augmxnt/shisa-gamma-7b-v1"  # the HF cache knows the id
    assert published_name(local) == published_name(f"{local}/") == "shisa-gamma-7b-v1"
    assert published_name("/elsewhere/builder/llava_lm") == "llava_lm"  # a path of another machine
    assert published_name("./models/x") == "x"


def test_saved_configs_name_models_not_paths_and_other_files_are_left_alone(tmp_path):
    config = {"model_type": "llava", "text_config": {"_name_or_path": "/home/builder/lm", "vocab_size": 7},
              "vision_config": {"_name_or_path": "google/siglip-base-patch16-224"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    untouched = '{"name_or_path": "base", "x": 1}'
    (tmp_path / "tokenizer_config.json").write_text(untouched)
    name_models_in_configs(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["text_config"] == {"_name_or_path": "lm", "vocab_size": 7}
    assert saved["vision_config"] == config["vision_config"]  # a hub id stays
    assert (tmp_path / "tokenizer_config.json").read_text() == untouched  # nothing to rename: not rewritten
