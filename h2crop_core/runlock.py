"""One run per name: a lock in the run's storage (a local folder or an object store such as ``s3://``).

Two trainings (or sweeps) under one name in one storage would interleave their checkpoints and resume from
either's, so the second is refused. The lock lives beside what it protects,
``<storage>/.h2crop_locks/<name>/<token>.json``, and works where only whole-object writes and listings
exist (S3 has no rename and no exclusive create through pyarrow): each contender writes its own entry,
then lists the folder, and withdraws if any other live entry is there. Two that start at the same instant
may both withdraw; neither proceeds beside the other.

A holder refreshes its entry's heartbeat while it runs. An entry is stale (and removed by the next
contender) once its heartbeat is older than ``stale_after_s``, or at once when its process is gone and
that can be told from here: the same host, PID namespace and boot, so a crashed run never leaves its name
stuck, and a run in another container that shares this host name is judged by its heartbeat alone.

A holder can lose the name while it runs: when its entry is removed (a contender judged it stale), or when
its heartbeats fail long enough that others may judge it stale. The heartbeat then stops (it never
re-creates a removed entry: that is how two runs would both proceed), :attr:`RunLock.lost` turns true and
:meth:`RunLock.check`, which a long run calls at safe points, raises :class:`LockLost`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from h2crop_core.errors import H2CropError, SettingError
from h2crop_core.storage import Remote

LOCKS_FOLDER = ".h2crop_locks"
HEARTBEAT_S = 15.0
STALE_AFTER_S = 90.0

log = logging.getLogger(__name__)


class RunInUse(H2CropError):
    """The run's name is held by another live run in the same storage."""


class LockLost(RunInUse):
    """This run no longer holds its name (its entry was removed, replaced or not refreshed in time): another
    run may hold it now, so this one stops at its next safe point."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


@functools.cache
def _process_space() -> dict[str, str]:
    """Where a pid names one process: this process's PID namespace and the machine's boot, each empty where
    the system does not say (not Linux, no ``/proc``). Containers share a host name but not a PID namespace;
    a rebooted host (or another machine with the same name) reuses pids."""
    readers = {
        "pid_ns": lambda: os.readlink("/proc/self/ns/pid"),
        "boot_id": lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
    }
    space = {}
    for key, read in readers.items():
        try:
            space[key] = read()
        except OSError:
            space[key] = ""
    return space


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


@dataclass
class RunLock:
    """Hold ``name`` in ``storage`` for the life of a ``with`` block (or :meth:`acquire` / :meth:`release`).

    A long holder calls :meth:`check` at safe points (between epochs, sweep steps, map tiles) and stops when it
    raises; :attr:`lost` and :attr:`failed_beats` tell the lock's state without raising.

    Args:
        storage: the run's storage, e.g. ``ray_results`` or ``s3://bucket/runs``.
        name: the run (or sweep) name.
        kind: what holds it ("training", "sweep"), for the message a refused contender sees.
        heartbeat_s: seconds between two refreshes of this holder's entry.
        stale_after_s: seconds without a heartbeat after which another run's entry is stale; this holder
            counts itself lost once its own entry could be judged so (see :attr:`lost`).
        token: this holder's id, the name of its entry.

    Raises:
        SettingError: ``heartbeat_s`` is not positive and shorter than ``stale_after_s``.
    """

    storage: str
    name: str
    kind: str = "run"
    heartbeat_s: float = HEARTBEAT_S
    stale_after_s: float = STALE_AFTER_S
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lost: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _lost_reason: str = field(default="", init=False, repr=False)
    _held: bool = field(default=False, init=False, repr=False)
    _owns_entry: bool = field(default=True, init=False, repr=False)
    _failed_beats: int = field(default=0, init=False, repr=False)
    _last_error: str = field(default="", init=False, repr=False)
    _last_beat: tuple[float, float] = field(default=(0.0, 0.0), init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_s < self.stale_after_s:  # a slower heartbeat lets every entry go stale
            raise SettingError(
                f"run lock {self.name!r}: heartbeat_s ({self.heartbeat_s}) must be positive and shorter than "
                f"stale_after_s ({self.stale_after_s})"
            )
        self._entries_store = Remote(self.where)
        self._fs, self.folder = self._entries_store.fs, self._entries_store.root.rstrip("/")
        self.path = f"{self.folder}/{self.token}.json"
        self.started = time.time()

    @property
    def where(self) -> str:
        return f"{self.storage.rstrip('/')}/{LOCKS_FOLDER}/{self.name}"

    @property
    def entry(self) -> str:
        """This holder's entry, as the user names the storage."""
        return f"{self.where}/{self.token}.json"

    def acquire(self) -> RunLock:
        """Take the name, or raise :class:`RunInUse` naming the holder."""
        stamp = time.time(), time.monotonic()
        self._write(stamp[0])
        self._last_beat = stamp
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
        self._held = True
        self._thread = threading.Thread(target=self._beat, name=f"h2crop-lock-{self.name}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._held = False
        if self._owns_entry:  # a removed entry is gone; a replaced one is another holder's
            self._delete(f"{self.token}.json")

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ---------------------------------------------------------------------------------------- state
    @property
    def lost(self) -> bool:
        """Whether this holder lost the name: its entry was removed or replaced, or no heartbeat has reached
        the storage for ``stale_after_s - heartbeat_s`` seconds (the next one could land after others may
        judge the entry stale). Reads the state the heartbeat keeps: no storage access."""
        return self._loss() is not None

    @property
    def failed_beats(self) -> int:
        """Heartbeats that failed in a row (0 after one that reached the storage)."""
        return self._failed_beats

    def check(self) -> None:
        """Raise :class:`LockLost` if this holder lost the name; cheap (no storage access), for a long run to
        call at safe points and stop before it interleaves with another run of the same name."""
        reason = self._loss()
        if reason is not None:
            raise LockLost(
                f"{self.kind} name {self.name!r} in {self.storage} is no longer held by this {self.kind}: {reason}; "
                f"another run may hold the name now, so this one stops"
            )

    def _loss(self) -> str | None:
        """Why the name is lost, or None while it is held (or not taken yet)."""
        if not self._lost.is_set() and self._expired():  # also when a beat hangs in a storage call
            self._lose(self._silence())
        return self._lost_reason if self._lost.is_set() else None

    def _silent_s(self) -> float:
        wall, monotonic = self._last_beat
        # others compare the entry's heartbeat with their wall clock; the monotonic one survives a step back
        return max(time.time() - wall, time.monotonic() - monotonic)

    def _expired(self) -> bool:
        return self._held and self._silent_s() >= self.stale_after_s - self.heartbeat_s

    def _silence(self) -> str:
        return (
            f"no heartbeat reached {self.entry} for {self._silent_s():.0f} s ({self._failed_beats} failed in a row, "
            f"last: {self._last_error or 'none finished'}); it may be judged stale after {self.stale_after_s:.0f} s"
        )

    def _lose(self, reason: str) -> None:
        if not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()
            log.error("run lock %s: lost: %s", self.where, reason)

    # ------------------------------------------------------------------------------------ heartbeat
    def _beat(self) -> None:
        """Refresh the entry every ``heartbeat_s`` until released or lost; a failed beat is retried."""
        while not self._stop.wait(self.heartbeat_s) and not self._lost.is_set():
            if self._expired():
                self._lose(self._silence())
                return
            reason = self._beat_once()
            if reason is not None:
                self._lose(reason)
                return

    def _beat_once(self) -> str | None:
        """Check that the entry is still this holder's, then refresh it. Returns why the name is lost, or None
        (a failure is counted, and loses the name only once the entry may have been judged stale)."""
        try:
            holder = json.loads(self._entries_store.read_text(f"{self.token}.json")).get("token")
        except FileNotFoundError:
            self._owns_entry = False
            return f"its entry {self.entry} was removed (judged stale by another run?)"
        except (OSError, ValueError, AttributeError) as error:  # unreachable, or a damaged entry: try again
            return self._failed(error)
        if holder != self.token:
            self._owns_entry = False
            return f"its entry {self.entry} now names another holder ({holder})"
        stamp = time.time(), time.monotonic()
        try:
            self._write(stamp[0])
        except OSError as error:
            return self._failed(error)
        if self._expired():  # it landed when others may have judged the entry stale, removed it, and gone on
            return (
                f"a heartbeat reached {self.entry} only {self._silent_s():.0f} s after the last one (the entry may "
                f"have been judged stale and removed meanwhile)"
            )
        self._last_beat = stamp
        if self._failed_beats:
            log.warning("run lock %s: heartbeat back after %d failed", self.where, self._failed_beats)
        self._failed_beats, self._last_error = 0, ""
        return None

    def _failed(self, error: OSError | ValueError | AttributeError) -> str | None:
        self._failed_beats += 1
        self._last_error = _one_line(error)
        log.warning(
            "run lock %s: heartbeat failed (%d in a row: %s); lost if none succeeds %.0f s after the last",
            self.where,
            self._failed_beats,
            self._last_error,
            self.stale_after_s - self.heartbeat_s,
        )
        return self._silence() if self._expired() else None

    # ------------------------------------------------------------------------------------- entries
    def _record(self, heartbeat: float) -> dict:
        return {
            "token": self.token,
            "kind": self.kind,
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **_process_space(),  # new keys only: older code reads the entry as before
            "started": self.started,
            "heartbeat": heartbeat,
        }

    def _write(self, heartbeat: float) -> None:
        """Write (or refresh) this holder's entry stamped ``heartbeat``; a reader never sees half of it (see
        :meth:`Remote.write`)."""
        data = json.dumps(self._record(heartbeat)).encode()
        self._entries_store.write(f"{self.token}.json", lambda file: file.write(data))

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
        return _same_process_space(entry) and not _pid_alive(int(entry.get("pid", 0)))

    def _delete(self, name: str) -> None:
        try:
            self._entries_store.delete(name)
        except OSError:  # another contender removed it, or the store is unreachable: the entry goes stale
            pass


def _same_process_space(entry: dict) -> bool:
    """Whether ``entry``'s pid names a process here: the same host name, PID namespace and boot. An entry
    without them (older code) or a Linux without ``/proc`` cannot tell: then only its heartbeat counts."""
    space = _process_space()
    if sys.platform.startswith("linux") and not all(space.values()):
        return False
    return entry.get("host") == socket.gethostname() and all(entry.get(key) == value for key, value in space.items())
