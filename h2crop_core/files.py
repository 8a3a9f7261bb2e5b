"""Writing files so that a reader never sees half of one, and naming a file by its content (its digest)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: suffix of the temporary files; anything ending in it is an unfinished write, never a result.
PARTIAL = ".partial"


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any thread writes files
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: the mode a plain ``open(path, "w")`` would give: mkstemp's temporary files are 0600, and renaming one
#: would otherwise leave results (metrics, split lists, stats) unreadable to other users of a shared disk.
FILE_MODE = 0o666 & ~_read_umask()


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a uniquely named temporary file beside ``path``, flush it to disk, then rename
    it to ``path``: ``path`` is either absent, its old self or complete, even after a crash or with a
    concurrent writer. A missing parent folder is created (an output named inside a new folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL)
    try:
        with os.fdopen(handle, "wb") as file:
            os.fchmod(file.fileno(), FILE_MODE)
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path


def write_if_changed(path: str | Path, content: bytes) -> bool:
    """Write ``content`` to ``path`` atomically unless the file already holds exactly it (its modification
    time then stays, so what identifies data by name, size and time sees the same data). Returns whether it
    wrote."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(content) and path.read_bytes() == content:
        return False
    write_atomic(path, lambda file: file.write(content))
    return True


def write_text_atomic(path: str | Path, text: str) -> Path:
    """:func:`write_atomic` for text (UTF-8)."""
    return write_atomic(path, lambda file: file.write(text.encode()))


def write_figure_atomic(path: str | Path, figure: object, *, dpi: int = 100) -> Path:
    """:func:`write_atomic` for a matplotlib figure, saved as PNG (the format is given, not guessed from
    the temporary file's ``.partial`` suffix)."""
    return write_atomic(path, lambda file: figure.savefig(file, format="png", dpi=dpi))


def cached_digest(path: str | Path, cache: dict) -> str:
    """:func:`file_digest`, reused from ``cache`` (absolute path -> size, mtime, digest) while the file's size
    and modification time are unchanged; a touched file is read once more, a rewritten one gets its new digest.
    ``cache`` is updated in place (its owner saves it)."""
    stat = Path(path).stat()
    key = str(Path(path).resolve())
    entry = cache.get(key) or {}
    if entry.get("bytes") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns and entry.get("sha256"):
        return entry["sha256"]
    digest = file_digest(path)
    cache[key] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    return digest


def file_digest(path: str | Path) -> str:
    """SHA-256 (hex) of a file's content, read in 4 MiB chunks so memory stays flat for any file size."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive_folder(folder: Path, command: str, error: type[Exception]):
    """Hold ``folder/.lock`` while a run writes into ``folder``: a second run of ``command`` into the same folder
    is refused with ``error`` instead of mixing its pieces in (the lock goes with the process, even killed)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise error(f"{folder}: another {command} is writing here (it holds {folder / '.lock'})") from None
        yield
