"""STAC items as scenes: both catalogues' asset names, offsets from the baseline (not the catalogue's flags)."""

from __future__ import annotations

import datetime as dt
import json

import pystac
import pytest

from h2crop_core.errors import SettingError
from h2crop_core.mapping.region import RegionError
from h2crop_core.products.stac import EARTH_SEARCH_KEYS, PLANETARY_COMPUTER_KEYS, stac_scenes


def item(keys: dict, name: str = "S2B_31UDQ_20220615_0_L2A", **properties) -> pystac.Item:
    made = pystac.Item(
        name,
        geometry=None,
        bbox=None,
        datetime=dt.datetime(2022, 6, 15, 10, 50, tzinfo=dt.UTC),
        properties={"proj:epsg": 32631, "proj:bbox": [600000, 4990000, 610000, 5000000], **properties},
    )
    for key in keys:
        made.add_asset(key, pystac.Asset(f"/data/{name}/{key}.tif"))
    return made


def write(tmp_path, *items) -> str:
    path = tmp_path / "items.json"
    path.write_text(json.dumps(pystac.ItemCollection(items).to_dict()))
    return str(path)


def test_earth_search_and_planetary_computer_names_give_the_same_bands(tmp_path):
    (es,) = stac_scenes(write(tmp_path, item(EARTH_SEARCH_KEYS, **{"s2:processing_baseline": "05.09"})))
    (pc,) = stac_scenes(write(tmp_path, item(PLANETARY_COMPUTER_KEYS, **{"s2:processing_baseline": "05.09"})))
    assert es.bands["B8A"].endswith("/nir08.tif") and pc.bands["B8A"].endswith("/B8A.tif")
    assert es.bands["B11"].endswith("/swir16.tif") and pc.bands["B11"].endswith("/B11.tif")
    assert es.scl.endswith("/scl.tif") and pc.scl.endswith("/SCL.tif")
    assert es.crs == "EPSG:32631" and es.bounds == (600000, 4990000, 610000, 5000000) and es.month == 6
    assert set(es.offsets.values()) == {-1000.0} == set(pc.offsets.values())


def test_offset_follows_the_baseline_unless_the_catalogue_harmonised_the_dns(tmp_path):
    old, new, applied = stac_scenes(
        write(
            tmp_path,
            item(EARTH_SEARCH_KEYS, "a", **{"s2:processing_baseline": "03.01"}),
            item(EARTH_SEARCH_KEYS, "b", **{"s2:processing_baseline": "04.00"}),
            item(EARTH_SEARCH_KEYS, "c", **{"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True}),
        )
    )
    assert old.offsets["B2"] == 0 and new.offsets["B2"] == -1000 and applied.offsets["B2"] == 0
    assert "processing baseline 04.00" in new.offset_rule and "boa_offset_applied" in applied.offset_rule


def test_items_without_what_compositing_needs_are_refused(tmp_path):
    with pytest.raises(RegionError, match="item S2B.* states no processing baseline"):
        stac_scenes(write(tmp_path, item(EARTH_SEARCH_KEYS)))
    with pytest.raises(RegionError, match="lacks band assets: expected Earth Search keys"):
        stac_scenes(write(tmp_path, item(["blue", "green"], **{"s2:processing_baseline": "05.09"})))
    with pytest.raises(SettingError, match="name the collection with --collection"):
        stac_scenes("https://earth-search.example/v1")


@pytest.fixture()
def static_server(tmp_path):
    """A loopback HTTP server over ``tmp_path`` (a static STAC catalog is served like this)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # no request lines in the test output
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_url_that_is_not_a_searchable_stac_api_is_refused_in_one_line(tmp_path, static_server):
    catalog = pystac.Catalog("scenes", "a static catalog")
    catalog.normalize_hrefs(str(tmp_path))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    with pytest.raises(RegionError, match="catalog.json: a STAC catalog without item search"):
        stac_scenes(f"{static_server}/catalog.json", collection="sentinel-2-l2a", year=2022)
    with pytest.raises(RegionError, match="missing.json: not a reachable STAC API \\(APIError"):
        stac_scenes(f"{static_server}/missing.json", collection="sentinel-2-l2a")
