"""Folders and object-store prefixes through one interface, on a local folder and on a real S3 server."""

import pytest

from h2crop_core.errors import SettingError
from h2crop_core.storage import Remote, filesystem


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return f"{request.getfixturevalue('s3_bucket')}/maps/x"


def test_upload_list_download_delete(location, tmp_path):
    remote = Remote(location)
    assert remote.names() == set() and remote.names("tiles") == set() and not remote.exists("map.json")
    source = tmp_path / "tile.npz"
    source.write_bytes(b"\x00tile" * 1000)
    remote.upload(source, "tiles/000001.npz")
    remote.upload(source, "map.json")
    assert remote.names() == {"map.json"} and remote.names("tiles") == {"000001.npz"}
    assert remote.exists("tiles/000001.npz") and remote.read_text("map.json").startswith("\x00tile")
    copy = remote.download("tiles/000001.npz", tmp_path / "copy" / "t.npz")
    assert copy.read_bytes() == source.read_bytes()
    remote.delete("map.json")
    remote.delete("map.json")  # already gone: no error
    assert remote.names() == set()


def test_a_bad_uri_is_a_setting_error():
    with pytest.raises(SettingError, match="nosuch://bucket/x: not a storage URI"):
        filesystem("nosuch://bucket/x")
