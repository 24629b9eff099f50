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
  identity.json      {"run_uuid": 32 hex digits}, made when the run is created (or, for a run
                     older than it, on its first tracked resume): what MLflow knows the search
                     by, since run ids repeat across folders (projA/runs/exp, projB/runs/exp)
  lock               the PID of the process running the search (the run directory
                     itself is flocked, so removing this file frees nothing)
  timings.jsonl      wall-clock seconds per candidate in deterministic mode, kept
                     out of events.jsonl so that two such runs write it byte for byte

Everything is JSON: nothing is ever unpickled or evaluated from a run
directory. Its files are opened without following symbolic links and must be
the run's own regular files of bounded size (check_files, open_file): a run
directory may come from someone else, and a link named events.jsonl or lock
must not make a resume write into, or read without end from, a file that is
not the run's. A truncated last line (the write a kill interrupted) is cut off
before anything new is appended; any other damage is an error that names
the file and line and changes nothing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import uuid
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
PLOTS = "plots"
IDENTITY = "identity.json"
RUN_UUID = re.compile(r"[0-9a-f]{32}\Z")
# The files a run's processes read or write (plots/ holds only files too): none may be a link or a special file.
RUN_FILES = ("config.json", "events.jsonl", "checkpoint.json", HALL_OF_FAME, LOCK_FILE, "timings.jsonl",
             "tracking.json", IDENTITY)
# The most this version reads of a file: a file of a run is never read without bound (a link to /dev/zero is
# refused as not a regular file; a regular file larger than these is refused, not read).
MAX_BYTES = {"config.json": 1 << 20, "checkpoint.json": 64 << 20, "events.jsonl": 2 << 30, "tracking.json": 1 << 20,
             IDENTITY: 4096, LOCK_FILE: 4096}


def open_file(path: Path, flags: int, mode: int = 0o666) -> int:
    """A descriptor of the regular file `path`, never opened through a symbolic link; RunDirError otherwise.

    O_NOFOLLOW refuses a link as the last component; O_NONBLOCK keeps a FIFO from
    blocking the open (it is then refused as not a regular file). A file opened to
    write must have no other hard link: it would be someone else's file too.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunDirError(f"{path} is a symbolic link; the files of a run directory must be regular files "
                              f"(refused; nothing was changed)") from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, opened to write
            raise RunDirError(f"{path} is not a regular file (refused; nothing was changed)") from None
        raise
    info = os.fstat(fd)
    writing = flags & (os.O_WRONLY | os.O_RDWR)
    if not stat.S_ISREG(info.st_mode) or (writing and info.st_nlink > 1):
        os.close(fd)
        _check_own_file(path, info)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def _check_own_file(path: Path, info: os.stat_result) -> None:
    """A file of the run's own: regular, and with no other hard link (a write to it would be another file's)."""
    if not stat.S_ISREG(info.st_mode):
        kind = ("a symbolic link" if stat.S_ISLNK(info.st_mode)
                else "not a regular file (a FIFO, a device, a folder ...)")
    elif info.st_nlink > 1:
        kind = "a file with another hard link"
    else:
        return
    raise RunDirError(f"{path} is {kind}; the files of a run directory must be its own regular files "
                      f"(refused; nothing was changed)")


def read_file(path: Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file of a run (see open_file), at most `limit` (default: by its name)."""
    limit = MAX_BYTES.get(path.name, 64 << 20) if limit is None else limit
    fd = open_file(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise RunDirError(f"{path} is {size} bytes, more than the {limit} this version reads (refused)")
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 24))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:  # it grew while being read
        raise RunDirError(f"{path} is more than the {limit} bytes this version reads (refused)")
    return data


def open_text(path: Path, flags: int):
    """A text file object on open_file's descriptor (appending: O_WRONLY | O_APPEND | O_CREAT)."""
    return os.fdopen(open_file(path, flags), "a" if flags & os.O_APPEND else "r+", encoding="utf-8")


class RunStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._events = None
        self._lock: int | None = None
        self._directory_lock: int | None = None

    # --- one writer at a time ---------------------------------------------------

    def acquire(self) -> None:
        """Take the run directory for this process (run and resume), or say who has it.

        An exclusive flock on the run directory itself, held until close(): the
        kernel drops it when the holder exits, however it exits, so the lock left
        by a kill -9 is simply free again. The directory, not the lock file, is
        what is locked: a lock file removed while a search runs would otherwise
        let a second process take a new one and write the same run. The lock
        file says who holds the run (its PID, stale after a kill and then
        replaced) and is flocked too, as versions before this one expect.
        Readers (show, export) take no lock.
        """
        try:
            directory = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RunDirError(f"cannot open run directory {self.path}: {exc.strerror}") from None
        try:
            self._flock(directory)
            try:
                fd = open_file(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT)
            except OSError as exc:
                raise RunDirError(f"cannot write to run directory {self.path}: {exc.strerror}") from None
        except BaseException:
            os.close(directory)
            raise
        try:
            self._flock(fd)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            os.close(directory)
            raise
        self._lock, self._directory_lock = fd, directory

    def _flock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise RunDirError(f"run {self.path} is in use by PID {self._holder()}; wait for it to finish "
                              f"or stop that process first") from None

    def _holder(self) -> str:
        try:
            return read_file(self.path / LOCK_FILE, 64).decode(errors="replace").strip() or "unknown"
        except (OSError, OptsearchError):
            return "unknown (its lock file was removed or replaced)"

    def release(self) -> None:
        for name in ("_lock", "_directory_lock"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)  # closing the descriptor drops the flock
                setattr(self, name, None)

    def check_files(self) -> None:
        """Refuse a run directory whose files are links or special files, before anything reads or writes them.

        Files are opened without following links anyway (open_file); plots/ is
        written by its name (progress.png, ...) and every PNG in it is read for
        MLflow, so it must be a folder of regular files, not a link.
        """
        plots = self.path / PLOTS
        paths = [self.path / name for name in RUN_FILES]
        if os.path.lexists(plots):
            if not stat.S_ISDIR(os.lstat(plots).st_mode):
                raise RunDirError(f"{plots} is not a folder (a symbolic link?); plots are written into it "
                                  f"(refused; nothing was changed)")
            paths += [Path(entry.path) for entry in os.scandir(plots)]
        for path in paths:
            if os.path.lexists(path):
                _check_own_file(path, os.lstat(path))


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
        atomic_write_json(self.path / IDENTITY, {"run_uuid": uuid.uuid4().hex})
        atomic_write_json(self.config_path, config)
        os.close(open_file(self.events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND))

    def read_config(self) -> dict[str, Any]:
        if not self.path.is_dir():
            raise RunDirError(f"{self.path} is not a run directory (it does not exist)")
        try:
            data = json.loads(read_file(self.config_path))
        except FileNotFoundError:
            raise RunDirError(f"{self.path} is not a run directory (no config.json)") from None
        except (OSError, ValueError, RecursionError) as exc:
            raise RunDirError(f"{self.config_path} is damaged: {exc}") from None
        if not isinstance(data, dict):
            raise RunDirError(f"{self.config_path} is damaged: not a table of sections")
        return data

    def read_identity(self) -> str | None:
        """The run's UUID (identity.json), None for a run made before it existed; RunDirError if damaged."""
        path = self.path / IDENTITY
        try:
            data = json.loads(read_file(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            raise RunDirError(f"{path} is damaged: {exc}; nothing was changed") from None
        value = data.get("run_uuid") if isinstance(data, dict) else None
        if not isinstance(value, str) or not RUN_UUID.match(value):
            raise RunDirError(f"{path} is damaged (run_uuid must be 32 hexadecimal digits); nothing was changed")
        return value

    def identity(self) -> str:
        """The run's UUID, made and saved now if the run predates identity.json (the lock holder calls this)."""
        value = self.read_identity()
        if value is None:
            value = uuid.uuid4().hex
            atomic_write_json(self.path / IDENTITY, {"run_uuid": value})
        return value

    # --- events ------------------------------------------------------------------

    def read_records(self, repair: bool = False) -> list[tuple[int, dict[str, Any]]]:
        """(line number, record) of every complete event, in order.

        A record is complete when its newline is on disk (append_event writes
        the newline last), so an unterminated last line is the write a kill
        cut short: it is dropped, and cut from the file if `repair`.
        """
        try:
            raw = read_file(self.events_path)
        except FileNotFoundError:
            return []
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
            fd = open_file(self.events_path, os.O_WRONLY)
            try:
                os.ftruncate(fd, position)
            finally:
                os.close(fd)
        return records

    def read_events(self) -> list[dict[str, Any]]:
        return [record for _, record in self.read_records()]

    def append_event(self, event: dict[str, Any]) -> None:
        if self._events is None:
            self._events = open_text(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self._events.write(json.dumps(event, separators=(",", ":"), allow_nan=True) + "\n")
        self._events.flush()
        os.fsync(self._events.fileno())

    def append_timing(self, record: dict[str, Any]) -> None:
        with open_text(self.timings_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT) as handle:
            handle.write(json.dumps(record) + "\n")

    # --- checkpoint and hall of fame -------------------------------------------------

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.checkpoint_path, {"schema": CHECKPOINT_SCHEMA, "version": CHECKPOINT_VERSION, **state})

    def read_checkpoint(self, run_id: str, config_digest: str) -> dict[str, Any] | None:
        """The checkpoint, checked to belong to this run; None if there is none yet."""
        try:
            data = json.loads(read_file(self.checkpoint_path))
        except FileNotFoundError:
            return None
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
