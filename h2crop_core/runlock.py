"""One run per name: a lock in the run's storage (a local folder or an object store such as ``s3://``).

Two trainings (or sweeps) under one name in one storage would interleave their checkpoints and resume from
either's, so the second is refused. The lock lives beside what it protects,
``<storage>/.h2crop_locks/<name>/<token>.json``, and works where only whole-object writes and listings
exist (S3 has no rename and no exclusive create through pyarrow): each contender writes its own entry,
then lists the folder, and withdraws if any other live entry is there. Two that start at the same instant
may both withdraw; neither proceeds beside the other.

A holder refreshes its entry's heartbeat while it runs. An entry is stale (and removed by the next
contender) once its heartbeat is older than ``stale_after_s``, or at once when it comes from this host and
its process is gone, so a crashed run never leaves its name stuck.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from h2crop_core.errors import H2CropError
from h2crop_core.storage import Remote

LOCKS_FOLDER = ".h2crop_locks"
HEARTBEAT_S = 15.0
STALE_AFTER_S = 90.0


class RunInUse(H2CropError):
    """The run's name is held by another live run in the same storage."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


@dataclass
class RunLock:
    """Hold ``name`` in ``storage`` for the life of a ``with`` block (or :meth:`acquire` / :meth:`release`).

    Args:
        storage: the run's storage, e.g. ``ray_results`` or ``s3://bucket/runs``.
        name: the run (or sweep) name.
        kind: what holds it ("training", "sweep"), for the message a refused contender sees.
    """

    storage: str
    name: str
    kind: str = "run"
    heartbeat_s: float = HEARTBEAT_S
    stale_after_s: float = STALE_AFTER_S
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._entries_store = Remote(self.where)
        self._fs, self.folder = self._entries_store.fs, self._entries_store.root.rstrip("/")
        self.path = f"{self.folder}/{self.token}.json"
        self.started = time.time()

    @property
    def where(self) -> str:
        return f"{self.storage.rstrip('/')}/{LOCKS_FOLDER}/{self.name}"

    def acquire(self) -> RunLock:
        """Take the name, or raise :class:`RunInUse` naming the holder."""
        self._write()
        others = [entry for entry in self._entries() if entry.get("token") != self.token]
        if others:
            self._delete(f"{self.token}.json")
            holder = others[0]
            seen = time.time() - float(holder.get("heartbeat", 0))
            raise RunInUse(
                f"{self.kind} name {self.name!r} is in use in {self.storage}: held by {holder.get('kind', 'a run')} on host "
                f"{holder.get('host')} (pid {holder.get('pid')}, started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(holder.get('started', 0))))}, "
                f"seen {seen:.0f} s ago); choose another name, or wait for it to finish (a crashed holder's lock {self.where} "
                f"expires {self.stale_after_s:.0f} s after its last heartbeat)"
            )
        self._thread = threading.Thread(target=self._beat, name=f"h2crop-lock-{self.name}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._delete(f"{self.token}.json")

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------------------------- entries
    def _record(self) -> dict:
        return {
            "token": self.token,
            "kind": self.kind,
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "heartbeat": time.time(),
        }

    def _write(self) -> None:
        """Write (or refresh) this holder's entry; a reader never sees half of it (see :meth:`Remote.write`)."""
        data = json.dumps(self._record()).encode()
        self._entries_store.write(f"{self.token}.json", lambda file: file.write(data))

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._write()
            except OSError:  # a storage hiccup: the next beat tries again (stale only after several misses)
                pass

    def _entries(self) -> list[dict]:
        """Live entries of this name (stale ones are removed on the way)."""
        live = []
        for name in sorted(self._entries_store.names()):
            if not name.endswith(".json"):  # an entry being written
                continue
            try:
                entry = json.loads(self._entries_store.read_text(name))
            except (OSError, ValueError):  # removed meanwhile, or not ours to read
                continue
            if self._stale(entry):
                self._delete(name)
            else:
                live.append(entry)
        return live

    def _stale(self, entry: dict) -> bool:
        if entry.get("token") == self.token:
            return False
        if time.time() - float(entry.get("heartbeat", 0)) > self.stale_after_s:
            return True
        return entry.get("host") == socket.gethostname() and not _pid_alive(int(entry.get("pid", 0)))

    def _delete(self, name: str) -> None:
        try:
            self._entries_store.delete(name)
        except OSError:  # another contender removed it, or the store is unreachable: the entry goes stale
            pass
