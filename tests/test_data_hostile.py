"""Hostile and surprising data files: each is built here, byte by byte where it must lie, and must be refused
with a DataError/OptionError (exit 2 through the CLI) before anything large is allocated.

The archives are crafted with the zip format written out by hand (``_raw_zip``) so that the directory can
claim sizes the data does not have; huge members are runs of deflated zeros, small on disk and in memory.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from assay.cli import main
from assay.data import load_data, load_image_folder, load_npz, load_table
from assay.data.limits import MEMORY_LIMIT_ENV, format_bytes, machine_memory, memory_limit
from assay.errors import DataError, OptionError

# ------------------------------------------------------------------------------------------ helpers


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _patch_shape(npy: bytes, old: tuple[int, ...], new: tuple[int, ...]) -> bytes:
    """Rewrite the shape in a valid .npy header, keeping the header length (its padding spaces absorb it)."""
    header_len = struct.unpack("<H", npy[8:10])[0]
    header = npy[10 : 10 + header_len]
    patched = header.replace(f"'shape': {old}".encode(), f"'shape': {new}".encode())
    assert patched != header
    body = patched.rstrip(b"\n").rstrip(b" ")
    assert len(body) < header_len
    return npy[:10] + body + b" " * (header_len - 1 - len(body)) + b"\n" + npy[10 + header_len :]


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def _raw_zip(path: Path, entries: list[tuple[str, int, bytes, int, int]]) -> Path:
    """A zip archive written field by field: entries are (name, method, payload, crc32, file_size), and both
    the local header and the central directory state ``file_size`` as given, true or not."""
    out, central = bytearray(), bytearray()
    for name, method, payload, crc, file_size in entries:
        offset, encoded = len(out), name.encode()
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(payload), file_size,
                           len(encoded), 0) + encoded + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(payload),
                               file_size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    directory_offset = len(out)
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central),
                                 directory_offset, 0)
    path.write_bytes(bytes(out))
    return path


def _deflated_zeros_member(name: str, header: bytes, zero_bytes: int) -> tuple[str, int, bytes, int, int]:
    """An honest deflated member of ``header`` + ``zero_bytes`` zeros, built from one repeated block
    (a full flush makes every 16 MiB block of zeros compress to the same bytes): ~1 MiB on disk per GiB."""
    chunk = 16 * 1024 * 1024
    assert zero_bytes % chunk == 0
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = head.compress(header) + head.flush(zlib.Z_FULL_FLUSH)
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeated = block.compress(bytes(chunk)) + block.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block
    crc = zlib.crc32(header)
    zeros = bytes(chunk)
    for _ in range(zero_bytes // chunk):
        crc = zlib.crc32(zeros, crc)
    return name, zipfile.ZIP_DEFLATED, first + repeated * (zero_bytes // chunk) + end, crc, len(header) + zero_bytes


def _images(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 4, 4)).astype(np.float32)


# ------------------------------------------------------------------------------ NPZ header lies


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_header_claiming_an_enormous_shape_is_refused_naming_the_key(tmp_path: Path, compression: int) -> None:
    x = _images(2)
    lying = _patch_shape(_npy(x), (2, 1, 4, 4), (10**10, 1, 4, 4))  # 640 GB of float32 declared
    assert np.lib.format.read_array_header_1_0(io.BytesIO(lying[8:]))[0] == (10**10, 1, 4, 4)
    path = _zip(tmp_path / "lie.npz", {"x.npy": lying, "y.npy": _npy(np.array([0, 1]))}, compression)
    with pytest.raises(DataError) as info:
        load_npz(path)
    message = str(info.value)
    assert "array 'x' declares shape (10000000000, 1, 4, 4) of float32 = 640,000,000,000 bytes" in message
    assert "zip entry holds 128 bytes of data" in message and "Fix:" in message
    assert info.value.where == str(path)


def test_npz_header_claiming_fewer_values_than_stored_is_refused(tmp_path: Path) -> None:
    lying = _patch_shape(_npy(np.arange(6)), (6,), (2,))
    path = _zip(tmp_path / "short.npz", {"x.npy": _npy(np.zeros((6, 2))), "y.npy": lying})
    with pytest.raises(DataError, match=r"array 'y' declares shape \(2,\) of int64 = 16 bytes .* holds 48 bytes"):
        load_npz(path)


def test_npz_negative_dimension_is_refused(tmp_path: Path) -> None:
    lying = _patch_shape(_npy(_images(2)), (2, 1, 4, 4), (-2, 1, 4, 4))
    with pytest.raises(DataError, match=r"array 'x' declares a negative dimension"):
        load_npz(_zip(tmp_path / "neg.npz", {"x.npy": lying}))


def test_npz_garbage_header_is_refused(tmp_path: Path) -> None:
    bad = b"\x93NUMPY\x01\x00" + struct.pack("<H", 22) + b"{'descr': __import__}\n"
    with pytest.raises(DataError, match=r"array 'x' is not a readable \.npy array"):
        load_npz(_zip(tmp_path / "garbage.npz", {"x.npy": bad}))
    not_npy = _zip(tmp_path / "raw.npz", {"x.npy": b"just bytes, no magic"})
    with pytest.raises(DataError, match=r"array 'x' is not a readable \.npy array"):
        load_npz(not_npy)


# ------------------------------------------------------------------------- zip directory lies


def test_zip_entry_claiming_a_small_size_cannot_make_us_read_more(tmp_path: Path) -> None:
    """The member really holds 64 images (16 KiB) but its directory entry and its .npy header both claim
    one value: we read one value's bytes, never the rest, and the CRC-32 exposes the lie."""
    real = _npy(_images(64))
    small = _patch_shape(real, (64, 1, 4, 4), (1, 1, 1, 1))  # header now declares one float32
    header_len = 10 + struct.unpack("<H", small[8:10])[0]
    claimed = header_len + 4
    payload = _deflate(small)  # decompresses to 16 KiB
    entries = [("x.npy", zipfile.ZIP_DEFLATED, payload, zlib.crc32(small), claimed)]
    with pytest.raises(DataError, match=r"array 'x' cannot be read \(Bad CRC-32"):
        load_npz(_raw_zip(tmp_path / "bomb.npz", entries))

    # With the CRC of the first bytes the lie is self-consistent: we get exactly what was declared, no more.
    entries = [("x.npy", zipfile.ZIP_DEFLATED, payload, zlib.crc32(small[:claimed]), claimed)]
    ds = load_npz(_raw_zip(tmp_path / "consistent.npz", entries))
    assert ds.x.shape == (1, 1, 1, 1) and ds.x.ravel()[0] == _images(64).ravel()[0]


def test_zip_entry_claiming_more_than_the_data_holds_is_refused(tmp_path: Path) -> None:
    """Header and directory agree on 64 MiB, but the deflated stream ends after 128 bytes."""
    small = _npy(_images(2))
    big = _patch_shape(small, (2, 1, 4, 4), (2**20, 1, 4, 4))
    header_len = 10 + struct.unpack("<H", big[8:10])[0]
    entries = [("x.npy", zipfile.ZIP_DEFLATED, _deflate(big), zlib.crc32(big), header_len + 2**24 * 4)]
    with pytest.raises(DataError, match=r"array 'x'") as info:
        load_npz(_raw_zip(tmp_path / "short.npz", entries))
    assert "cannot be read" in str(info.value) or "ends after" in str(info.value)


def test_unused_2gib_member_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header = _npy(np.zeros(0, np.uint8))
    header = _patch_shape(header, (0,), (2**31,))[: 10 + struct.unpack("<H", header[8:10])[0]]
    entries = [
        ("x.npy", zipfile.ZIP_STORED, _npy(_images()), zlib.crc32(_npy(_images())), len(_npy(_images()))),
        ("y.npy", zipfile.ZIP_STORED, _npy(np.arange(4)), zlib.crc32(_npy(np.arange(4))), len(_npy(np.arange(4)))),
        _deflated_zeros_member("junk.npy", header, 2**31),
    ]
    path = _raw_zip(tmp_path / "junk.npz", entries)
    assert path.stat().st_size < 4_000_000  # deflate compresses zeros at most 1032:1
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("junk.npy").file_size > 2**31

    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1G")  # counting the junk member would exceed this limit
    ds = load_npz(path)
    np.testing.assert_array_equal(ds.x, _images())
    assert ds.y.tolist() == [0, 1, 2, 3]
    assert "junk.npy" not in opened and {"x.npy", "y.npy"} <= set(opened)


def test_other_zip_compression_methods_are_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "bz.npz", {"x.npy": _npy(_images())}, zipfile.ZIP_BZIP2)
    with pytest.raises(DataError, match=r"array 'x' is compressed with zip method 12; only stored or deflated"):
        load_npz(path)


def test_single_npy_and_truncated_archives(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", _images())
    (tmp_path / "one.npz").write_bytes((tmp_path / "one.npy").read_bytes())
    with pytest.raises(DataError, match="single .npy array"):
        load_npz(tmp_path / "one.npz")
    np.savez(tmp_path / "whole.npz", x=_images(), y=np.arange(4))
    data = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="not a readable .npz archive"):
        load_npz(tmp_path / "cut.npz")
    # The directory survives but a member's bytes are damaged: the CRC-32 catches it.
    with zipfile.ZipFile(tmp_path / "whole.npz") as archive:
        info = archive.getinfo("x.npy")
    damaged = bytearray(data)
    damaged[info.header_offset + 30 + len("x.npy") + 200] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(damaged))
    with pytest.raises(DataError, match=r"array 'x' cannot be read \(Bad CRC-32"):
        load_npz(tmp_path / "flip.npz")


def test_standalone_npy_is_read_with_the_same_checks(tmp_path: Path, monkeypatch) -> None:
    from assay.data.npz import load_npy

    array = np.asfortranarray(np.arange(12, dtype=">i4").reshape(3, 4))
    np.save(tmp_path / "ok.npy", array)
    np.testing.assert_array_equal(load_npy(tmp_path / "ok.npy"), array)
    (tmp_path / "lie.npy").write_bytes(_patch_shape(_npy(np.arange(4)), (4,), (10**12,)))
    with pytest.raises(DataError, match=r"array 'labels' declares shape \(1000000000000,\) .* the file holds 32 bytes"):
        load_npy(tmp_path / "lie.npy", what="labels")
    np.save(tmp_path / "obj.npy", np.array(["a", None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="unpickling"):
        load_npy(tmp_path / "obj.npy")
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "47")  # 3 x 4 x 4 bytes = 48
    expected = r"array 'ok' \(shape \(3, 4\), >i4\) needs 48 bytes of memory, more than the limit of 47 bytes"
    with pytest.raises(DataError, match=expected):
        load_npy(tmp_path / "ok.npy")


# ----------------------------------------------------------------------------------- memory limit


def test_memory_limit_counts_declared_bytes_and_the_float32_copy(tmp_path: Path, monkeypatch) -> None:
    x = np.zeros((100, 3, 8, 8), np.float32)  # 76,800 bytes, and 76,800 more for the float32 copy
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(100, np.int64))  # 800 bytes
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "154399")
    with pytest.raises(DataError) as info:
        load_npz(tmp_path / "d.npz")
    message = str(info.value)
    assert "needs 151 KiB (154,400 bytes) of memory, more than the limit of 151 KiB" in message
    assert "(set by ASSAY_MAX_DATA_BYTES)" in message
    assert "ASSAY_MAX_DATA_BYTES=" in info.value.fix
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "154400")
    assert len(load_npz(tmp_path / "d.npz")) == 100


def test_memory_limit_settings() -> None:
    assert format_bytes(1023) == "1023 bytes" and format_bytes(1536) == "1.5 KiB"
    assert format_bytes(640 * 10**9) == "596 GiB"
    total = machine_memory()
    assert total is None or total > 0
    limit, source = memory_limit()
    if total is not None:
        assert limit == total // 2 and source.startswith("half of this machine's")


@pytest.mark.parametrize(("text", "expected"), [("48G", 48 * 2**30), ("64gb", 64 * 2**30), ("1000", 1000),
                                                ("1.5k", 1536), ("2T", 2 * 2**40)])
def test_memory_limit_environment_variable(monkeypatch, text: str, expected: int) -> None:
    monkeypatch.setenv(MEMORY_LIMIT_ENV, text)
    assert memory_limit()[0] == expected


@pytest.mark.parametrize("text", ["lots", "-5", "0", "12Q", "inf"])
def test_bad_memory_limit_environment_variable(monkeypatch, text: str) -> None:
    monkeypatch.setenv(MEMORY_LIMIT_ENV, text)
    with pytest.raises(OptionError, match="is not a positive byte count"):
        memory_limit()


# ---------------------------------------------------------------------------------------- images


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares width x height 8-bit grey, followed by a tiny IDAT: only the header is real."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64)))
                     + chunk(b"IEND", b""))
    return path


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_decompression_bomb_png_is_a_data_error(tmp_path: Path) -> None:
    bomb = _png_header_only(tmp_path / "a" / "bomb.png", 30000, 30000)
    with pytest.raises(Image.DecompressionBombError):  # Pillow refuses it at open, but not as a UserError
        Image.open(bomb)
    with pytest.raises(DataError) as info:
        load_image_folder(tmp_path)
    message = str(info.value)
    assert "image bomb.png is too large to decode safely" in message
    assert f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,} pixels are refused" in message
    assert info.value.where == str(bomb) and "downscale" in info.value.fix


def test_images_over_the_pixel_limit_are_refused_even_below_pillows_hard_limit(tmp_path, monkeypatch) -> None:
    _png(tmp_path / "a" / "p.png", np.zeros((4, 4), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 16 pixels: Pillow only warns below 2 x the limit
    with pytest.raises(DataError, match=r"p\.png is too large to decode safely .*MAX_IMAGE_PIXELS = 10 pixels"):
        load_image_folder(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16)
    assert load_image_folder(tmp_path).x.shape == (1, 1, 4, 4)


def test_absurd_image_size_is_refused_before_allocating(tmp_path: Path, monkeypatch) -> None:
    _png(tmp_path / "a" / "p.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(OptionError) as info:
        load_image_folder(tmp_path, image_size=100000)
    message = str(info.value)
    assert "--image-size 100000x100000 (image_size=100000) asks for 10,000,000,000 pixels per image" in message
    assert "MAX_IMAGE_PIXELS" in message
    assert "(40,000,000,000 bytes)" in message  # 1 image x 1 channel x 100000 x 100000 x 4 bytes
    assert "--image-size 224" in info.value.fix

    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1M")  # below the pixel limit, above the memory limit: 64 MiB
    with pytest.raises(OptionError, match=r"--image-size 4096x4096 .* needs 64 MiB \(67,108,864 bytes\)"):
        load_image_folder(tmp_path, image_size=4096)
    with pytest.raises(OptionError, match="positive int"):
        load_image_folder(tmp_path, image_size=(0, 4))


def test_decoded_folder_over_the_memory_limit_is_a_data_error(tmp_path: Path, monkeypatch) -> None:
    for i in range(3):
        _png(tmp_path / "a" / f"{i}.png", np.zeros((8, 8, 3), np.uint8))
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "2303")  # 3 x 3 x 8 x 8 x 4 = 2,304 bytes
    with pytest.raises(DataError, match=r"decoding 3 image\(s\) to 3x8x8 float32 needs 2.25 KiB \(2,304 bytes\)"):
        load_image_folder(tmp_path)


# ----------------------------------------------------------------------------------------- tables


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_parquet_footer_claiming_absurd_rows_is_refused(tmp_path: Path) -> None:
    """Rewrite every thrift i64 field holding the row count 5 (file and row group num_rows, num_values)."""
    pd.DataFrame({"f": np.arange(5.0), "label": [0, 1, 0, 1, 0]}).to_parquet(tmp_path / "t.parquet", index=False)
    data = (tmp_path / "t.parquet").read_bytes()
    footer_len = struct.unpack("<I", data[-8:-4])[0]
    footer = data[-8 - footer_len : -8]
    five, huge = b"\x16" + _varint(5 << 1), b"\x16" + _varint((10**13) << 1)  # zigzag varint, field delta 1
    assert five in footer
    forged = footer.replace(five, huge)
    path = tmp_path / "forged.parquet"
    path.write_bytes(data[: -8 - footer_len] + forged + struct.pack("<I", len(forged)) + b"PAR1")
    with pytest.raises(DataError, match=r"a table of 10,000,000,000,000 rows x 2 columns \(as its footer declares\)"):
        load_table(path)


def test_table_running_out_of_memory_is_a_data_error(tmp_path: Path, monkeypatch) -> None:
    pd.DataFrame({"f": [1.0], "label": [0]}).to_csv(tmp_path / "t.csv", index=False)

    def out_of_memory(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise MemoryError("Unable to allocate 40 GiB")

    monkeypatch.setattr(pd, "read_csv", out_of_memory)
    with pytest.raises(DataError, match="does not fit in the free memory"):
        load_table(tmp_path / "t.csv")


# ----------------------------------------------------------------------------- CLI, end to end


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A linear classifier over 1x8x8 images exported to ONNX (untrained: only loading matters here)."""
    from assay.models.export import export_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    export_onnx(net, torch.zeros(2, 1, 8, 8), path)
    return path


def _evaluate(model: Path, data: Path, out: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["evaluate", str(model), "--data", str(data), "--out", str(out), "--no-cache", "-q", *extra])
    return code, capsys.readouterr().err


def _assert_refused(code: int, err: str, out: Path, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("Error:") and "Traceback" not in err and "Internal error" not in err
    flat = " ".join(err.split())
    assert "Fix:" in flat
    for fragment in fragments:
        assert fragment in flat, f"{fragment!r} not in {flat!r}"
    assert not out.exists()


def test_cli_npz_header_lie_exits_2(tiny_model: Path, tmp_path: Path, capsys) -> None:
    lying = _patch_shape(_npy(np.zeros((4, 1, 8, 8), np.float32)), (4, 1, 8, 8), (4 * 10**9, 1, 8, 8))
    data = _zip(tmp_path / "lie.npz", {"x.npy": lying, "y.npy": _npy(np.arange(4))})
    code, err = _evaluate(tiny_model, data, tmp_path / "out", capsys)
    _assert_refused(code, err, tmp_path / "out", "array 'x' declares shape (4000000000, 1, 8, 8)")


def test_cli_decompression_bomb_exits_2(tiny_model: Path, tmp_path: Path, capsys) -> None:
    _png_header_only(tmp_path / "data" / "a" / "bomb.png", 30000, 30000)
    code, err = _evaluate(tiny_model, tmp_path / "data", tmp_path / "out", capsys)
    _assert_refused(code, err, tmp_path / "out", "bomb.png", "MAX_IMAGE_PIXELS")


def test_cli_absurd_image_size_exits_2(tiny_model: Path, tmp_path: Path, capsys) -> None:
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "data" / label / "1.png")
    code, err = _evaluate(tiny_model, tmp_path / "data", tmp_path / "out", capsys, "--image-size", "100000")
    _assert_refused(code, err, tmp_path / "out", "--image-size 100000x100000", "(80,000,000,000 bytes)")


def test_cli_uint8_npz_runs(tiny_model: Path, tmp_path: Path, capsys) -> None:
    """uint8 images are a normal input now, not a silent 255x scale error: the run succeeds."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "u8.npz", x=rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8), y=np.arange(40) % 10)
    code, err = _evaluate(tiny_model, tmp_path / "u8.npz", tmp_path / "out", capsys, "--n-bootstrap", "100")
    assert code == 0, err
    dataset = load_data(tmp_path / "u8.npz")
    assert dataset.x.max() <= 1.0 and dataset.notes and "uint8" in dataset.notes[0]
