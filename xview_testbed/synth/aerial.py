# SPDX-License-Identifier: Apache-2.0
"""Aerial ortho renderer: top-down colours with sun shading, cast shadows, grading, blur and noise."""

from __future__ import annotations

import cv2
import numpy as np

from xview_testbed.synth.shading import shade, sun_vector
from xview_testbed.synth.world import World


def render_ortho(world: World, appearance: dict, seed: int = 0) -> np.ndarray:
    """The world seen straight down, north-up, at the world resolution: RGB uint8 (N, N, 3).

    Slopes (pitched roofs, tree crowns) are lit by their normal; cast shadows come from
    ``world.caster``; then the style's aerial grading: brightness, contrast, saturation,
    per-channel tint, Gaussian blur (pixels of the world raster) and sensor noise (0-255 units).
    """
    res = world.res_m
    h = world.height
    dh_de = cv2.Sobel(h, cv2.CV_32F, 1, 0, ksize=3) / (8 * res)
    dh_dn = -cv2.Sobel(h, cv2.CV_32F, 0, 1, ksize=3) / (8 * res)
    # clamp the steps at walls so a facade edge does not read as a steep slope from above
    dh_de, dh_dn = np.clip(dh_de, -1.5, 1.5), np.clip(dh_dn, -1.5, 1.5)
    s = sun_vector(appearance)
    cos_i = (-dh_de * s[0] - dh_dn * s[1] + s[2]) / np.sqrt(dh_de**2 + dh_dn**2 + 1)
    lit = np.clip((h + 0.3 - world.caster) / 0.6, 0.0, 1.0)
    lit = cv2.GaussianBlur(lit, (0, 0), 0.6 / res)  # penumbra
    img = shade(world.albedo, cos_i, lit, appearance) / 255.0
    img = img * appearance["aerial_brightness"]
    img = (img - 0.5) * appearance["aerial_contrast"] + 0.5
    grey = img.mean(axis=-1, keepdims=True)
    img = grey + appearance["aerial_saturation"] * (img - grey)
    img = img * np.asarray(appearance["aerial_tint"], np.float32)
    if appearance["aerial_blur_px"] > 0:
        img = cv2.GaussianBlur(img, (0, 0), appearance["aerial_blur_px"])
    img = img * 255.0
    if appearance["aerial_noise"] > 0:
        rng = np.random.default_rng(seed)
        img += rng.normal(0.0, appearance["aerial_noise"], img.shape[:2] + (1,)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)
