# SPDX-License-Identifier: Apache-2.0
"""Image sizes read from headers only, checked against what OpenCV decodes; malformed headers are typed errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hostile_images import jpeg_declaring, png_declaring

from xview_loc_ros.imageheader import ImageHeaderError, image_kind, image_size

ENCODINGS = [
    (".png", []),
    (".jpg", []),
    (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # > 100 selects lossless (VP8L)
]


@pytest.mark.parametrize("ext,params", ENCODINGS)
@pytest.mark.parametrize("w,h", [(256, 256), (1, 1), (641, 37), (513, 1024)])
def test_size_matches_the_decoder(ext, params, w, h):
    img = np.random.default_rng(w * h).integers(0, 255, (h, w, 3), np.uint8)
    ok, buf = cv2.imencode(ext, img, params)
    assert ok
    data = buf.tobytes()
    assert image_size(data) == (w, h) == cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).shape[1::-1]
    assert image_kind(data) == ext[1:]


def test_extended_webp_canvas():
    # VP8X: the extended layout (alpha, metadata) states the canvas size in its own chunk
    body = (
        b"VP8X"
        + (10).to_bytes(4, "little")
        + b"\x10\0\0\0"
        + (4999).to_bytes(3, "little")
        + (299).to_bytes(3, "little")
    )
    data = b"RIFF" + (len(body) + 4).to_bytes(4, "little") + b"WEBP" + body
    assert image_size(data) == (5000, 300)


def test_declared_size_of_bombs_without_decoding():
    assert image_size(jpeg_declaring(20000, 20000)) == (20000, 20000)
    assert image_size(png_declaring(100000, 100000)) == (100000, 100000)


def test_not_an_image_is_none():
    for data in (b"", b"<html>", b"GIF89a....", b"RIFF\0\0\0\0WAVEfmt "):
        assert image_size(data) is None and image_kind(data) is None


@pytest.mark.parametrize("ext,params", ENCODINGS)
def test_every_truncated_header_is_a_typed_error(ext, params):
    ok, buf = cv2.imencode(ext, np.zeros((40, 30, 3), np.uint8), params)
    data = buf.tobytes()
    for n in range(len(data)):
        try:
            size = image_size(data[:n])
        except ImageHeaderError:
            continue
        assert size in (None, (30, 40)), (n, size)


def test_malformed_headers():
    with pytest.raises(ImageHeaderError, match="IHDR"):
        image_size(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDX" + bytes(13))
    with pytest.raises(ImageHeaderError, match="0x0 px"):
        image_size(png_declaring(0, 0))
    with pytest.raises(ImageHeaderError, match="scan data"):
        image_size(b"\xff\xd8\xff\xda\0\x08" + bytes(6))
    with pytest.raises(ImageHeaderError, match="length 0"):
        image_size(b"\xff\xd8\xff\xe0\0\0" + bytes(20))
    with pytest.raises(ImageHeaderError, match="marker"):
        image_size(b"\xff\xd8\xff\xe0\0\x04ab\x12\x34" + bytes(20))
    with pytest.raises(ImageHeaderError, match="unknown first chunk"):
        image_size(b"RIFF\0\0\0\0WEBPVP9 " + bytes(20))
