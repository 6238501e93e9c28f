"""A crash-safe, append-only journal of an optimiser's asks and tells (SQLite).

Every event is one row, committed in its own transaction with ``synchronous=FULL`` before the call
that made it returns, so a process killed at any moment (even by SIGKILL) leaves a journal that
holds every event whose call returned and nothing half-written. The optimiser's state is a pure
function of its settings and its events: :class:`~bo.freeze_thaw.FreezeThaw` rebuilds itself by
replaying them. One optimiser owns a journal at a time (its workers may be anywhere: they talk to
that process): the journal holds an exclusive lock on ``state_dir/journal.lock`` while it is open,
so a second optimiser opening the same folder, in this process or another, gets
:class:`JournalInUse` instead of interleaving its events with the first one's. The operating
system drops the lock when its process dies, however it dies, so a crashed optimiser's folder can
be resumed at once. (On a system without ``fcntl``, i.e. Windows, there is no lock.)

Events (``kind``): ``ask`` (a trial handed out: run id, step, config), ``tell`` (its value),
``skip`` (its step trained but not measured), ``fail`` (the run crashed or diverged),
``release`` (a pending trial given back unanswered, e.g. its worker died). Values are stored as
text (``repr``) so that inf and 1e34 survive exactly.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: no lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["Event", "Journal", "JournalInUse", "SettingsMismatch"]

JOURNAL_FORMAT_VERSION = 2
"""Format 2 added the ``skip`` event; format-1 journals are read too, and the first ``skip``
appended to one makes it format 2, so an older curvepfn (which would misread the event) refuses
it."""
_READABLE_FORMATS = ("1", "2")
_FILE = "journal.sqlite"
_LOCK = "journal.lock"
EVENT_KINDS = ("ask", "tell", "skip", "fail", "release")


@dataclass(frozen=True)
class Event:
    """One journal row."""

    seq: int  # position in the journal, from 1
    kind: str  # one of EVENT_KINDS
    run: int  # the run (trial id)
    step: int  # the step asked / told
    value: float | None  # the told value (tell only)
    config: dict[str, Any] | None  # the configuration (ask only)
    candidate: int | None  # row of the candidate table (ask only, when there is one)
    time: float  # wall-clock (Unix seconds) when written


class Journal:
    """The journal in ``state_dir/journal.sqlite``; created on first use.

    Args:
        state_dir: the folder (created if missing).
        settings: what must be equal for a resumed run (space, max_steps, ...), JSON-serialisable.
            Stored on creation; on reopening, a difference raises ValueError.

    Raises:
        JournalInUse: another open journal (another optimiser) holds the folder.
        SettingsMismatch: the folder's journal was written with other settings.
        ValueError: a journal of another format version.

    The connection may be used from any thread, one call at a time (the optimiser serialises its
    calls).
    """

    def __init__(self, state_dir: str | Path, settings: dict[str, Any]) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / _FILE
        self._lock_file = _lock(self.dir / _LOCK)
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except BaseException:
            _unlock(self._lock_file)
            raise
        try:
            self._open(settings)
        except BaseException:
            self.close()
            raise

    def _open(self, settings: dict[str, Any]) -> None:
        """Create the tables, or check the stored settings against ``settings``."""
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        with self._transaction():
            self._conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                "kind TEXT NOT NULL, run INTEGER NOT NULL, step INTEGER NOT NULL, value TEXT, "
                "config TEXT, candidate INTEGER, time REAL NOT NULL)"
            )
            stored = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
            wanted = json.dumps(settings, sort_keys=True)
            if not stored:
                self._conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("format_version", str(JOURNAL_FORMAT_VERSION)), ("settings", wanted)],
                )
                stored = {"format_version": str(JOURNAL_FORMAT_VERSION)}
            elif stored.get("format_version") not in _READABLE_FORMATS:
                raise ValueError(
                    f"{self.path} has journal format {stored.get('format_version')}; this version "
                    f"reads formats {', '.join(_READABLE_FORMATS)}"
                )
            elif json.loads(stored["settings"]) != json.loads(wanted):  # 0 == 0.0: equal
                diff = _differing(json.loads(stored["settings"]), json.loads(wanted))
                raise SettingsMismatch(
                    f"{self.path} belongs to an optimiser with other settings (differing: "
                    f"{', '.join(diff)}); use another state_dir or the same settings",
                    differing=diff,
                )
            self._format = stored["format_version"]

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def append(
        self,
        kind: str,
        *,
        run: int,
        step: int,
        value: float | None = None,
        config: dict[str, Any] | None = None,
        candidate: int | None = None,
    ) -> None:
        """Append one event durably (returns after the commit reached the disk)."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        if self._conn is None:
            raise RuntimeError(f"the journal in {self.dir} is closed")
        with self._transaction():
            if kind == "skip" and self._format == "1":  # older readers must now refuse it
                self._conn.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
            self._conn.execute(
                "INSERT INTO events (kind, run, step, value, config, candidate, time) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    int(run),
                    int(step),
                    None if value is None else repr(float(value)),
                    None if config is None else json.dumps(config),
                    None if candidate is None else int(candidate),
                    time.time(),
                ),
            )
        if kind == "skip":
            self._format = "2"

    def events(self) -> Iterator[Event]:
        """All events in order."""
        if self._conn is None:
            raise RuntimeError(f"the journal in {self.dir} is closed")
        rows = self._conn.execute(
            "SELECT seq, kind, run, step, value, config, candidate, time FROM events ORDER BY seq"
        ).fetchall()
        for seq, kind, run, step, value, config, candidate, when in rows:
            yield Event(
                seq=seq,
                kind=kind,
                run=run,
                step=step,
                value=None if value is None else float(value),
                config=None if config is None else json.loads(config),
                candidate=candidate,
                time=when,
            )

    def close(self) -> None:
        """Close the connection and release the folder (the journal stays on disk). Idempotent."""
        if getattr(self, "_conn", None) is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]
        if self._lock_file is not None:
            _unlock(self._lock_file)
            self._lock_file = None


class JournalInUse(RuntimeError):
    """Another open journal holds the folder: two optimisers would interleave their events."""


def _lock(path: Path) -> IO[str] | None:
    """Open ``path`` and take an exclusive, non-blocking lock on it; the open file (None without
    ``fcntl``). Closing the file, or collecting it, drops the lock. The file records the holder's
    pid, for the error message only."""
    if fcntl is None:
        return None
    fh = open(path, "a+")  # noqa: SIM115 (held open for the journal's life)
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read(32).strip() or "unknown"
        fh.close()
        raise JournalInUse(
            f"{path.parent} is open in another optimiser (pid {holder}); close() it first, or "
            "use another state_dir. The lock goes with its process, so a crashed optimiser's "
            "folder is free again."
        ) from None
    fh.truncate(0)
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def _unlock(fh: IO[str] | None) -> None:
    if fh is not None:
        fh.close()  # closing the file drops its flock


class SettingsMismatch(ValueError):
    """The journal belongs to an optimiser with other settings; ``differing`` names them
    (nested ones as ``outer.inner``)."""

    def __init__(self, message: str, *, differing: list[str]) -> None:
        super().__init__(message)
        self.differing = tuple(differing)


def _differing(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Sorted names of the settings that differ, nested ones as ``outer.inner``."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differing(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(prefix + k)
    return out
