"""Data integrity (assay.audit.integrity): planted column problems, broken image files, bombs, shift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import chi2_contingency
from sklearn.datasets import load_digits

from assay.audit.integrity import integrity_findings, scan_image_folder
from assay.data.dataset import Dataset
from assay.errors import DataError


def whats(found, severity: str | None = None) -> list[str]:
    return [f["what"] for f in found.findings if severity is None or f["severity"] == severity]


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """cat/: 3 good RGB 8x8 PNGs, a zero-byte PNG, a truncated PNG, a text file named .png; dog/: 2 good L PNGs
    and one 16x8 image (another size and mode)."""
    rng = np.random.default_rng(0)
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "cat" / f"{i}.png")
    (tmp_path / "cat" / "empty.png").write_bytes(b"")
    whole = (tmp_path / "cat" / "0.png").read_bytes()
    big = tmp_path / "cat" / "big.png"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(big)
    (tmp_path / "cat" / "truncated.png").write_bytes(big.read_bytes()[: len(big.read_bytes()) // 2])
    big.unlink()
    (tmp_path / "cat" / "notes.png").write_bytes(b"this is not an image")
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / "dog" / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (8, 16), dtype=np.uint8)).save(tmp_path / "dog" / "wide.png")
    assert whole
    return tmp_path


def test_broken_image_files_are_listed_not_fatal(image_folder: Path) -> None:
    scan = scan_image_folder(image_folder)
    status = dict(zip(scan["path"], scan["status"], strict=True))
    assert status == {"cat/0.png": "ok", "cat/1.png": "ok", "cat/2.png": "ok", "cat/empty.png": "zero_byte",
                      "cat/notes.png": "unreadable", "cat/truncated.png": "corrupt", "dog/0.png": "ok",
                      "dog/1.png": "ok", "dog/wide.png": "ok"}
    found = integrity_findings(image_folder)  # no exception: the audit goes on
    assert sorted(found.tables["files"]["path"]) == ["cat/empty.png", "cat/notes.png", "cat/truncated.png"]
    critical = whats(found, "critical")
    assert len(critical) == 3 and any("zero-byte" in w for w in critical) and any("corrupt" in w for w in critical)
    warnings = whats(found, "warning")
    assert any("2 colour modes (L, RGB)" in w for w in warnings)
    assert any("2 sizes" in w for w in warnings)
    balance = found.tables["class_balance"].set_index("class")["count"].to_dict()
    assert balance == {"cat": 3, "dog": 3}  # good files only


def test_the_image_loader_refuses_what_the_scan_reports(image_folder: Path) -> None:
    """The reason for the scan: load_image_folder stops at the first broken file."""
    from assay.data.images import load_image_folder

    with pytest.raises(DataError):
        load_image_folder(image_folder, image_size=8)


def test_decompression_bomb_is_bounded_and_never_decoded(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    Image.new("L", (300, 300)).save(tmp_path / "a" / "bomb.png")  # 90,000 pixels, tiny file
    Image.new("L", (8, 8)).save(tmp_path / "a" / "small.png")
    scan = scan_image_folder(tmp_path, max_pixels=10_000)
    bomb = scan.set_index("path").loc["a/bomb.png"]
    assert bomb["status"] == "too_large" and "decompression-bomb" in bomb["detail"]
    assert scan.set_index("path").loc["a/small.png", "status"] == "ok"
    # Pillow's own limit applies by default: above 2 x MAX_IMAGE_PIXELS it raises, above it warns; both caught.
    old = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 20_000
        scan = scan_image_folder(tmp_path)
        assert scan.set_index("path").loc["a/bomb.png", "status"] == "too_large"
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_planted_nan_constant_and_duplicate_columns() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=50), "b": rng.normal(size=50), "label": rng.integers(0, 2, 50)})
    frame.loc[[3, 7, 11], "a"] = np.nan
    frame["const"] = 1.5
    frame["b_copy"] = frame["b"]
    frame["city"] = ["Paris"] * 50
    found = integrity_findings(frame)
    table = found.tables["columns"]
    problems = {(r.column, r.problem): r.count for r in table.itertuples()}
    assert problems == {("a", "missing"): 3, ("const", "constant"): 50, ("city", "constant"): 50,
                        ("b_copy", "duplicate"): 50}
    assert any("duplicate column(s): b_copy" in w for w in whats(found, "warning"))


def test_clean_table_has_no_column_findings() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30), "label": np.arange(30) % 3})
    found = integrity_findings(frame)
    assert "columns" not in found.tables
    assert not whats(found, "warning") and not whats(found, "critical")


def test_class_balance_counts_and_ratio() -> None:
    y = np.array([0] * 60 + [1] * 5 + [2] * 35)
    ds = Dataset.from_arrays(np.zeros((100, 2), dtype=np.float32) + np.arange(100)[:, None], y,
                             class_names=["a", "b", "c", "d"])
    found = integrity_findings(ds)
    balance = found.tables["class_balance"].set_index("class")
    assert balance["count"].to_dict() == {"a": 60, "b": 5, "c": 35, "d": 0}
    assert balance.loc["a", "share"] == pytest.approx(0.6)
    assert any("imbalance ratio 12.0" in w for w in whats(found, "warning"))
    assert any("1 declared class(es) have no items (d)" in w for w in whats(found, "warning"))


def _digits_split(seed: int = 0) -> tuple[Dataset, Dataset]:
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    train, test = order[:1200], order[1200:]
    return (Dataset.from_arrays(x[train].astype(np.float32), y[train]),
            Dataset.from_arrays(x[test].astype(np.float32), y[test]))


def test_label_shift_detected_vs_not() -> None:
    train, test = _digits_split()
    same = integrity_findings(train, test)
    row = same.tables["label_shift"].iloc[0]
    assert not row["shifted"] and row["p_value"] > 0.05
    # Reference: scipy's chi-squared test of the same 2 x 10 table.
    table = np.array([np.bincount(train.y, minlength=10), np.bincount(test.y, minlength=10)])
    assert row["p_value"] == pytest.approx(chi2_contingency(table, correction=False)[1], rel=1e-9)
    # Shifted: keep only a third of test classes 5-9.
    keep = (test.y < 5) | (np.arange(len(test.y)) % 3 == 0)
    shifted_test = Dataset.from_arrays(test.x[keep], test.y[keep])
    shifted = integrity_findings(train, shifted_test)
    assert shifted.tables["label_shift"].iloc[0]["shifted"]
    assert any("label shift" in w for w in whats(shifted, "warning"))


def test_feature_shift_per_column_with_fdr() -> None:
    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(800, 6)), columns=[f"f{j}" for j in range(6)])
    test = pd.DataFrame(rng.normal(size=(400, 6)), columns=train.columns)
    test["f2"] += 0.5  # a half-sd shift in one column
    found = integrity_findings(train, test)
    table = found.tables["feature_shift"].set_index("feature")
    assert table["shifted"].to_dict() == {"f0": False, "f1": False, "f2": True, "f3": False, "f4": False,
                                          "f5": False}
    assert (table["p_adjusted"] >= table["p_value"]).all()
    # The binned KS on quantile bins is at most the exact KS statistic (binning only lowers it).
    from scipy.stats import ks_2samp

    assert table.loc["f2", "ks_statistic"] <= ks_2samp(train["f2"], test["f2"]).statistic + 1e-12


def test_image_statistics_shift_detected() -> None:
    train, test = _digits_split()
    same = integrity_findings(train, test)
    assert "feature_shift" in same.tables
    brighter = Dataset.from_arrays(np.clip(test.x * 1.3, 0, 16), test.y)
    shifted = integrity_findings(train, brighter)
    assert shifted.tables["feature_shift"]["shifted"].any()


def test_pii_in_text_and_string_columns() -> None:
    texts = ["hello world", "write to jane@example.com", "card 4111 1111 1111 1111", "nothing"]
    ds = Dataset.from_arrays(texts, [0, 1, 0, 1])
    found = integrity_findings(ds)
    pii = found.tables["pii"]
    assert pii[["index", "kind"]].values.tolist() == [[1, "email"], [2, "card"]]
    assert "4111 1111 1111 1111" not in pii.to_string()
    frame = pd.DataFrame({"x": [1.0, 2.0], "contact": ["+44 20 7946 0958", "none"], "label": [0, 1]})
    assert integrity_findings(frame).tables["pii"]["kind"].tolist() == ["phone"]


def test_dataset_notes_become_findings() -> None:
    ds = Dataset.from_arrays(np.zeros((4, 1, 2, 2), dtype=np.uint8), [0, 1, 0, 1])
    assert ds.notes
    found = integrity_findings(ds)
    assert any(str(ds.notes[0]) in w for w in whats(found))


def test_train_and_test_of_different_kinds_are_refused() -> None:
    images = Dataset.from_arrays(np.zeros((4, 1, 2, 2), dtype=np.float32), [0, 1, 0, 1])
    table = Dataset.from_arrays(np.zeros((4, 3), dtype=np.float32), [0, 1, 0, 1])
    with pytest.raises(DataError, match="train is image data but test is tabular"):
        integrity_findings(images, table)
    wider = Dataset.from_arrays(np.zeros((4, 1, 3, 3), dtype=np.float32), [0, 1, 0, 1])
    with pytest.raises(DataError, match="shape"):
        integrity_findings(images, wider)
