"""The crash-safe journal (bo/journal.py)."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from bo.journal import Journal, JournalInUse, SettingsMismatch


def test_events_round_trip_exactly(tmp_path):
    j = Journal(tmp_path, {"a": 1})
    j.append("ask", run=0, step=1, config={"lr": 0.1, "act": "relu"}, candidate=3)
    for value in (1e34, math.inf, -math.inf, 0.1 + 0.2):
        j.append("tell", run=0, step=1, value=value)
    j.append("fail", run=0, step=2)
    j.close()
    events = list(Journal(tmp_path, {"a": 1}).events())
    assert [e.kind for e in events] == ["ask", "tell", "tell", "tell", "tell", "fail"]
    assert events[0].config == {"lr": 0.1, "act": "relu"} and events[0].candidate == 3
    assert [e.value for e in events[1:5]] == [1e34, math.inf, -math.inf, 0.1 + 0.2]
    assert [e.seq for e in events] == list(range(1, 7))


def test_other_settings_or_format_are_refused(tmp_path):
    Journal(tmp_path, {"a": 1, "b": 2}).close()
    with pytest.raises(ValueError, match="differing: b"):
        Journal(tmp_path, {"a": 1, "b": 3})
    Journal(tmp_path / "nested", {"a": 1, "c": {"x": 1, "y": 2}}).close()
    with pytest.raises(SettingsMismatch) as err:  # nested settings are named outer.inner
        Journal(tmp_path / "nested", {"a": 2, "c": {"x": 1, "y": 3, "z": 0}})
    assert err.value.differing == ("a", "c.y", "c.z")
    conn = sqlite3.connect(tmp_path / "journal.sqlite")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="format 99"):
        Journal(tmp_path, {"a": 1, "b": 2})
    with pytest.raises(ValueError, match="kind"):
        Journal(tmp_path / "other", {}).append("guess", run=0, step=1)


def _stored_format(folder) -> str:
    conn = sqlite3.connect(folder / "journal.sqlite")
    try:
        return conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()[0]
    finally:
        conn.close()


def test_a_format_1_journal_is_read_and_its_first_skip_makes_it_format_2(tmp_path):
    """Format 2 added the skip event. A format-1 journal (written before) resumes and takes
    tells as before; the first skip marks it format 2, so that an older curvepfn, which would
    read the skip as a release, refuses it instead."""
    Journal(tmp_path / "new", {"a": 1}).close()
    assert _stored_format(tmp_path / "new") == "2"
    Journal(tmp_path, {"a": 1}).close()
    conn = sqlite3.connect(tmp_path / "journal.sqlite")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    conn.commit()
    conn.close()
    j = Journal(tmp_path, {"a": 1})
    j.append("ask", run=0, step=1, config={})
    j.append("tell", run=0, step=1, value=0.5)
    assert _stored_format(tmp_path) == "1"  # nothing new written: older readers still can
    j.append("ask", run=0, step=2)
    j.append("skip", run=0, step=2)
    assert _stored_format(tmp_path) == "2"
    assert [e.kind for e in j.events()] == ["ask", "tell", "ask", "skip"]
    j.close()


def test_one_open_journal_per_folder(tmp_path):
    first = Journal(tmp_path, {"a": 1})
    with pytest.raises(JournalInUse, match=f"pid {os.getpid()}"):
        Journal(tmp_path, {"a": 1})
    first.append("ask", run=0, step=1, config={})
    first.close()
    first.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        first.append("tell", run=0, step=1, value=0.5)
    with pytest.raises(RuntimeError, match="closed"):
        list(first.events())
    second = Journal(tmp_path, {"a": 1})  # free again
    assert [e.kind for e in second.events()] == ["ask"]
    second.close()


def test_a_dead_process_releases_its_folder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"from bo.journal import Journal; j = Journal({str(tmp_path)!r}, {{}}); "
         "print('open', flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(JournalInUse, match=f"pid {holder.pid}"):
            Journal(tmp_path, {})
    finally:
        holder.kill()
        holder.wait()
    Journal(tmp_path, {}).close()


def test_numerically_equal_settings_resume(tmp_path):
    Journal(tmp_path, {"lower_bound": 0, "c": {"budget": 100}}).close()
    Journal(tmp_path, {"lower_bound": 0.0, "c": {"budget": 100.0}}).close()


def test_the_journal_may_be_written_from_another_thread(tmp_path):
    j = Journal(tmp_path, {})
    worker = threading.Thread(target=j.append, args=("ask",), kwargs={"run": 0, "step": 1})
    worker.start()
    worker.join()
    assert [e.kind for e in j.events()] == ["ask"]
    j.close()
