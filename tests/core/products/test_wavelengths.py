"""The EnMAP band table: 224 nominal centres, two detectors, and where the benchmark's 218 leave six out."""

import json

import numpy as np

from h2crop_core.products.wavelengths import (
    BENCHMARK_BANDS,
    BENCHMARK_DROPPED,
    BENCHMARK_ENMAP_NM,
    ENMAP_L2A_NOMINAL_NM,
    SWIR_BANDS,
    VNIR_BANDS,
)


def test_the_nominal_table_ascends_within_each_detector_and_the_detectors_overlap():
    nominal = np.asarray(ENMAP_L2A_NOMINAL_NM)
    assert nominal.size == 224 and len(VNIR_BANDS) + len(SWIR_BANDS) == 224
    vnir, swir = nominal[VNIR_BANDS[0] - 1 : VNIR_BANDS[-1]], nominal[SWIR_BANDS[0] - 1 :]
    assert (np.diff(vnir) > 0).all() and (np.diff(swir) > 0).all()
    assert swir[0] < vnir[-1], "the SWIR detector starts below where the VNIR one ends (the 900-1000 nm overlap)"
    assert (nominal[0], nominal[90], nominal[91], nominal[223]) == (418.416, 993.338, 901.961, 2445.3)


def test_the_benchmark_keeps_218_bands_leaving_out_the_1380_nm_absorption():
    assert BENCHMARK_DROPPED == (130, 131, 132, 133, 134, 135) and len(BENCHMARK_ENMAP_NM) == 218
    dropped = [ENMAP_L2A_NOMINAL_NM[b - 1] for b in BENCHMARK_DROPPED]
    assert min(dropped) > 1330 and max(dropped) < 1391
    assert BENCHMARK_ENMAP_NM[128] == 1318.88 and BENCHMARK_ENMAP_NM[129] == 1461.1
    assert BENCHMARK_BANDS[157] == 164 and BENCHMARK_ENMAP_NM[157] == 1939.14
    assert BENCHMARK_ENMAP_NM[157] - BENCHMARK_ENMAP_NM[156] > 150, "band 164 follows the instrument's own gap"


def test_the_published_statistics_fall_where_the_six_bands_are_left_out(shared_norm_stats):
    enmap = json.loads(shared_norm_stats.read_text())["EnMAP"]
    mean, std = np.asarray(enmap["mean"]), np.asarray(enmap["std"])
    assert mean.size == len(BENCHMARK_ENMAP_NM) == 218
    ratio = mean[1:] / mean[:-1]
    assert int(np.argmin(ratio)) == 128, "the largest fall is from index 128 (band 129) to 129 (band 136)"
    assert 3400 < mean[128] < 3550 and 1500 < mean[129] < 1600
    assert int(np.argmax(std)) == 157 and BENCHMARK_BANDS[157] == 164, (
        "the noisiest band lies in the 1,900 nm absorption"
    )
