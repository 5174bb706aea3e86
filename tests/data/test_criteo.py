"""The Criteo reader: exact values against an independent line-by-line parse, and every kind of bad row."""

from __future__ import annotations

import bz2
import gzip
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data.bad_rows import BadRowTally, MalformedRowError
from recsys.data.criteo import CRITEO, read_criteo
from recsys.data.fields import MISSING_ID

GOOD_ROW = (
    "1\t" + "\t".join(str(value) for value in range(13)) + "\t" + "\t".join(f"{value:08x}" for value in range(26))
)


def reference_parse(line: str) -> list:
    """Plain-Python parse of one raw line into the prepared values (written apart from the reader)."""
    fields = line.rstrip("\n").split("\t")
    label = float(fields[0])
    dense = [math.log1p(max(int(field), 0)) if field else 0.0 for field in fields[1:14]]
    sparse = [int(field, 16) if field else MISSING_ID for field in fields[14:]]
    return [label, *dense, *sparse]


def read_all(paths: list[Path], skip: bool = False, block_bytes: int = 1 << 20) -> tuple[pl.DataFrame, BadRowTally]:
    tally = BadRowTally(skip=skip)
    frames = [frame for frame, _ in read_criteo(paths, tally, block_bytes)]
    return pl.concat(frames), tally


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_real_sample_matches_line_by_line_parse(criteo_sample):
    frame, tally = read_all([criteo_sample], block_bytes=256 << 10)  # several blocks
    lines = criteo_sample.read_text().splitlines()
    expected = np.array([reference_parse(line) for line in lines], dtype=np.float64)
    assert frame.shape == (len(lines), 40)
    assert tally.total == 0
    np.testing.assert_allclose(frame.select(CRITEO.dense_features).to_numpy(), expected[:, 1:14], rtol=1e-6)
    np.testing.assert_array_equal(frame.select(CRITEO.sparse_features).to_numpy(), expected[:, 14:].astype(np.int64))
    np.testing.assert_array_equal(frame["label"].to_numpy(), expected[:, 0])


@pytest.mark.parametrize("name", ["sample.tsv.gz", "sample.tsv"])
def test_gzip_input_reads_the_same_whatever_its_name(criteo_sample, tmp_path, name):
    compressed = tmp_path / name
    compressed.write_bytes(gzip.compress(criteo_sample.read_bytes()))
    plain, _ = read_all([criteo_sample])
    zipped, _ = read_all([compressed])
    assert plain.equals(zipped)


def test_missing_values_and_no_trailing_newline(tmp_path):
    fields = GOOD_ROW.split("\t")
    fields[3] = ""
    fields[20] = ""
    path = tmp_path / "rows.tsv"
    path.write_text(GOOD_ROW + "\n" + "\t".join(fields))
    frame, _ = read_all([path])
    assert frame.shape[0] == 2
    assert frame["I3"][1] == 0.0
    assert frame["C7"][1] == MISSING_ID
    assert frame["C7"][0] == 6


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("\t".join(GOOD_ROW.split("\t")[:-1]), "expected 40 tab-separated fields, found 39"),
        (GOOD_ROW + "\textra", "expected 40 tab-separated fields, found 41"),
        ("", "expected 40 tab-separated fields, found 1"),
        (GOOD_ROW.replace("1\t0\t1", "1\t0\tx1", 1), "I2: expected an integer, got 'x1'"),
        (GOOD_ROW.replace("00000002", "0000zz02"), "C3: expected an unsigned hex string of at most 8 digits"),
        (GOOD_ROW.replace("00000002", "1234567890"), "C3: expected an unsigned hex string"),
        (GOOD_ROW.replace("00000002", "-1"), "C3: expected an unsigned hex string of at most 8 digits, got '-1'"),
        (GOOD_ROW.replace("00000002", "+ff"), "C3: expected an unsigned hex string of at most 8 digits, got '+ff'"),
        ("2" + GOOD_ROW[1:], "label: expected 0 or 1, got '2'"),
        ("\t" + GOOD_ROW[2:], "label: expected 0 or 1, got None"),
        (GOOD_ROW.replace("\t1\t", "\t 1\t", 1), "I2: expected an integer, got ' 1'"),
        (GOOD_ROW.replace("\t1\t", "\t \t", 1), "I2: expected an integer, got ' '"),
    ],
)
def test_bad_row_stops_with_file_line_and_reason(tmp_path, bad_line, message):
    path = write_lines(tmp_path / "bad.tsv", [GOOD_ROW, GOOD_ROW, bad_line, GOOD_ROW])
    with pytest.raises(MalformedRowError) as caught:
        read_all([path])
    assert caught.value.line == 3
    assert caught.value.path == str(path)
    assert message in str(caught.value)
    assert f"{path}:3:" in str(caught.value)
    assert "--skip-bad-rows" in str(caught.value)


@pytest.mark.parametrize("first", [True, False])
def test_ragged_lines_that_balance_the_tab_count_are_found(tmp_path, first):
    short = "\t".join(GOOD_ROW.split("\t")[:-1])
    long = GOOD_ROW + "\textra"
    lines = [short, GOOD_ROW, long] if first else [GOOD_ROW, long, short]
    path = write_lines(tmp_path / "balanced.tsv", lines)
    with pytest.raises(MalformedRowError) as caught:
        read_all([path])
    assert caught.value.line == (1 if first else 2)
    frame, tally = read_all([path], skip=True)
    assert len(frame) == 1 and tally.counts == {"wrong field count": 2}


def test_a_file_without_line_ends_is_refused_with_bounded_memory(tmp_path):
    path = tmp_path / "one-line.tsv"
    path.write_bytes(GOOD_ROW.encode().replace(b"\t", b"\r") * 10_000)  # 1.1 MB, no \n
    with pytest.raises(ValueError, match=r"one-line.tsv:1: no line end in 1,048,576 bytes"):
        read_all([path], block_bytes=64 << 10)


def test_a_corrupt_gzip_file_is_named(tmp_path):
    path = tmp_path / "broken.tsv.gz"
    path.write_bytes(gzip.compress((GOOD_ROW + "\n").encode() * 1000)[:-20])
    with pytest.raises(ValueError, match=r"broken.tsv.gz: cannot read"):
        read_all([path])


def test_skip_bad_rows_counts_every_reason(tmp_path):
    lines = [GOOD_ROW] * 5
    lines[1] = GOOD_ROW + "\textra"
    lines[3] = GOOD_ROW.replace("00000005", "nothex!!")
    lines.append("")
    path = write_lines(tmp_path / "mixed.tsv", lines)
    frame, tally = read_all([path], skip=True)
    assert len(frame) == 3
    assert tally.total == 3
    assert tally.counts == {"wrong field count": 2, "C6 not hex": 1}
    assert tally.examples[0].startswith(f"{path}:2:")
    assert "skipped 3 malformed rows" in tally.summary()


def test_line_numbers_hold_across_blocks(tmp_path):
    lines = [GOOD_ROW] * 3000
    lines[2500] = GOOD_ROW.replace("00000001", "zzzzzzzz")
    path = write_lines(tmp_path / "long.tsv", lines)
    with pytest.raises(MalformedRowError) as caught:
        read_all([path], block_bytes=4096)
    assert caught.value.line == 2501


def test_bytes_that_are_not_utf8_are_a_bad_value_named_by_line_and_field_and_skippable(tmp_path):
    lines = [GOOD_ROW.encode()] * 6
    fields = lines[3].split(b"\t")
    fields[16] = b"ab\xff\xfe01"  # C3
    lines[3] = b"\t".join(fields)
    fields = lines[4].split(b"\t")
    fields[2] = b"\xc3"  # I2: a UTF-8 sequence cut short
    lines[4] = b"\t".join(fields)
    path = tmp_path / "latin.tsv"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    with pytest.raises(MalformedRowError) as caught:
        read_all([path])
    assert caught.value.line == 4
    assert "C3: bytes that are not UTF-8: b'ab\\xff\\xfe01'" in str(caught.value)
    frame, tally = read_all([path], skip=True)
    assert len(frame) == 4 and tally.counts == {"not UTF-8": 2}
    assert tally.examples[1] == f"{path}:5: I2: bytes that are not UTF-8: b'\\xc3'"


BAD_VALUE = GOOD_ROW.replace("00000005", "nothex!!")
RAGGED = GOOD_ROW + "\textra"


@pytest.mark.parametrize(
    "first, second, expected",
    [
        (BAD_VALUE, RAGGED, "C6: expected"),
        (RAGGED, BAD_VALUE, "expected 40 tab-separated fields, found 41"),
        (BAD_VALUE.encode() + b"\xff", BAD_VALUE, "C26: bytes that are not UTF-8"),
        (BAD_VALUE, RAGGED.encode() + b"\xff", "C6: expected"),
    ],
    ids=["value-then-ragged", "ragged-then-value", "utf8-then-value", "value-then-utf8"],
)
def test_the_first_bad_row_in_file_order_is_the_one_named_whatever_its_kind(tmp_path, first, second, expected):
    lines = [GOOD_ROW.encode()] * 6
    lines[2] = first if isinstance(first, bytes) else first.encode()
    lines[4] = second if isinstance(second, bytes) else second.encode()
    path = tmp_path / "two-bad.tsv"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    with pytest.raises(MalformedRowError) as caught:
        read_all([path])
    assert caught.value.line == 3 and expected in str(caught.value)


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress], ids=["gzip", "bzip2"])
def test_trailing_bytes_after_a_compressed_file_are_reported_after_every_line_before(tmp_path, compress):
    path = tmp_path / "trailing.tsv.gz"
    path.write_bytes(compress("".join(GOOD_ROW + "\n" for _ in range(3000)).encode()) + b"\x00junk")
    with pytest.raises(MalformedRowError, match=r"trailing.tsv.gz:3001: 5 bytes that are not .* every line before"):
        read_all([path], block_bytes=4096)
    frame, tally = read_all([path], skip=True, block_bytes=4096)
    assert len(frame) == 3000 and tally.counts == {"trailing bytes": 1}
