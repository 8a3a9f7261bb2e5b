"""One run per name: the storage lock, on a local folder and on a real S3 server."""

import json
import socket
import subprocess
import sys
import time

import pytest

from h2crop_core.runlock import RunInUse, RunLock


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


def test_a_crashed_holder_on_this_host_does_not_keep_the_name(storage):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    lock = RunLock(storage, "crashed")
    _plant(lock, host=socket.gethostname(), pid=int(dead.stdout))
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
            with lock._fs.open_input_stream(lock.path) as stream:
                return json.loads(stream.read())["heartbeat"]

        first = beat()
        deadline = time.monotonic() + 10
        while beat() == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert beat() > first
