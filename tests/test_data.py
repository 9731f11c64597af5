"""Data loaders: each format from small files written here, error messages, fingerprints, digits split."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from assay.data import load_data, load_digits, load_image_folder, load_npz, load_table
from assay.errors import UserError

# --------------------------------------------------------------------------------------------- NPZ


def test_npz_image_with_meta_ids_and_class_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((5, 1, 4, 4)).astype(np.float32)
    y = np.array([0, 2, 1, 2, 0])
    ids = np.array(["a", "b", "c", "d", "e"])
    region = np.array(["north", "south", "north", "east", "south"])
    age = np.array([10, 20, 30, 40, 50])
    path = tmp_path / "scans.npz"
    np.savez(path, x=x, y=y, ids=ids, meta_region=region, meta_age=age, class_names=np.array(["cat", "dog", "eel"]))

    ds = load_npz(path)

    assert ds.modality == "image"
    np.testing.assert_array_equal(ds.x, x)
    assert ds.x.dtype == np.float32
    assert ds.y.dtype == np.int64 and ds.y.tolist() == y.tolist()
    assert ds.ids.tolist() == ids.tolist()
    assert ds.meta["region"].tolist() == region.tolist()
    assert ds.meta["age"].tolist() == age.tolist()
    assert ds.class_names == ["cat", "dog", "eel"]
    assert ds.name == "scans" and ds.source == str(path)


def test_npz_tabular_unlabeled_defaults(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.savez(tmp_path / "t.npz", x=x)
    ds = load_npz(tmp_path / "t.npz", name="mine")
    assert ds.modality == "tabular" and ds.y is None and not ds.has_labels
    assert ds.ids.tolist() == [0, 1, 2, 3]
    assert ds.x.dtype == np.float32 and ds.x.tolist() == x.tolist()
    assert ds.name == "mine" and list(ds.meta.columns) == []


def test_npz_uint8_images_are_scaled_by_1_over_255_with_a_note(tmp_path: Path) -> None:
    x = np.array([[[[0, 128], [255, 7]]]], dtype=np.uint8)
    np.savez(tmp_path / "u8.npz", x=x, y=np.array([1]))
    ds = load_npz(tmp_path / "u8.npz")
    expected = np.array([0, 128, 255, 7], dtype=np.float32) / np.float32(255)  # what PIL-based loaders give
    assert ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x.ravel(), expected)
    assert ds.x.ravel()[2] == 1.0
    assert len(ds.notes) == 1 and "uint8" in ds.notes[0] and "divided by 255" in ds.notes[0]


def test_npz_images_outside_unit_range_are_kept_with_a_warning(tmp_path: Path) -> None:
    x = np.array([[[[0.0, 128.5], [255.0, -3.0]]]], dtype=np.float32)
    np.savez(tmp_path / "f.npz", x=x)
    np.savez(tmp_path / "i.npz", x=x.clip(0).astype(np.int16))  # integers other than uint8: cast, not scaled
    ds = load_npz(tmp_path / "f.npz")
    np.testing.assert_array_equal(ds.x, x)
    assert len(ds.notes) == 1
    assert "[-3, 255]" in ds.notes[0] and "outside [0, 1]" in ds.notes[0] and "unchanged" in ds.notes[0]
    ints = load_npz(tmp_path / "i.npz")
    assert ints.x.ravel().tolist() == [0.0, 128.0, 255.0, 0.0]
    assert len(ints.notes) == 1 and "[0, 255]" in ints.notes[0]


def test_npz_images_inside_unit_range_and_tables_get_no_note(tmp_path: Path) -> None:
    np.savez(tmp_path / "img.npz", x=np.array([[[[0.0, 1.0]]]], dtype=np.float32))
    np.savez(tmp_path / "tab.npz", x=np.array([[0, 200], [255, 7]], dtype=np.uint8))  # tables are not images
    np.savez(tmp_path / "tabf.npz", x=np.array([[-50.0, 1e6]]))
    assert load_npz(tmp_path / "img.npz").notes == []
    table = load_npz(tmp_path / "tab.npz")
    assert table.notes == [] and table.x.tolist() == [[0.0, 200.0], [255.0, 7.0]]
    assert load_npz(tmp_path / "tabf.npz").notes == []


def test_npz_fortran_order_big_endian_and_compressed_round_trip(tmp_path: Path) -> None:
    x = np.asfortranarray(np.arange(24, dtype=">f8").reshape(2, 3, 4) / 24)
    meta = np.array([1.5, -2.0])
    np.savez_compressed(tmp_path / "c.npz", x=x, meta_w=meta, ids=np.array(["p", "q"]))
    ds = load_npz(tmp_path / "c.npz")
    reference = np.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(ds.x, reference["x"].astype(np.float32))
    assert ds.meta["w"].tolist() == meta.tolist() and ds.ids.tolist() == ["p", "q"]


def test_npz_text_from_unicode_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "txt.npz", x=np.array(["good film", "bad", "ünïcode ok"]), y=np.array([1, 0, 1]))
    ds = load_npz(tmp_path / "txt.npz")
    assert ds.modality == "text" and ds.x.dtype == object
    assert ds.x.tolist() == ["good film", "bad", "ünïcode ok"]
    assert all(type(s) is str for s in ds.x)


def test_npz_whole_float_labels_are_accepted(tmp_path: Path) -> None:
    np.savez(tmp_path / "f.npz", x=np.zeros((3, 2)), y=np.array([0.0, 2.0, 1.0]))
    ds = load_npz(tmp_path / "f.npz")
    assert ds.y.dtype == np.int64 and ds.y.tolist() == [0, 2, 1]


def test_npz_fractional_labels_are_rejected(tmp_path: Path) -> None:
    np.savez(tmp_path / "f.npz", x=np.zeros((3, 2)), y=np.array([0.0, 0.5, 1.0]))
    with pytest.raises(UserError, match="whole class indices") as info:
        load_npz(tmp_path / "f.npz")
    assert "rows [1]" in str(info.value)


def test_npz_one_hot_labels_get_argmax_hint(tmp_path: Path) -> None:
    np.savez(tmp_path / "oh.npz", x=np.zeros((2, 2)), y=np.eye(2))
    with pytest.raises(UserError, match="argmax"):
        load_npz(tmp_path / "oh.npz")


def test_npz_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", x=np.array(["a", "bb"], dtype=object), y=np.array([0, 1]))
    with pytest.raises(UserError) as info:
        load_npz(tmp_path / "obj.npz")
    message = str(info.value)
    assert "'x'" in message and "object" in message and "fixed-width unicode" in message


def test_npz_missing_x_lists_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "nox.npz", inputs=np.zeros((2, 2)), labels=np.array([0, 1]))
    with pytest.raises(UserError, match=r"no 'x' array.*\['inputs', 'labels'\]"):
        load_npz(tmp_path / "nox.npz")


def test_npz_class_names_must_cover_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", x=np.zeros((2, 2)), y=np.array([0, 3]), class_names=np.array(["a", "b"]))
    with pytest.raises(UserError, match=r"\[0, 3\].*2 class names"):
        load_npz(tmp_path / "c.npz")


def test_npz_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2)), ids=np.array(["a", "b", "a"]))
    with pytest.raises(UserError, match=r"occur more than once \(e.g. \['a'\]\)"):
        load_npz(tmp_path / "d.npz")


def test_npz_that_is_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(UserError, match="not a readable .npz") as info:
        load_npz(tmp_path / "junk.npz")
    assert info.value.where == str(tmp_path / "junk.npz")


def test_npz_nan_inputs_are_rejected_by_dataset(tmp_path: Path) -> None:
    x = np.zeros((3, 2))
    x[2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    with pytest.raises(UserError, match=r"NaN.*rows \[2\]"):
        load_npz(tmp_path / "nan.npz")


# ------------------------------------------------------------------------------------ image folder


def _save(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)


def test_image_folder_grayscale(tmp_path: Path) -> None:
    a = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    b = np.array([[255, 0], [0, 255]], dtype=np.uint8)
    _save(tmp_path / "root" / "dog" / "1.png", a)
    _save(tmp_path / "root" / "cat" / "x.PNG", b)  # upper-case extension, sorts first by class
    (tmp_path / "root" / "cat" / "notes.txt").write_text("not an image")

    ds = load_image_folder(tmp_path / "root")

    assert ds.class_names == ["cat", "dog"]
    assert ds.ids.tolist() == ["cat/x.PNG", "dog/1.png"]
    assert ds.y.tolist() == [0, 1]
    assert ds.x.shape == (2, 1, 2, 2) and ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x[0, 0], b / 255.0)
    np.testing.assert_allclose(ds.x[1, 0], a / 255.0)
    assert ds.meta["path"].tolist() == [str((tmp_path / "root" / i).resolve()) for i in ds.ids]
    assert ds.modality == "image" and ds.name == "root"


def test_image_folder_mixed_modes_become_rgb(tmp_path: Path) -> None:
    gray = np.full((3, 3), 200, dtype=np.uint8)
    rgb = np.zeros((3, 3, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    _save(tmp_path / "a" / "g.png", gray)
    _save(tmp_path / "b" / "c.bmp", rgb)
    ds = load_image_folder(tmp_path)
    assert ds.x.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(ds.x[0], np.full((3, 3, 3), 200 / 255.0), rtol=1e-6)  # gray copied to R, G, B
    np.testing.assert_allclose(ds.x[1, 0], 1.0)
    np.testing.assert_allclose(ds.x[1, 1:], 0.0)


def test_image_folder_sizes_differ_needs_image_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    _save(tmp_path / "a" / "big.png", big)
    _save(tmp_path / "b" / "small.jpg", small)
    with pytest.raises(UserError, match="differ in size") as info:
        load_image_folder(tmp_path)
    assert "--image-size" in str(info.value) and "6x10" in str(info.value)

    ds = load_image_folder(tmp_path, image_size=(3, 5))  # (height, width)
    assert ds.x.shape == (2, 3, 3, 5)
    reference = np.asarray(Image.fromarray(big).resize((5, 3), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    np.testing.assert_allclose(ds.x[0], reference.transpose(2, 0, 1))
    assert load_image_folder(tmp_path, image_size=4).x.shape == (2, 3, 4, 4)


def test_image_folder_given_class_order(tmp_path: Path) -> None:
    _save(tmp_path / "cat" / "1.png", np.zeros((2, 2), dtype=np.uint8))
    _save(tmp_path / "dog" / "1.png", np.zeros((2, 2), dtype=np.uint8))
    ds = load_image_folder(tmp_path, class_names=["dog", "bird", "cat"])
    assert ds.class_names == ["dog", "bird", "cat"] and ds.y.tolist() == [2, 0]
    with pytest.raises(UserError, match=r"subfolders \['dog'\] are not among"):
        load_image_folder(tmp_path, class_names=["cat"])


def test_image_folder_unreadable_image_names_file(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "ok.png", np.zeros((2, 2), dtype=np.uint8))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(UserError, match="cannot read image broken.jpg") as info:
        load_image_folder(tmp_path)
    assert info.value.where == str(tmp_path / "b" / "broken.jpg")


def test_image_folder_empty_cases(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no class subdirectories"):
        load_image_folder(tmp_path)
    _save(tmp_path / "loose.png", np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(UserError, match=r"1 images lie directly in it"):
        load_image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(UserError, match=r"\['empty_class'\] contain no images"):
        load_image_folder(tmp_path)


def test_image_folder_without_class_names_notes_the_sorted_order(tmp_path: Path) -> None:
    _save(tmp_path / "zebra" / "1.png", np.zeros((2, 2), dtype=np.uint8))
    _save(tmp_path / "ant" / "1.png", np.zeros((2, 2), dtype=np.uint8))
    ds = load_image_folder(tmp_path)
    assert ds.class_names == ["ant", "zebra"]
    assert ds.notes == [
        "classes were indexed by sorted folder names: ['ant', 'zebra']; if the model's outputs are in another "
        "order pass --class-names (class_names= in Python)"
    ]
    assert load_image_folder(tmp_path, class_names=["zebra", "ant"]).notes == []


def test_many_sorted_classes_are_shown_first_twenty_and_notes_survive_subset(tmp_path: Path) -> None:
    names = [f"c{i:02d}" for i in range(25)]
    for name in names:
        _save(tmp_path / name / "1.png", np.zeros((2, 2), dtype=np.uint8))
    ds = load_image_folder(tmp_path)
    assert ds.notes[0].startswith(f"classes were indexed by sorted folder names: {names[:20]} ... (25 in all); ")
    part = ds.subset(np.array([3, 1]))
    assert part.notes == ds.notes and part.notes is not ds.notes
    assert load_digits().notes == []


# Each mode below is written to a file and compared with an array worked out by hand (not by our code).


def test_image_16bit_grayscale_is_scaled_not_binarised(tmp_path: Path) -> None:
    sixteen = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    _save(tmp_path / "a" / "g16.png", sixteen)
    assert Image.open(tmp_path / "a" / "g16.png").mode == "I;16"
    ds = load_image_folder(tmp_path, class_names=["a"])
    np.testing.assert_allclose(ds.x[0, 0], [[0.0, 1000 / 65535], [40000 / 65535, 1.0]], rtol=1e-6)
    assert ds.notes == ["1 image(s) have 16-bit pixels, scaled to [0, 1] by dividing by 65535 (first: a/g16.png)"]


def test_image_16bit_equals_the_same_picture_in_8bit(tmp_path: Path) -> None:
    eight = np.random.default_rng(3).integers(0, 256, (5, 7), dtype=np.uint8)
    _save(tmp_path / "eight" / "k" / "p.png", eight)
    _save(tmp_path / "sixteen" / "k" / "p.png", eight.astype(np.uint16) * 257)  # 65535 = 255 * 257
    a, b = load_image_folder(tmp_path / "eight"), load_image_folder(tmp_path / "sixteen")
    np.testing.assert_allclose(b.x, a.x, rtol=1e-6, atol=1e-7)
    resized_a = load_image_folder(tmp_path / "eight", image_size=(3, 4))
    resized_b = load_image_folder(tmp_path / "sixteen", image_size=(3, 4))
    np.testing.assert_allclose(resized_b.x, resized_a.x, atol=1 / 255)  # 8-bit resize rounds, float does not


def test_image_16bit_next_to_rgb_is_scaled_then_copied_to_three_channels(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "g.png", np.array([[0, 65535], [13107, 52428]], dtype=np.uint16))
    _save(tmp_path / "b" / "c.png", np.zeros((2, 2, 3), dtype=np.uint8))
    ds = load_image_folder(tmp_path)
    assert ds.x.shape == (2, 3, 2, 2)
    for channel in range(3):
        np.testing.assert_allclose(ds.x[0, channel], [[0.0, 1.0], [0.2, 0.8]], rtol=1e-6)
    assert any(note.startswith("1 image(s) are grayscale and were copied to 3 channels") for note in ds.notes)


def test_image_palette(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 128, 0] + [0] * 762)
    image.putpixel((1, 0), 1)
    (tmp_path / "a").mkdir()
    image.save(tmp_path / "a" / "p.png")
    ds = load_image_folder(tmp_path)
    expected = np.array([[[0, 255]], [[0, 128]], [[0, 0]]], dtype=np.float32) / 255  # (C, H, W)
    np.testing.assert_allclose(ds.x[0], expected, rtol=1e-6)


def test_image_rgba_drops_alpha_keeping_the_stored_colour(tmp_path: Path) -> None:
    rgba = np.array([[[10, 20, 30, 0], [200, 100, 50, 255]]], dtype=np.uint8)  # first pixel fully transparent
    _save(tmp_path / "a" / "t.png", rgba)
    ds = load_image_folder(tmp_path)
    expected = np.array([[[10, 200]], [[20, 100]], [[30, 50]]], dtype=np.float32) / 255
    np.testing.assert_allclose(ds.x[0], expected, rtol=1e-6)
    alpha_notes = [n for n in ds.notes if "alpha" in n]
    assert len(alpha_notes) == 1 and alpha_notes[0].startswith("1 image(s) have an alpha channel, which was dropped")


def test_image_la_is_grayscale_without_alpha(tmp_path: Path) -> None:
    la = np.array([[[10, 0], [200, 255]]], dtype=np.uint8)
    _save(tmp_path / "a" / "la.png", la, mode="LA")
    ds = load_image_folder(tmp_path)
    assert ds.x.shape == (1, 1, 1, 2)
    np.testing.assert_allclose(ds.x[0, 0], [[10 / 255, 200 / 255]], rtol=1e-6)
    assert any("alpha channel" in n for n in ds.notes)


def test_image_cmyk_jpeg(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    Image.new("CMYK", (8, 8), (100, 50, 0, 100)).save(tmp_path / "a" / "c.jpg", quality=100)
    ds = load_image_folder(tmp_path)
    # R = (255 - C)(255 - K) / 255: (155 * 155, 205 * 155, 255 * 155) / 255 = (94.2, 124.6, 155)
    expected = np.array([94.2, 124.6, 155.0]) / 255
    np.testing.assert_allclose(ds.x[0].mean(axis=(1, 2)), expected, atol=2 / 255)  # JPEG is lossy
    assert any("CMYK" in n for n in ds.notes)


def test_image_bilevel(tmp_path: Path) -> None:
    image = Image.new("1", (3, 1))
    image.putpixel((1, 0), 1)
    (tmp_path / "a").mkdir()
    image.save(tmp_path / "a" / "b.png")
    ds = load_image_folder(tmp_path)
    np.testing.assert_array_equal(ds.x[0, 0], [[0.0, 1.0, 0.0]])


def test_image_to_array_mode_i_and_f() -> None:
    from assay.data.images import image_to_array

    as_i = Image.fromarray(np.array([[0, 300, 65535]], dtype=np.int32))
    assert as_i.mode == "I"
    np.testing.assert_allclose(image_to_array(as_i, rgb=False), [[[0.0, 300 / 65535, 1.0]]], rtol=1e-6)
    with pytest.raises(ValueError, match="outside 16-bit"):
        image_to_array(Image.fromarray(np.array([[0, 70000]], dtype=np.int32)), rgb=False)
    as_f = Image.fromarray(np.array([[0.25, 2.0]], dtype=np.float32))
    assert as_f.mode == "F"
    np.testing.assert_array_equal(image_to_array(as_f, rgb=True), np.full((3, 1, 2), [0.25, 2.0], np.float32))


# ----------------------------------------------------------------------------------- CSV / Parquet


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [101, 102, 103, 104],
            "f1": [0.5, 1.5, -2.0, 3.25],
            "f2": [1, 2, 3, 4],
            "region": ["n", "s", "n", "e"],
            "label": [0, 1, 1, 2],
        }
    )


def test_csv_features_ids_and_meta(tmp_path: Path) -> None:
    frame = _frame()
    frame.to_csv(tmp_path / "tab.csv", index=False)
    ds = load_table(tmp_path / "tab.csv")
    assert ds.modality == "tabular"
    np.testing.assert_array_equal(ds.x, frame[["f1", "f2"]].to_numpy(np.float32))
    assert ds.y.tolist() == [0, 1, 1, 2] and ds.class_names is None
    assert ds.ids.tolist() == [101, 102, 103, 104]
    assert list(ds.meta.columns) == ["region"] and ds.meta["region"].tolist() == ["n", "s", "n", "e"]
    assert ds.name == "tab" and ds.source == str(tmp_path / "tab.csv")
    assert ds.notes == []  # integer labels are the model's indices already; tables are never range-checked


def test_parquet_matches_csv_fingerprint(tmp_path: Path) -> None:
    frame = _frame()
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "b.parquet", index=False)
    frame.to_parquet(tmp_path / "c.PQ", index=False)
    csv, parquet, pq = (load_data(tmp_path / f) for f in ("a.csv", "b.parquet", "c.PQ"))
    assert csv.fingerprint == parquet.fingerprint == pq.fingerprint
    assert parquet.meta["region"].tolist() == ["n", "s", "n", "e"]


def test_feature_cols_subset_leaves_rest_as_meta(tmp_path: Path) -> None:
    _frame().to_csv(tmp_path / "t.csv", index=False)
    ds = load_table(tmp_path / "t.csv", feature_cols=["f2"])
    assert ds.x.tolist() == [[1.0], [2.0], [3.0], [4.0]]
    assert sorted(ds.meta.columns) == ["f1", "region"]


def test_string_labels_map_to_sorted_class_names(tmp_path: Path) -> None:
    pd.DataFrame({"f": [1.0, 2.0, 3.0, 4.0], "label": ["dog", "cat", "eel", "cat"]}).to_csv(
        tmp_path / "s.csv", index=False
    )
    ds = load_table(tmp_path / "s.csv")
    assert ds.class_names == ["cat", "dog", "eel"] and ds.y.tolist() == [1, 0, 2, 0]
    assert ds.notes == [
        "classes were indexed by sorted label values: ['cat', 'dog', 'eel']; if the model's outputs are in "
        "another order pass --class-names (class_names= in Python)"
    ]
    given_order = load_table(tmp_path / "s.csv", class_names=["eel", "dog", "cat", "yak"])
    assert given_order.y.tolist() == [1, 2, 0, 2] and given_order.notes == []
    with pytest.raises(UserError, match=r"labels \['eel'\] are not among"):
        load_table(tmp_path / "s.csv", class_names=["cat", "dog"])


def test_text_column_detected_and_explicit(tmp_path: Path) -> None:
    pd.DataFrame({"review": ["great", "awful", "fine"], "label": ["pos", "neg", "pos"]}).to_csv(
        tmp_path / "r.csv", index=False
    )
    ds = load_table(tmp_path / "r.csv")
    assert ds.modality == "text" and ds.x.tolist() == ["great", "awful", "fine"] and ds.x.dtype == object
    assert ds.class_names == ["neg", "pos"] and ds.y.tolist() == [1, 0, 1]

    pd.DataFrame({"body": ["a b", "c"], "title": ["t1", "t2"], "stars": [5, 1], "y": [1, 0]}).to_parquet(
        tmp_path / "r.parquet"
    )
    ds = load_table(tmp_path / "r.parquet", text_col="body", label_col="y")
    assert ds.modality == "text" and ds.x.tolist() == ["a b", "c"]
    assert sorted(ds.meta.columns) == ["stars", "title"]


def test_table_errors(tmp_path: Path) -> None:
    frame = _frame()
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(UserError, match=r"label column 'target' not found.*\['id', 'f1', 'f2', 'region', 'label'\]"):
        load_table(tmp_path / "t.csv", label_col="target")
    with pytest.raises(UserError, match=r"feature column 'f9' not found.*columns present"):
        load_table(tmp_path / "t.csv", feature_cols=["f1", "f9"])
    with pytest.raises(UserError, match=r"feature columns \['region'\] are not numeric"):
        load_table(tmp_path / "t.csv", feature_cols=["f1", "region"])

    frame.loc[2, "f2"] = np.nan
    frame.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(UserError) as info:
        load_table(tmp_path / "nan.csv")
    message = str(info.value)
    assert "1 missing feature value(s)" in message and "rows [2]" in message and "['f2']" in message
    assert "impute" in message

    frame = _frame().astype({"label": float})
    frame.loc[1, "label"] = np.nan
    frame.to_csv(tmp_path / "nolabel.csv", index=False)
    with pytest.raises(UserError, match=r"1 label\(s\) are missing \(first at rows \[1\]\)"):
        load_table(tmp_path / "nolabel.csv")

    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty"):
        load_table(tmp_path / "empty.csv")


# ------------------------------------------------------------------------------- load_data dispatch


def test_load_data_dispatch_and_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "arr.npz", x=np.zeros((2, 3)), y=np.array([0, 1]))
    _save(tmp_path / "imgs" / "k" / "1.png", np.zeros((2, 2), dtype=np.uint8))
    assert load_data(str(tmp_path / "arr.npz")).modality == "tabular"
    assert load_data(tmp_path / "imgs", image_size=3).x.shape == (1, 1, 3, 3)
    assert load_data("builtin:digits:train", name="d").name == "d"

    missing = tmp_path / "nope.csv"
    with pytest.raises(UserError, match="no such file or directory") as info:
        load_data(str(missing))
    assert info.value.where == str(missing) and "digits" in info.value.fix

    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(UserError, match=r"unsupported data file extension '\.json'") as info:
        load_data(tmp_path / "data.json")
    assert all(ext in info.value.fix for ext in (".npz", ".csv", ".parquet", ".pq"))

    with pytest.raises(UserError, match="--label-col cannot be used with an .npz file"):
        load_data(tmp_path / "arr.npz", label_col="y")
    with pytest.raises(UserError, match="--image-size cannot be used with a built-in dataset"):
        load_data("digits", image_size=32)
    with pytest.raises(UserError, match=r"unknown split 'val'.*digits:train"):
        load_data("digits:val")


# ------------------------------------------------------------------------------------- fingerprint


@settings(max_examples=25, deadline=None)
@given(
    x=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 3)),
        elements=st.floats(-100, 100, width=32),
    ),
    data=st.data(),
)
def test_fingerprint_depends_on_content_not_path(x: np.ndarray, data: st.DataObject) -> None:
    y = np.array(data.draw(st.lists(st.integers(0, 3), min_size=len(x), max_size=len(x))))
    row = data.draw(st.integers(0, len(x) - 1))
    col = data.draw(st.integers(0, x.shape[1] - 1))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "elsewhere").mkdir()
        np.savez(root / "one.npz", x=x, y=y)
        np.savez_compressed(root / "elsewhere" / "two.npz", x=x, y=y)
        changed_x = x.copy()
        changed_x[row, col] += 1.0
        np.savez(root / "x.npz", x=changed_x, y=y)
        changed_y = y.copy()
        changed_y[row] = (changed_y[row] + 1) % 4
        np.savez(root / "y.npz", x=x, y=changed_y)
        fingerprints = [load_npz(root / f).fingerprint for f in ("one.npz", "elsewhere/two.npz", "x.npz", "y.npz")]
    assert fingerprints[0] == fingerprints[1]
    assert len(set(fingerprints[1:])) == 3


# ------------------------------------------------------------------------------------------ digits


def test_digits_split_is_fixed_disjoint_and_stratified() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    train, test = load_digits("train"), load_digits("test")
    reference = sklearn_digits()
    assert (len(train), len(test)) == (1257, 540)
    assert set(train.ids.tolist()).isdisjoint(test.ids.tolist())
    assert sorted(train.ids.tolist() + test.ids.tolist()) == list(range(1797))

    overall = Counter(reference.target.tolist())
    in_test = Counter(test.y.tolist())
    for digit, count in overall.items():
        assert abs(in_test[digit] - 0.3 * count) <= 1

    for ds in (train, test):
        np.testing.assert_array_equal(ds.y, reference.target[ds.ids])
        np.testing.assert_allclose(ds.x[:, 0], reference.images[ds.ids] / 16.0)
        assert ds.x.shape[1:] == (1, 8, 8) and ds.x.dtype == np.float32
        assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
        assert ds.class_names == [str(d) for d in range(10)]
    assert load_data("digits").fingerprint == test.fingerprint and load_data("digits").name == "digits:test"
    assert load_data("digits:train").fingerprint == train.fingerprint and train.name == "digits:train"


def test_digits_ink_meta_is_intensity_tertiles() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    images = sklearn_digits().images
    total = images.reshape(len(images), -1).sum(axis=1)
    low_cut, high_cut = np.quantile(total, [1 / 3, 2 / 3])
    both = [load_digits("train"), load_digits("test")]
    for ds in both:
        ink = ds.meta["ink"].to_numpy()
        t = total[ds.ids]
        assert set(ink) <= {"low", "mid", "high"}
        assert (t[ink == "low"] <= low_cut).all() and (t[ink == "high"] > high_cut).all()
        assert ((t[ink == "mid"] > low_cut) & (t[ink == "mid"] <= high_cut)).all()
    counts = Counter(np.concatenate([ds.meta["ink"].to_numpy() for ds in both]).tolist())
    assert all(abs(c - 1797 / 3) < 30 for c in counts.values())


# -------------------------------------------------------------------------------- label validation


def test_validate_labels_against_model_class_count(tmp_path: Path) -> None:
    _frame().to_csv(tmp_path / "t.csv", index=False)  # labels 0, 1, 1, 2
    ds = load_table(tmp_path / "t.csv")
    ds.validate_labels(3)
    with pytest.raises(UserError, match=r"1 label\(s\) outside \[0, 2\) — values \[2\] at rows \[3\]"):
        ds.validate_labels(2)
    digits = load_digits()
    with pytest.raises(UserError, match=r"values \[9\]"):
        digits.validate_labels(9)
