"""Raw files read as a stream of bytes, decompressed by what their first bytes say, not by their name.

A gzip file named `.tsv`, or a plain file named `.gz`, is read for what it is. gzip, bzip2 and xz
are decompressed on the fly, each in chunks of bounded size (a small file that expands a
thousandfold never holds more than one chunk in memory), and concatenated members (`cat a.gz b.gz`)
are read as one stream. Bytes after the last member that do not start another one raise
`TrailingBytes` once everything before them has been yielded, so the reader can say how many lines
it read; a stream that stops mid-member or does not decode raises `CorruptStream`. Formats that the
standard library cannot read (zstd, zip, lz4) are refused with what to do instead.
"""

from __future__ import annotations

import bz2
import lzma
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

READ_BYTES = 1 << 20
"""Compressed bytes read from the file at a time."""
MAGIC_BYTES = 6
"""Enough leading bytes to recognise every format below."""

SUPPORTED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}
UNSUPPORTED_MAGIC = {
    b"\x28\xb5\x2f\xfd": ("zstd", "zstd -d FILE"),
    b"PK\x03\x04": ("zip", "unzip FILE"),
    b"\x04\x22\x4d\x18": ("lz4", "lz4 -d FILE"),
}


class CorruptStream(ValueError):
    """The compressed stream is cut short or does not decode."""


class TrailingBytes(Exception):
    """`count` bytes follow the end of the last compressed member and start no new one."""

    def __init__(self, compression: str, count: int) -> None:
        super().__init__(f"{count:,} bytes that are not {compression} follow the end of the {compression} stream")
        self.compression = compression
        self.count = count


class Decompressor(Protocol):
    """What `bz2.BZ2Decompressor` and `lzma.LZMADecompressor` offer, and `GzipMember` adapts zlib to."""

    eof: bool
    unused_data: bytes
    needs_input: bool

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class GzipMember:
    """One gzip member through zlib, with the interface of the bz2 and lzma decompressors."""

    def __init__(self) -> None:
        self.inner = zlib.decompressobj(wbits=31)
        self.tail = b""
        self.output_was_full = False

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        output = self.inner.decompress(self.tail + data, max_length)
        self.tail = self.inner.unconsumed_tail
        self.output_was_full = len(output) == max_length
        return output

    @property
    def eof(self) -> bool:
        return self.inner.eof

    @property
    def unused_data(self) -> bytes:
        return self.inner.unused_data

    @property
    def needs_input(self) -> bool:
        return not self.tail and not self.output_was_full


DECOMPRESSORS: dict[str, Callable[[], Decompressor]] = {
    "gzip": GzipMember,
    "bzip2": bz2.BZ2Decompressor,
    "xz": lzma.LZMADecompressor,
}


def compression_of(head: bytes) -> str | None:
    """The compression whose magic bytes start `head`, or None for anything else (read as plain)."""
    return next((name for magic, name in SUPPORTED_MAGIC.items() if head.startswith(magic)), None)


def is_compressed(path: Path) -> bool:
    """Whether the file at `path` (which must be readable) starts like a compressed stream."""
    with open(path, "rb") as file:
        return compression_of(file.read(MAGIC_BYTES)) is not None


def refuse_unsupported(path: Path, head: bytes) -> None:
    for magic, (name, command) in UNSUPPORTED_MAGIC.items():
        if head.startswith(magic):
            raise ValueError(
                f"{path}: is {name}-compressed, which recsys does not read; "
                f"decompress it first ({command}) or recompress it with gzip"
            )


def raw_chunks(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    """The file's bytes, decompressed if its first bytes say so, in chunks of at most `chunk_bytes`."""
    with open(path, "rb") as file:
        head = file.read(MAGIC_BYTES)
        refuse_unsupported(path, head)
        compression = compression_of(head)
        if compression is None:  # chunks of exactly `chunk_bytes`, so that nothing downstream copies them to join
            yield head + file.read(max(0, chunk_bytes - len(head)))
            yield from iter(lambda: file.read(chunk_bytes), b"")
            return
        yield from decompressed_chunks(file, compression, head, chunk_bytes)


def decompressed_chunks(file: BinaryIO, compression: str, pending: bytes, chunk_bytes: int) -> Iterator[bytes]:
    """Decompress member after member; `pending` holds bytes already read from `file`."""
    decompressor = DECOMPRESSORS[compression]()
    while True:
        if decompressor.eof:
            pending = decompressor.unused_data + file.read(max(0, MAGIC_BYTES - len(decompressor.unused_data)))
            if not pending:
                return
            if compression_of(pending) != compression:
                raise TrailingBytes(compression, len(pending) + bytes_left(file))
            decompressor = DECOMPRESSORS[compression]()
        if decompressor.needs_input and not pending:
            pending = file.read(READ_BYTES)
            if not pending:
                raise CorruptStream(f"the {compression} stream ends in the middle (the file is cut short)")
        try:
            output = decompressor.decompress(pending, chunk_bytes)
        except (zlib.error, OSError, lzma.LZMAError, EOFError) as error:
            raise CorruptStream(f"the {compression} stream is corrupt ({error})") from error
        pending = b""
        if output:
            yield output


def bytes_left(file: BinaryIO) -> int:
    """Bytes of `file` after its current position, counted without reading them."""
    return os.fstat(file.fileno()).st_size - file.tell()
