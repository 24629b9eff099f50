"""Writing a file atomically, with the permissions any new file of the user gets.

Every package writes through this one function: the run directory's JSON
files, the baseline cache, exported modules. The text goes to a temporary file
in the same folder, is flushed to disk, and is renamed over the target, so a
reader (or a kill -9) sees the old file or the new one, never half of one.
tempfile.mkstemp creates files readable by their owner only; the result here
gets 0666 minus the umask, as open() would give it (0644 with the usual umask).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (else set and restored)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> None:
    """Replace `path` with `text` in one step; on any failure the old file is left as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)
