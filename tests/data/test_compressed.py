"""Raw files decompressed by their first bytes: every format, members, bounded chunks, trailing and cut-off bytes."""

from __future__ import annotations

import bz2
import gzip
import lzma

import pytest

from recsys.data.compressed import CorruptStream, TrailingBytes, raw_chunks

COMPRESSORS = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}
TEXT = b"".join(b"%d\tabc\t%08x\n" % (number, number * 7919) for number in range(20_000))


def read_back(path, chunk_bytes: int = 1 << 16) -> tuple[bytes, list[int]]:
    chunks = list(raw_chunks(path, chunk_bytes))
    return b"".join(chunks), [len(chunk) for chunk in chunks]


@pytest.mark.parametrize("compression", COMPRESSORS)
def test_each_format_is_read_by_its_first_bytes_whatever_the_name(tmp_path, compression):
    path = tmp_path / "named-plain.tsv"
    path.write_bytes(COMPRESSORS[compression](TEXT))
    data, sizes = read_back(path)
    assert data == TEXT
    assert max(sizes) <= 1 << 16


def test_a_plain_file_named_gz_is_read_as_it_is(tmp_path):
    path = tmp_path / "not-really.tsv.gz"
    path.write_bytes(TEXT)
    assert read_back(path)[0] == TEXT


@pytest.mark.parametrize("compression", COMPRESSORS)
def test_concatenated_members_are_one_stream(tmp_path, compression):
    half = len(TEXT) // 2
    path = tmp_path / "joined"
    path.write_bytes(COMPRESSORS[compression](TEXT[:half]) + COMPRESSORS[compression](TEXT[half:]))
    assert read_back(path)[0] == TEXT


def test_a_highly_compressed_file_is_never_held_whole(tmp_path):
    path = tmp_path / "zeros.gz"
    path.write_bytes(gzip.compress(b"\0" * (64 << 20)))  # 64 MB from about 64 KB
    total = 0
    for chunk in raw_chunks(path, 1 << 20):
        assert len(chunk) <= 1 << 20
        total += len(chunk)
    assert total == 64 << 20


@pytest.mark.parametrize("compression", COMPRESSORS)
def test_trailing_bytes_are_raised_after_everything_before_them(tmp_path, compression):
    path = tmp_path / "trailing"
    path.write_bytes(COMPRESSORS[compression](TEXT) + b"garbage!")
    read = []
    with pytest.raises(TrailingBytes, match=f"8 bytes that are not {compression} follow"):
        for chunk in raw_chunks(path, 1 << 16):
            read.append(chunk)
    assert b"".join(read) == TEXT


@pytest.mark.parametrize("compression", COMPRESSORS)
def test_a_cut_off_or_corrupt_stream_is_named(tmp_path, compression):
    compressed = COMPRESSORS[compression](TEXT)
    path = tmp_path / "cut"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(CorruptStream, match="ends in the middle|corrupt"):
        read_back(path)
    path.write_bytes(compressed[:20] + b"\x55" * 200 + compressed[220:])
    with pytest.raises(CorruptStream):
        read_back(path)


@pytest.mark.parametrize("magic, name", [(b"\x28\xb5\x2f\xfd", "zstd"), (b"PK\x03\x04", "zip")])
def test_a_format_we_cannot_read_is_refused_with_what_to_do(tmp_path, magic, name):
    path = tmp_path / "data.tsv"
    path.write_bytes(magic + b"\0" * 100)
    with pytest.raises(ValueError, match=f"data.tsv: is {name}-compressed.*decompress it first"):
        read_back(path)
