# SPDX-License-Identifier: Apache-2.0
"""Image dimensions from the header bytes alone (PNG IHDR, JPEG SOF, WebP VP8/VP8L/VP8X), without decoding.

Decoders allocate the full pixel buffer the header declares before they notice the data is short: a
631-byte JPEG declaring 20000 x 20000 px costs 2.3 GB. Callers check the declared size here first and
refuse what they would not accept after decoding.
"""

from __future__ import annotations

import struct
from typing import Optional, Tuple

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
#: Start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic coding).
#: C4 (DHT), C8 (JPG extension) and CC (DAC) share the range but carry no frame size.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
#: Markers without a length field: TEM, RST0..7 (SOI/EOI cannot precede a SOF in a valid file).
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


class ImageHeaderError(ValueError):
    """The bytes start like a PNG, JPEG or WebP image but its header is malformed or truncated."""


def image_kind(data: bytes) -> Optional[str]:
    """'png', 'jpg' or 'webp' from the magic bytes, None for anything else."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def image_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) pixels the header of a PNG, JPEG or WebP image declares; None when ``data`` is
    none of these. Raises :class:`ImageHeaderError` when the header is malformed or truncated."""
    kind = image_kind(data)
    if kind is None:
        return None
    size = {"png": _png_size, "jpg": _jpeg_size, "webp": _webp_size}[kind](memoryview(data))
    if size[0] <= 0 or size[1] <= 0:
        raise ImageHeaderError(f"{kind.upper()} header declares {size[0]}x{size[1]} px")
    return size


def _png_size(data: memoryview) -> Tuple[int, int]:
    # IHDR must be the first chunk: length 13, type, then width and height as big-endian uint32.
    if len(data) < 24 or bytes(data[12:16]) != b"IHDR":
        raise ImageHeaderError("PNG without an IHDR chunk first")
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def _jpeg_size(data: memoryview) -> Tuple[int, int]:
    i = 2
    while True:
        while i < len(data) and data[i] == 0xFF and i + 1 < len(data) and data[i + 1] == 0xFF:
            i += 1  # fill bytes before a marker
        if i + 4 > len(data):
            raise ImageHeaderError("JPEG ends before its frame header (SOF)")
        if data[i] != 0xFF:
            raise ImageHeaderError(f"JPEG: expected a marker at byte {i}, found 0x{data[i]:02x}")
        marker = data[i + 1]
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):
            raise ImageHeaderError("JPEG reaches its scan data or end without a frame header (SOF)")
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if length < 2:
            raise ImageHeaderError(f"JPEG: segment 0x{marker:02x} at byte {i} has length {length}")
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                raise ImageHeaderError("JPEG frame header (SOF) is truncated")
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length


def _webp_size(data: memoryview) -> Tuple[int, int]:
    chunk = bytes(data[12:16])
    if chunk == b"VP8 ":  # lossy: key-frame start code, then 14-bit width and height (2 scale bits)
        if len(data) < 30 or bytes(data[23:26]) != b"\x9d\x01\x2a":
            raise ImageHeaderError("WebP VP8 frame header is missing or truncated")
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":  # lossless: signature 0x2f, then 14-bit width-1 and height-1, little-endian bits
        if len(data) < 25 or data[20] != 0x2F:
            raise ImageHeaderError("WebP VP8L header is missing or truncated")
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        if len(data) < 30:
            raise ImageHeaderError("WebP VP8X header is truncated")
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise ImageHeaderError(f"WebP with unknown first chunk {chunk!r}")
