"""One run per name: the storage lock, on a local folder and on a real S3 server."""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from h2crop_core.errors import SettingError
from h2crop_core.runlock import LockLost, RunInUse, RunLock


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "ray_results")
    return f"{request.getfixturevalue('s3_bucket')}/runs"


def _plant(lock: RunLock, **entry) -> None:
    """Write another holder's entry into the lock folder (as a run elsewhere would have)."""
    lock._fs.create_dir(lock.folder, recursive=True)
    record = {
        "token": "other",
        "kind": "training",
        "name": lock.name,
        "started": time.time(),
        "heartbeat": time.time(),
        **entry,
    }
    with lock._fs.open_output_stream(f"{lock.folder}/other.json") as stream:
        stream.write(json.dumps(record).encode())


def test_a_second_holder_is_refused_naming_the_first_until_it_releases(storage):
    first = RunLock(storage, "same", "training").acquire()
    with pytest.raises(
        RunInUse,
        match=rf"training name 'same' is in use in {storage}: held by training on host {socket.gethostname()} \(pid \d+",
    ):
        RunLock(storage, "same", "training").acquire()
    with RunLock(storage, "other-name", "training"):  # another name is free
        pass
    first.release()
    with RunLock(storage, "same", "sweep") as second:  # released: free again, and the refused one left nothing behind
        assert [info.path for info in second._fs.get_file_info(_selector(second))] == [second.path]


def _selector(lock: RunLock):
    from pyarrow import fs

    return fs.FileSelector(lock.folder)


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(dead.stdout)


def _here() -> dict:
    """Where this process runs, as its entry says: host name, PID namespace and boot (empty where unknown)."""

    def read(what):
        try:
            return what()
        except OSError:
            return ""

    return {
        "host": socket.gethostname(),
        "pid_ns": read(lambda: os.readlink("/proc/self/ns/pid")),
        "boot_id": read(lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip()),
    }


def test_a_crashed_holder_on_this_host_does_not_keep_the_name(storage):
    lock = RunLock(storage, "crashed")
    _plant(lock, **_here(), pid=_dead_pid())
    with lock:  # the dead pid's entry is stale at once
        pass


def test_a_holder_elsewhere_keeps_the_name_while_its_heartbeat_is_fresh(storage):
    lock = RunLock(storage, "remote", stale_after_s=60)
    _plant(lock, host="another-node", pid=1)
    with pytest.raises(RunInUse, match="held by training on host another-node"):
        lock.acquire()
    _plant(lock, host="another-node", pid=1, heartbeat=time.time() - 61)  # silent for longer than stale_after_s
    with RunLock(storage, "remote", stale_after_s=60):
        pass


def test_the_holder_refreshes_its_heartbeat(storage):
    with RunLock(storage, "beating", heartbeat_s=0.2) as lock:

        def beat() -> float:
            for _ in range(100):
                with lock._fs.open_input_stream(lock.path) as stream:
                    data = stream.read()
                try:
                    return json.loads(data)["heartbeat"]
                except ValueError:  # moto's server can serve an object while it is replaced (S3 does not)
                    time.sleep(0.01)
            raise AssertionError(f"{lock.path}: never a whole entry")

        first = beat()
        deadline = time.monotonic() + 10
        while beat() == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert beat() > first


@pytest.mark.parametrize(
    "elsewhere",
    [{"pid_ns": "pid:[1]"}, {"boot_id": "another-boot"}, {"pid_ns": None, "boot_id": None}],
    ids=["another-pid-namespace", "another-boot", "older-entry-without-them"],
)
def test_a_dead_pid_from_another_container_with_this_host_name_keeps_the_name_while_fresh(storage, elsewhere):
    lock = RunLock(storage, "container", stale_after_s=60)
    here = {key: value for key, value in {**_here(), **elsewhere}.items() if value is not None}
    _plant(lock, **here, pid=_dead_pid())  # that pid means nothing here: only the heartbeat counts
    with pytest.raises(RunInUse, match=rf"held by training on host {socket.gethostname()}"):
        lock.acquire()
    _plant(lock, **here, pid=_dead_pid(), heartbeat=time.time() - 61)
    with RunLock(storage, "container", stale_after_s=60):
        pass


def _until(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_a_holder_whose_entry_a_contender_removed_loses_the_name_and_does_not_recreate_it(storage):
    # removed between two heartbeats, as a contender removes an entry it judged stale (a beat in flight
    # would land after the removal: without conditional writes no store can refuse it)
    with RunLock(storage, "taken-over", "training", heartbeat_s=1, stale_after_s=30) as lock:
        lock.check()  # held: nothing to say
        assert not lock.lost
        RunLock(storage, "taken-over")._delete(f"{lock.token}.json")
        assert _until(lambda: lock.lost)  # at the next heartbeat
        with pytest.raises(LockLost, match=rf"training name 'taken-over' in {storage} is no longer held.*was removed"):
            lock.check()
        time.sleep(1.5)  # past the next heartbeat: none re-creates the entry
        assert not lock._fs.get_file_info(lock.path).is_file
        with RunLock(storage, "taken-over", "training"):  # the contender holds the name alone
            pass


def test_a_holder_whose_entry_names_another_holder_loses_the_name_and_leaves_that_entry(storage):
    lock = RunLock(storage, "replaced", heartbeat_s=1, stale_after_s=30).acquire()
    record = {"token": "other", "kind": "training", "name": "replaced", "heartbeat": time.time()}  # between beats
    lock._entries_store.write(f"{lock.token}.json", lambda file: file.write(json.dumps(record).encode()))
    assert _until(lambda: lock.lost)
    with pytest.raises(LockLost, match=r"run name 'replaced' .* now names another holder \(other\)"):
        lock.check()
    lock.release()
    assert json.loads(lock._entries_store.read_text(f"{lock.token}.json"))["token"] == "other"


def _break(lock: RunLock) -> Callable[[], None]:
    """Make the lock's folder unusable for real (a regular file where the folder was: root ignores chmod);
    returns what puts it back."""
    aside = f"{lock.folder}.aside"
    os.rename(lock.folder, aside)
    with open(lock.folder, "w") as file:
        file.write("not a folder")

    def mend() -> None:
        os.remove(lock.folder)
        os.rename(aside, lock.folder)

    return mend


def test_failed_heartbeats_are_counted_and_retried_until_the_storage_is_back(tmp_path):
    with RunLock(str(tmp_path / "ray_results"), "hiccup", heartbeat_s=0.1, stale_after_s=30) as lock:
        mend = _break(lock)
        assert _until(lambda: lock.failed_beats >= 3)
        assert not lock.lost  # far from the stale age
        lock.check()
        mend()
        assert _until(lambda: lock.failed_beats == 0)
        assert not lock.lost
        lock.check()
        assert time.time() - json.loads(lock._entries_store.read_text(f"{lock.token}.json"))["heartbeat"] < 5


def test_heartbeats_failing_until_the_stale_age_lose_the_name(tmp_path):
    heartbeat_s, stale_after_s = 0.1, 2.5
    lock = RunLock(
        str(tmp_path / "ray_results"), "outage", "sweep", heartbeat_s=heartbeat_s, stale_after_s=stale_after_s
    )
    with lock:
        mend = _break(lock)
        assert _until(lambda: lock.failed_beats >= 2)
        assert not lock.lost  # still trying
        assert _until(lambda: lock.lost)
        lost_at, (_, last_beat) = time.monotonic(), lock._last_beat
        # not before the next beat could land after others may judge the entry stale
        assert lost_at - last_beat >= stale_after_s - heartbeat_s
        with pytest.raises(
            LockLost, match=r"sweep name 'outage' in .* no heartbeat reached .* \(\d+ failed in a row, last: .*Error"
        ):
            lock.check()
        mend()
        time.sleep(0.3)  # the storage is back, but the lock stays lost: another run may hold the name now
        assert lock.lost


def test_a_heartbeat_slower_than_the_stale_age_is_refused(tmp_path):
    with pytest.raises(SettingError, match=r"heartbeat_s \(90\) must be positive and shorter than stale_after_s \(90"):
        RunLock(str(tmp_path), "slow", heartbeat_s=90)
