"""One primary per study on a PostgreSQL storage: a second primary of the study (another run_dir,
the same database and study_name) is refused in one line naming the first, before it loads a
model; the first killed with -9, the server releases its advisory lock and a restart completes."""
from __future__ import annotations

import psycopg
import pytest

from evo_core._primary import advisory_key
from tests.evo_core.test_faults import tiny_study
from tests.evo_core.test_primary import second_primaries_are_refused_until_the_first_dies


def advisory_lock_holder(url: str, study_name: str) -> int | None:
    """The server-side pid of the connection holding the study's primary lock, if any."""
    key = advisory_key(study_name)
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as con:
        row = con.execute("select pid from pg_locks where locktype = 'advisory' and classid = %s and objid = %s "
                          "and objsubid = 2 and granted", (key["cls"], key["key"])).fetchone()
    return row and row[0]


@pytest.mark.slow
def test_a_second_primary_on_a_postgresql_study_is_refused_and_a_killed_one_never_blocks(
        servers, tmp_path, tiny_model_dirs, run_cli, error_line):
    url = servers.database("primary_lock")
    first = [*tiny_study(tmp_path, tiny_model_dirs), f"tracking.storage={url}"]
    second_primaries_are_refused_until_the_first_dies(
        run_cli, error_line, first=first,
        seconds={"same PostgreSQL study, another run_dir": [*first, f"run_dir={tmp_path / 'other'}"]},
        held=lambda pid: advisory_lock_holder(url, "toy_ja_math") is not None)
    assert advisory_lock_holder(url, "toy_ja_math") is None, "released when the restarted primary ended"
