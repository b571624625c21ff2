"""The docs' result tables are what their runs wrote: bench/results.py renders each marked block from
docs/results/<block>.json, and the docs must show exactly that (no figure copied by hand)."""
from __future__ import annotations

import json
import re

import pytest

from bench import results


def test_every_block_is_shown_somewhere_and_has_its_runs():
    shown = {m for doc in results.DOCS for m in re.findall(r"<!-- results:(\w+) -->", doc.read_text())}
    assert shown == set(results.BLOCKS)
    for name, block in results.BLOCKS.items():
        assert set(json.loads((results.DATA / f"{name}.json").read_text())) == set(block.runs), name


def test_docs_show_the_stored_tables_exactly():
    assert results.render_docs(list(results.BLOCKS), write=False) == []


def test_a_hand_edit_is_caught(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    text = results.DOCS[0].read_text()
    edited = re.sub(r"(\| best_merge \| )[\d.]+", r"\g<1>99.9", text)
    assert edited != text, "the README shows the best merge's row"
    readme.write_text(edited)
    monkeypatch.setattr(results, "DOCS", [readme])
    [differs] = results.render_docs(["ps_demo"], write=False)
    assert differs.endswith("README.md: ps_demo")


def test_unknown_block_fails_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["results", "nosuch"])
    with pytest.raises(SystemExit, match="unknown blocks \\['nosuch'\\]; known: ps_demo"):
        results.main()


def test_a_block_keeps_the_columns_it_shows(monkeypatch, tmp_path):
    # a run's table that gains a metric (a new objective metric, or one a block does not list)
    # renders the block as before; mgsm_ja's paper metrics show up, after acc/acc_ja, once stored
    stored = results.load("dfs_demo")
    wider = {run: {model: row | {"rougeL_mid": 0.5} for model, row in table.items()} for run, table in stored.items()}
    (tmp_path / "dfs_demo.json").write_text(json.dumps(wider))
    monkeypatch.setattr(results, "DATA", tmp_path)
    assert results.render_docs(["dfs_demo"], write=False) == []
    paper = {run: {model: row | {"paper_acc": 0.25, "paper_acc_ja": 0.125} for model, row in table.items()}
             for run, table in stored.items()}
    (tmp_path / "dfs_demo.json").write_text(json.dumps(paper))
    header = results.BLOCKS["dfs_demo"].render(results.load("dfs_demo")).splitlines()[0]
    assert header == "| model | acc | acc_ja | paper_acc | paper_acc_ja | layers |"
    assert "| 25.0 | 12.5 |" in results.BLOCKS["dfs_demo"].render(results.load("dfs_demo"))
