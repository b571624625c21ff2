"""bench/beam_cost.py runs on the zoo and prints, per task, greedy and the paper's beams side by
side: the beams' forward tokens at least num_beams times greedy's (every beam is counted)."""
from __future__ import annotations

import sys

from bench import beam_cost


def test_prints_both_tasks_with_every_beam_counted(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["beam_cost.py", "--items", "4", "--reps", "1"])
    beam_cost.main()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("zoo")] == ["zoo ja_math", "zoo ja_vqa"]
    rows = [line.split() for line in lines if line.strip().startswith(("fast_greedy", "hf_generate"))]
    assert len(rows) == 6
    for task in (rows[:3], rows[3:]):
        forward = [int(row[-5]) for row in task]  # the column before generated, differ, fitness name and value
        assert forward[2] >= beam_cost.PAPER["num_beams"] * min(forward[:2])
