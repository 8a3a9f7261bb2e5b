import json
import os
import shutil

from h2crop_core.files import file_digest
from h2crop_core.mapping.region import MANIFEST, REGION_FILES, read_manifest, region_identity


def test_the_synthetic_region_follows_the_format(synth_root):
    manifest = read_manifest(synth_root / "region")
    assert manifest["files"] == REGION_FILES
    assert sorted(p.name for p in (synth_root / "region").iterdir()) == sorted([MANIFEST, *REGION_FILES.values()])


def test_region_identity_follows_the_content_not_the_path(synth_root, tmp_path):
    original = synth_root / "region"
    identity = region_identity(original, read_manifest(original))
    assert identity["manifest_sha256"] == file_digest(original / MANIFEST)
    assert set(identity["rasters"]) == set(REGION_FILES)
    moved = shutil.copytree(original, tmp_path / "moved", copy_function=shutil.copy2)  # same bytes and times
    assert region_identity(moved, read_manifest(moved)) == identity
    stat = (moved / "prior.tif").stat()
    os.utime(moved / "prior.tif", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a rewritten raster
    assert region_identity(moved, read_manifest(moved))["rasters"]["prior"] != identity["rasters"]["prior"]
    manifest = json.loads((moved / MANIFEST).read_text())
    (moved / MANIFEST).write_text(json.dumps({**manifest, "seed": -1}))
    assert region_identity(moved, read_manifest(moved))["manifest_sha256"] != identity["manifest_sha256"]
