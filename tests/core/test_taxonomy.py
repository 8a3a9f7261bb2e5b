import csv
from pathlib import Path

import numpy as np
import pytest

from h2crop_core.data.synth import generate_taxonomy
from h2crop_core.taxonomy import CSV_COLUMNS, Taxonomy, TaxonomyError, load_taxonomy


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_benchmark_taxonomy_is_a_6_36_82_101_tree(shared_taxonomy_csv):
    taxonomy = Taxonomy.from_csv(shared_taxonomy_csv)
    assert taxonomy.num_classes == (7, 37, 83, 102)
    assert "6/36/82/101" in taxonomy.summary() and "strict tree" in taxonomy.summary()
    # every name is stripped (level-4 id 63 carries a trailing space in the file)
    raw = {int(r["level4_id"]): r["level4_name"] for r in _rows(shared_taxonomy_csv)}
    assert raw[63] != raw[63].strip()
    assert taxonomy.class_names(4)[63] == raw[63].strip()
    assert all(name == name.strip() for level in taxonomy.names for name in level)
    # parents agree with the CSV rows
    to_level1 = taxonomy.parent_map(4, 1)
    for row in _rows(shared_taxonomy_csv):
        assert to_level1[int(row["level4_id"])] == int(row["level1_id"])
    # level 1 "arable_crops" holds 84 of the 101 leaves
    arable = taxonomy.class_names(1).index("arable_crops")
    assert int((to_level1[1:102] == arable).sum()) == 84


def test_generated_taxonomy_round_trips_through_csv(tmp_path):
    taxonomy = generate_taxonomy(seed=5)
    assert taxonomy.num_classes == (7, 37, 83, 102)
    again = Taxonomy.from_csv(taxonomy.to_csv(tmp_path / "t.csv"))
    assert again.names == taxonomy.names
    np.testing.assert_array_equal(again.paths, taxonomy.paths)


def test_default_location_is_the_data_root_and_can_be_overridden(tmp_path):
    generate_taxonomy(seed=1).to_csv(tmp_path / "cascade_labels.csv")
    other = generate_taxonomy((2, 3, 4, 5), seed=2).to_csv(tmp_path / "other.csv")
    assert load_taxonomy(tmp_path).num_classes == (7, 37, 83, 102)
    assert load_taxonomy(tmp_path, other).num_classes == (3, 4, 5, 6)


def test_a_class_with_two_parents_is_rejected_naming_the_row(tmp_path):
    rows = _rows(generate_taxonomy(seed=0).to_csv(tmp_path / "t.csv"))
    # give the level-3 class of row 5 a different level-2 parent on a second leaf row
    target = rows[4]["level3_id"]
    other = next(r for r in rows if r["level2_id"] != rows[4]["level2_id"])
    other_parent = other["level2_id"]
    rows.append(
        dict(
            other,
            level3_id=target,
            level3_name=rows[4]["level3_name"],
            level4_id=str(len(rows) + 1),
            level4_name="extra",
        )
    )
    with pytest.raises(
        TaxonomyError, match=rf"row {len(rows)}: level3_id {target} has parent level2_id {other_parent}.*strict tree"
    ):
        Taxonomy.from_csv(_write(tmp_path / "bad.csv", rows))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda rows: rows[0].update(level2_id="99"), "level2 ids must be contiguous"),
        (lambda rows: rows[3].update(level4_id=rows[2]["level4_id"]), "row 4: level4_id .* already defined on row 3"),
        (lambda rows: rows[1].update(level1_id="x"), "row 2: level1_id must be an integer"),
        (lambda rows: rows[1].update(level3_id="0"), "row 2: level3_id must be in 1..254"),
        (lambda rows: rows[2].update(level1_name=rows[2]["level1_name"] + "_renamed"), "level1_id .* is named"),
    ],
)
def test_malformed_taxonomies_name_the_row_and_rule(tmp_path, edit, message):
    rows = _rows(generate_taxonomy((3, 5, 8, 10), seed=0).to_csv(tmp_path / "t.csv"))
    edit(rows)
    with pytest.raises(TaxonomyError, match=message):
        Taxonomy.from_csv(_write(tmp_path / "bad.csv", rows))


def test_missing_file_column_or_rows_are_clear_errors(tmp_path):
    with pytest.raises(TaxonomyError, match="not found"):
        Taxonomy.from_csv(tmp_path / "nope.csv")
    (tmp_path / "cols.csv").write_text("HCAT3_code,level1_id\n1,1\n")
    with pytest.raises(TaxonomyError, match="missing column"):
        Taxonomy.from_csv(tmp_path / "cols.csv")
    (tmp_path / "empty.csv").write_text(",".join(CSV_COLUMNS) + "\n")
    with pytest.raises(TaxonomyError, match="no classes"):
        Taxonomy.from_csv(tmp_path / "empty.csv")


def test_parent_maps_between_any_two_levels():
    taxonomy = generate_taxonomy(seed=4)
    for fine in range(1, 5):
        for coarse in range(1, fine + 1):
            table = taxonomy.parent_map(fine, coarse)
            leaves = taxonomy.paths[1:]
            np.testing.assert_array_equal(table[leaves[:, fine - 1]], leaves[:, coarse - 1])
            assert table[0] == 0 and table[255] == 255
            assert table[taxonomy.num_classes[fine - 1]] == 255  # beyond the taxonomy
    with pytest.raises(ValueError, match="finer to a coarser"):
        taxonomy.parent_map(1, 3)
    # composition: 4 -> 2 -> 1 equals 4 -> 1
    np.testing.assert_array_equal(
        taxonomy.parent_map(2, 1)[taxonomy.parent_map(4, 2)][:102], taxonomy.parent_map(4, 1)[:102]
    )


def test_consistency_counts_valid_paths_and_skips_unlabelled():
    taxonomy = generate_taxonomy(seed=4)
    rng = np.random.default_rng(0)
    leaves = rng.integers(0, 102, size=(8, 8))
    stack = np.moveaxis(taxonomy.paths[leaves], -1, 0).astype(np.uint8)  # (4, 8, 8) valid everywhere
    assert taxonomy.consistency(stack) == 1.0
    broken = stack.copy()
    # a level-3 id whose parent differs from the level-2 id on the first two rows (16 of 64 pixels)
    for y in range(2):
        for x in range(8):
            wrong = [c for c in range(1, 83) if taxonomy.parent_map(3, 2)[c] != broken[1, y, x]]
            broken[2, y, x] = wrong[0]
    assert taxonomy.consistency(broken) == pytest.approx(48 / 64)
    mask = taxonomy.valid_path_mask(broken)
    assert not mask[:2].any() and mask[2:].all()
    # unlabelled pixels are left out; batches work
    broken[:, 0, :] = 255
    assert taxonomy.consistency(broken) == pytest.approx(48 / 56)
    assert taxonomy.consistency(np.stack([stack, broken])) == pytest.approx((64 + 48) / 120)
    # a level-1 id beyond the taxonomy is never valid
    beyond = stack.copy()
    beyond[:, 0, 0] = (9, 0, 0, 0)
    assert not taxonomy.valid_path_mask(beyond)[0, 0]
    # mixed background is not a path
    mixed = np.zeros((4, 1, 1), np.uint8)
    mixed[0] = taxonomy.paths[5, 0]
    assert taxonomy.consistency(mixed) == 0.0


def test_colours_follow_the_tree():
    taxonomy = generate_taxonomy(seed=4)
    for level in range(1, 5):
        colours = taxonomy.colours(level)
        assert colours.shape == (taxonomy.num_classes[level - 1], 3) and colours.dtype == np.uint8
        assert tuple(colours[0]) == (0, 0, 0)
    level1 = taxonomy.colours(1)
    assert len({tuple(c) for c in level1[1:]}) == len(level1) - 1  # level-1 classes all distinct
