# SPDX-License-Identifier: Apache-2.0
"""Heat-map pictures for people: the colour overlay with the GNSS fix and the estimate marked, and
OccupancyGrid cell values. The colour blend itself is xview_loc_ros.heatmap.overlay_heatmap.

Patch pixels are continuous (u east, v south) over a north-up patch (see geo.PatchGeoref).
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

from xview_loc_ros.heatmap import overlay_heatmap

FIX_COLOUR = (255, 255, 255)  # RGB: the GNSS fix
ESTIMATE_COLOUR = (0, 255, 0)  # RGB: the refined estimate


def heatmap_overlay(
    patch_rgb: np.ndarray,
    logits: np.ndarray,
    fix_px: Optional[Tuple[float, float]] = None,
    estimate_px: Optional[Tuple[float, float]] = None,
) -> np.ndarray:
    """The aerial patch (RGB uint8 SxSx3) with the heat map ``logits`` ((h, w) or (n, h, w)) blended in,
    the GNSS fix drawn as a white cross and the estimate as a green circle. Returns RGB uint8 SxSx3."""
    if patch_rgb.ndim != 3 or patch_rgb.shape[2] != 3 or patch_rgb.dtype != np.uint8:
        raise ValueError(f"aerial patch: expected RGB uint8 HxWx3, got {patch_rgb.dtype} {patch_rgb.shape}")
    out = np.ascontiguousarray(overlay_heatmap(patch_rgb, logits))
    size = max(6, patch_rgb.shape[0] // 24)
    if fix_px is not None:
        cv2.drawMarker(out, (int(round(fix_px[0])), int(round(fix_px[1]))), FIX_COLOUR, cv2.MARKER_CROSS, size, 2)
    if estimate_px is not None:
        cv2.circle(out, (int(round(estimate_px[0])), int(round(estimate_px[1]))), size // 2, ESTIMATE_COLOUR, 2)
    return out


def occupancy_values(prob: np.ndarray) -> np.ndarray:
    """Probability map (h, w), row 0 at the north -> int8 (h, w) cells 0..100 relative to the peak,
    row 0 at the SOUTH (OccupancyGrid order: row-major from the origin at the south-west corner)."""
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim != 2 or p.size == 0:
        raise ValueError(f"heat map: expected a 2-D probability map, got shape {p.shape}")
    peak = p.max()
    scaled = p / peak if peak > 0 else np.zeros_like(p)
    return np.ascontiguousarray(np.flipud(np.rint(scaled * 100.0)).astype(np.int8))
