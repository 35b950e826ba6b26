# SPDX-License-Identifier: Apache-2.0
"""Photometric augmentation of training pairs: what differs between cities, seasons and sensors
without moving a single pixel (colour balance, saturation, brightness, gamma, blur, sensor noise,
JPEG recompression). Each view is augmented on its own: the camera and the aerial survey are
different sensors under different light.

A source model trained without it learns the colours of its cities: the project's prototype
measured a teacher that fell below the patch-centre guess on a palette change alone and a
moderate gap with colour augmentation (``shared/benchmark_findings.md``). Geometry is untouched,
so labels stay exact.

Random draws come from ``torch``'s generator (seeded by the trainer, per worker), so a run is
reproducible; images are HxWx3 uint8 RGB in and out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch


@dataclass(frozen=True)
class Photometric:
    """Ranges of the photometric draws at ``strength`` 1; ``strength`` scales every range linearly
    (0 = identity, the default of `xview-adapt train` is 1).

    gain: per-channel multiplicative colour balance, ±gain; brightness: additive offset, ±brightness
    x 255; saturation: factor in [1 - saturation, 1 + saturation]; gamma: exponent in
    [1 / (1 + gamma), 1 + gamma]; blur_sigma_px: Gaussian blur sigma in [0, blur_sigma_px] pixels,
    applied with probability p_blur; noise_std: Gaussian sensor noise std in [0, noise_std] x 255,
    with probability p_noise; jpeg_quality: JPEG recompression at a quality in [jpeg_quality, 95],
    with probability p_jpeg."""

    strength: float = 1.0
    gain: float = 0.15
    brightness: float = 0.08
    saturation: float = 0.4
    gamma: float = 0.35
    blur_sigma_px: float = 1.2
    p_blur: float = 0.3
    noise_std: float = 0.03
    p_noise: float = 0.5
    jpeg_quality: int = 35
    p_jpeg: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 3.0:
            raise ValueError(f"photometric strength must be in [0, 3], got {self.strength}")
        for name in ("p_blur", "p_noise", "p_jpeg"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"photometric {name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"photometric jpeg_quality must be in [1, 95], got {self.jpeg_quality}")

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """One random draw applied to ``rgb`` (HxWx3 uint8); returns a new HxWx3 uint8 array."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"photometric augmentation needs an HxWx3 uint8 image, got {rgb.shape} {rgb.dtype}")
        s = self.strength
        if s == 0.0:
            return rgb.copy()
        x: np.ndarray = rgb.astype(np.float32) / 255.0
        grey = x.mean(axis=2, keepdims=True)
        x = grey + (x - grey) * (1.0 + s * self.saturation * _uniform(-1, 1))
        x = x * (1.0 + s * self.gain * _uniform3(-1, 1)) + s * self.brightness * _uniform(-1, 1)
        g = 1.0 + s * self.gamma * _uniform(0, 1)
        x = np.clip(x, 0.0, 1.0) ** (g if _uniform(0, 1) < 0.5 else 1.0 / g)
        if _uniform(0, 1) < self.p_blur and s > 0:
            sigma = s * self.blur_sigma_px * _uniform(0, 1)
            if sigma > 0.05:
                x = cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
        if _uniform(0, 1) < self.p_noise:
            std = s * self.noise_std * _uniform(0, 1)
            x = x + std * torch.randn(x.shape, dtype=torch.float32).numpy()
        out = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if _uniform(0, 1) < self.p_jpeg:
            q = int(round(95 - (95 - self.jpeg_quality) * min(1.0, s) * _uniform(0, 1)))
            ok, buf = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
            decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
            if decoded is not None:
                out = np.ascontiguousarray(decoded[:, :, ::-1])
        return out


def _uniform(lo: float, hi: float) -> float:
    """A uniform draw in [lo, hi) from torch's generator."""
    return lo + (hi - lo) * float(torch.rand(()))


def _uniform3(lo: float, hi: float) -> np.ndarray:
    """Three uniform draws in [lo, hi) from torch's generator (one per colour channel)."""
    return (lo + (hi - lo) * torch.rand(3)).numpy()
