# SPDX-License-Identifier: Apache-2.0
"""Model input preparation, the one place: RGB uint8 images -> normalised float32 CHW arrays.

Ground panoramas follow the project convention (COMMON: the centre column looks along the camera
heading, azimuth grows to the right). Models with ``known_orientation`` get the panorama rolled so
that north is at the centre column, exactly like CCVPE's VIGOR setting.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import cv2
import numpy as np


class PreprocessError(ValueError):
    """An image or data set does not fit the model's input configuration."""


def _check_rgb(rgb: np.ndarray, what: str) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        desc = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise PreprocessError(f"{what}: expected an RGB uint8 HxWx3 array, got {desc}")


def _resize(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    if rgb.shape[:2] == (h, w):
        return rgb
    shrink = rgb.shape[0] > h or rgb.shape[1] > w
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _normalise(rgb: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
    """RGB uint8 HxWx3 -> float32 (3, H, W), (x / 255 - mean) / std, as x * a - b in one pass per
    channel (the node's pose path: one allocation, no float temporaries of the whole image)."""
    mean = np.asarray(config["mean"], np.float32)
    std = np.asarray(config["std"], np.float32)
    scale, offset = 1.0 / (255.0 * std), mean / std
    out = np.empty((3,) + rgb.shape[:2], np.float32)
    for c in range(3):
        np.multiply(rgb[:, :, c], scale[c], out=out[c], casting="unsafe")
        out[c] -= offset[c]
    return out


def north_align_shift(heading_deg: float, width: int) -> int:
    """Columns to np.roll a panorama (axis=1) so that north lands on the centre column."""
    return int(round((float(heading_deg) % 360.0) / 360.0 * width)) % width


def prepare_ground(rgb: np.ndarray, heading_deg: Optional[float], config: Mapping[str, Any]) -> np.ndarray:
    """Ground image -> float32 (3, H, W) at config ground_size, normalised.

    ``heading_deg``: compass heading of the camera forward direction (clockwise from north); needed
    (and used) only by panorama models with ``known_orientation``.
    """
    _check_rgb(rgb, "ground image")
    h, w = (int(x) for x in config["ground_size"])
    img = _resize(rgb, h, w)
    if config["ground_type"] == "panorama" and config.get("known_orientation"):
        if heading_deg is None or not np.isfinite(heading_deg):
            raise PreprocessError(
                "ground image: this model needs the camera heading (known_orientation) but it is unknown"
            )
        img = np.roll(img, north_align_shift(heading_deg, w), axis=1)
    return _normalise(img, config)


def prepare_aerial(rgb: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
    """Aerial patch (north-up, S x S at config mpp) -> float32 (3, S, S), normalised."""
    _check_rgb(rgb, "aerial patch")
    if rgb.shape[0] != rgb.shape[1]:
        raise PreprocessError(f"aerial patch: must be square, got {rgb.shape[1]}x{rgb.shape[0]} px")
    s = int(config["aerial_size"])
    if rgb.shape[0] != s:
        # resizing changes metres per pixel: callers must build patches at the model's m/px
        raise PreprocessError(f"aerial patch: model expects {s}x{s} px, got {rgb.shape[0]}x{rgb.shape[1]}")
    return _normalise(rgb, config)


def check_pair_config(config: Mapping[str, Any], meta: Any) -> None:
    """Raise PreprocessError when a data set (DatasetMeta or its dict) cannot feed this model:
    ground camera type, field of view, patch size, m/px, ground aspect ratio."""
    get = (lambda k: meta[k]) if isinstance(meta, Mapping) else (lambda k: getattr(meta, k))
    problems = []
    if get("ground_type") != config["ground_type"]:
        problems.append(f"ground camera type: data {get('ground_type')!r}, model {config['ground_type']!r}")
    if abs(float(get("fov_deg")) - float(config["fov_deg"])) > 1.0:
        problems.append(f"horizontal FOV: data {float(get('fov_deg')):g} deg, model {float(config['fov_deg']):g} deg")
    if int(get("patch_size_px")) != int(config["aerial_size"]):
        problems.append(f"aerial patch size: data {get('patch_size_px')} px, model {config['aerial_size']} px")
    # VIGOR's cities differ by up to ±8 % in m/px and CCVPE feeds them all at one nominal scale
    if abs(float(get("mpp")) / float(config["mpp"]) - 1.0) > 0.10:
        problems.append(f"aerial resolution: data {float(get('mpp')):g} m/px, model {float(config['mpp']):g} m/px")
    gh, gw = (int(x) for x in get("ground_size"))
    mh, mw = (int(x) for x in config["ground_size"])
    # CCVPE resizes KITTI's 375x1242 frames to 256x1024 (a 21 % stretch); a panorama fed to a
    # pinhole-shaped input (or 1:2 vs 1:4 panoramas) is still refused
    if abs((gw / gh) / (mw / mh) - 1.0) > 0.25:
        problems.append(f"ground image aspect: data {gh}x{gw} (HxW), model {mh}x{mw}")
    if problems:
        raise PreprocessError(f"data set and model config ({config.get('arch')}) disagree: " + "; ".join(problems))
