"""ROS image messages -> RGB uint8 HxWx3 arrays.

Handles ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8 and the four 8-bit Bayer
patterns) and ``sensor_msgs/CompressedImage`` (JPEG or PNG, recognised by their magic bytes, so
``format`` strings such as "rgb8; jpeg compressed bgr8" need no parsing). A frame that cannot be
decoded raises :class:`FrameDecodeError`; the extractor counts and skips it.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import cv2
import numpy as np

# ROS Bayer names give the colour order of the top-left 2x2 block; OpenCV names its codes after
# the second row's second and third pixels, hence the shifted names (same mapping as cv_bridge).
_BAYER = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}
# encoding -> (channels, conversion to RGB or None when already RGB)
_PLAIN = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "8uc1": (1, cv2.COLOR_GRAY2RGB),
    "8uc3": (3, cv2.COLOR_BGR2RGB),  # OpenCV's native order, as cv_bridge writes it
}
SUPPORTED_ENCODINGS = tuple(sorted(set(_PLAIN) | set(_BAYER)))


class FrameDecodeError(ValueError):
    """One image message could not be turned into an RGB image (the message says why)."""


def image_from_raw(encoding: str, height: int, width: int, step: int, data: Any) -> np.ndarray:
    """Fields of a ``sensor_msgs/Image`` -> RGB uint8 (height, width, 3) (8-bit encodings: byte order is moot)."""
    enc = str(encoding).strip().lower()
    if enc in _BAYER:
        channels, code = 1, _BAYER[enc]
    elif enc in _PLAIN:
        channels, code = _PLAIN[enc]
    else:
        raise FrameDecodeError(f"unsupported image encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    h, w, step = int(height), int(width), int(step)
    if h <= 0 or w <= 0:
        raise FrameDecodeError(f"empty image ({w}x{h} px)")
    if step < w * channels:
        raise FrameDecodeError(f"row step {step} bytes is shorter than width {w} x {channels} channels")
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    if buf.size < step * h:
        raise FrameDecodeError(f"{enc} {w}x{h}: {buf.size} data bytes, expected {step * h} (step {step} x {h} rows)")
    rows = buf[: step * h].reshape(h, step)[:, : w * channels]
    img = rows.reshape(h, w, channels) if channels > 1 else rows
    if code is None:
        return np.ascontiguousarray(img)
    return cv2.cvtColor(np.ascontiguousarray(img), code)


def image_from_compressed(data: Any, fmt: str = "") -> np.ndarray:
    """Bytes of a ``sensor_msgs/CompressedImage`` (JPEG or PNG) -> RGB uint8 (H, W, 3)."""
    if "compresseddepth" in str(fmt).lower():
        raise FrameDecodeError(f"compressed depth images are not camera frames (format {fmt!r})")
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    head = buf[:8].tobytes()
    if not (head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n")):
        raise FrameDecodeError(f"compressed image (format {fmt!r}) is neither JPEG nor PNG (starts with {head!r})")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FrameDecodeError(f"corrupt compressed image (format {fmt!r}, {buf.size} bytes)")
    if img.dtype != np.uint8:
        raise FrameDecodeError(f"compressed image has {img.dtype} pixels, expected 8-bit")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def jpeg_bytes(msg: Any) -> Optional[bytes]:
    """The message's bytes when it is a complete JPEG CompressedImage (stored as-is, no re-encode), else None."""
    if not hasattr(msg, "format"):
        return None
    data = memoryview(msg.data).cast("B")
    if len(data) < 4 or bytes(data[:3]) != b"\xff\xd8\xff" or bytes(data[-2:]) != b"\xff\xd9":
        return None
    return bytes(data)


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> Tuple[int, int]:
    """(height, width) of a JPEG from its frame header, checked by a 1/8-scale decode of the whole
    entropy-coded stream (several times cheaper than a full decode; catches corrupt frames)."""
    i, n = 2, len(data)
    size = None
    while i + 4 <= n and size is None:
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        seg = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _SOF_MARKERS and i + 9 <= n:
            size = (int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big"))
        i += 2 + seg
    if size is None or min(size) <= 0:
        raise FrameDecodeError(f"JPEG without a valid frame header ({n} bytes)")
    small = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_8)
    if small is None or small.shape[:2] != ((size[0] + 7) // 8, (size[1] + 7) // 8):
        raise FrameDecodeError(f"corrupt JPEG ({size[1]}x{size[0]} px, {n} bytes)")
    return size


def decode_image_msg(msg: Any) -> np.ndarray:
    """A deserialised ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` -> RGB uint8 (H, W, 3)."""
    if hasattr(msg, "encoding"):
        return image_from_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    if hasattr(msg, "format") and hasattr(msg, "data"):
        return image_from_compressed(msg.data, msg.format)
    raise FrameDecodeError(f"not an image message: {type(msg).__name__}")
