# SPDX-License-Identifier: Apache-2.0
"""Hostile image bytes for tests: tiny files whose headers declare huge images (decompression bombs)."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np


def jpeg_declaring(width: int, height: int) -> bytes:
    """A valid 8x8 baseline JPEG whose frame header (SOF0) is rewritten to declare width x height px
    (631 bytes; libjpeg allocates the declared size, then fills the missing scan data with grey)."""
    ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert ok
    data = bytearray(buf.tobytes())
    i = 2
    while data[i + 1] != 0xC0:
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A complete, CRC-correct 8-bit grey PNG whose IHDR declares width x height px over a few bytes
    of pixel data (68 bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 10)) + _chunk(b"IEND", b"")
    )
