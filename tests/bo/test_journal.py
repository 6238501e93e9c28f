"""The crash-safe journal (bo/journal.py)."""

from __future__ import annotations

import math
import sqlite3

import pytest

from bo.journal import Journal, SettingsMismatch


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
