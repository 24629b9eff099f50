"""The run directory: what a search writes to disk, and reading it back.

runs/<run_id>/
  config.json        the resolved configuration (written once)
  events.jsonl       append-only: one JSON record per line (candidates, held-out
                     scores, restarts, progress), each with a sequence number;
                     flushed and fsync'ed line by line, so a kill -9 loses at
                     most the line being written
  checkpoint.json    the RNG state, the elapsed time, and a summary of the state
                     (counters, population and hall-of-fame ids) that the replayed
                     events must reproduce; written to a temporary file, fsync'ed,
                     then renamed over the old one
  hall_of_fame.json  the ranked Pareto front with programs and scores (for people)
  lock               the PID of the process running the search (an flock)
  timings.jsonl      wall-clock seconds per candidate in deterministic mode, kept
                     out of events.jsonl so that two such runs write it byte for byte

Everything is JSON: nothing is ever unpickled or evaluated from a run
directory. A truncated last line (the write a kill interrupted) is cut off
before anything new is appended; any other damage is an error that names
the file and line and changes nothing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from primitives.errors import OptsearchError
from primitives.files import atomic_write_text

CHECKPOINT_SCHEMA = "optsearch.checkpoint"
# 2: structural hashes the same in every process, refinement stopping early;
# 3: fingerprints from the NumPy probe, rounded on the float's bit pattern;
# 4: event-sourced state (the checkpoint holds the RNG and a summary to check the
#    replayed events against), typed events, fingerprints from the torch probe.
CHECKPOINT_VERSION = 4
HALL_OF_FAME = "hall_of_fame.json"


class RunDirError(OptsearchError):
    """A run directory, checkpoint or event log that cannot be used as it is."""


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, separators=(",", ":"), allow_nan=True))


LOCK_FILE = "lock"


class RunStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._events = None
        self._lock: int | None = None

    # --- one writer at a time ---------------------------------------------------

    def acquire(self) -> None:
        """Take the run directory for this process (run and resume), or say who has it.

        An exclusive flock on runs/<id>/lock, held until close(): the kernel
        drops it when the holder exits, however it exits, so the lock left by a
        kill -9 is simply free again (the PID written in it is then stale and
        is replaced). Readers (show, export) take no lock.
        """
        path = self.path / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunDirError(f"cannot write to run directory {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise RunDirError(f"run {self.path} is in use by PID {holder}; wait for it to finish "
                                  f"or stop that process first") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor drops the flock
            self._lock = None

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.json"

    @property
    def timings_path(self) -> Path:
        return self.path / "timings.jsonl"

    # --- creating and opening ------------------------------------------------------

    def create(self, config: dict[str, Any]) -> None:
        if self.path.exists() and any(self.path.iterdir()):
            raise RunDirError(f"run directory {self.path} already exists and is not empty; "
                              f"resume it with `optsearch resume {self.path}` or choose another run id")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {self.path}: {exc.strerror}") from None
        self.acquire()
        if self.config_path.exists():  # another process created it between the check and the lock
            self.release()
            raise RunDirError(f"run directory {self.path} was just created by another process")
        atomic_write_json(self.config_path, config)
        self.events_path.touch()

    def read_config(self) -> dict[str, Any]:
        if not self.path.is_dir():
            raise RunDirError(f"{self.path} is not a run directory (it does not exist)")
        try:
            data = json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise RunDirError(f"{self.path} is not a run directory (no config.json)") from None
        except (OSError, ValueError, RecursionError) as exc:
            raise RunDirError(f"{self.config_path} is damaged: {exc}") from None
        if not isinstance(data, dict):
            raise RunDirError(f"{self.config_path} is damaged: not a table of sections")
        return data

    # --- events ------------------------------------------------------------------

    def read_records(self, repair: bool = False) -> list[tuple[int, dict[str, Any]]]:
        """(line number, record) of every complete event, in order.

        A record is complete when its newline is on disk (append_event writes
        the newline last), so an unterminated last line is the write a kill
        cut short: it is dropped, and cut from the file if `repair`.
        """
        if not self.events_path.exists():
            return []
        raw = self.events_path.read_bytes()
        records, position, number = [], 0, 0
        while (newline := raw.find(b"\n", position)) != -1:
            number += 1
            line = raw[position:newline]
            position = newline + 1
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise RunDirError(f"{self.events_path}, line {number}: damaged record ({exc})") from None
            if not isinstance(record, dict) or "seq" not in record:
                raise RunDirError(f"{self.events_path}, line {number}: not an event record")
            records.append((number, record))
        if repair and position < len(raw):
            with open(self.events_path, "r+b") as handle:
                handle.truncate(position)
        return records

    def read_events(self) -> list[dict[str, Any]]:
        return [record for _, record in self.read_records()]

    def append_event(self, event: dict[str, Any]) -> None:
        if self._events is None:
            self._events = open(self.events_path, "a", encoding="utf-8")
        self._events.write(json.dumps(event, separators=(",", ":"), allow_nan=True) + "\n")
        self._events.flush()
        os.fsync(self._events.fileno())

    def append_timing(self, record: dict[str, Any]) -> None:
        with open(self.timings_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    # --- checkpoint and hall of fame -------------------------------------------------

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.checkpoint_path, {"schema": CHECKPOINT_SCHEMA, "version": CHECKPOINT_VERSION, **state})

    def read_checkpoint(self, run_id: str, config_digest: str) -> dict[str, Any] | None:
        """The checkpoint, checked to belong to this run; None if there is none yet."""
        if not self.checkpoint_path.exists():
            return None
        try:
            data = json.loads(self.checkpoint_path.read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise RunDirError(f"checkpoint {self.checkpoint_path} is corrupt ({exc}); nothing was changed") from None
        if not isinstance(data, dict) or data.get("schema") != CHECKPOINT_SCHEMA:
            raise RunDirError(f"{self.checkpoint_path} is not an optsearch checkpoint; nothing was changed")
        if data.get("version") != CHECKPOINT_VERSION:
            raise RunDirError(f"checkpoint version {data.get('version')!r} is not supported (this optsearch reads "
                              f"version {CHECKPOINT_VERSION}; the run was written by another version of optsearch); "
                              f"nothing was changed")
        if data.get("run_id") != run_id or data.get("config_digest") != config_digest:
            raise RunDirError(f"checkpoint {self.checkpoint_path} belongs to another run or configuration "
                              f"(run {data.get('run_id')!r}); nothing was changed")
        return data

    def write_hall_of_fame(self, members: list[dict[str, Any]]) -> None:
        """hall_of_fame.json: the ranked front, readable (PySR's hall_of_fame.csv, as JSON)."""
        atomic_write_text(self.path / HALL_OF_FAME, json.dumps(members, indent=1, allow_nan=True) + "\n")

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        self.release()
