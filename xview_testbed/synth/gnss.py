# SPDX-License-Identifier: Apache-2.0
"""GNSS position and heading error models of a simulated vehicle (metres, seconds, degrees).

Position error per ENU axis = a first-order Gauss-Markov bias (stationary std ``bias_m``,
correlation time ``bias_tau_s``: slowly wandering, as multipath and atmosphere in a street
canyon) + white noise (std ``noise_m``) + occasional multipath outliers (probability
``outlier_prob`` per fix, a jump of about ``outlier_m`` in a random direction).
Heading error = a Gauss-Markov bias (std ``heading_bias_deg``, 120 s) + white noise
(std ``heading_noise_deg``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np

HEADING_BIAS_TAU_S = 120.0


def gauss_markov(n: int, dt: float, sigma: float, tau: float, rng: np.random.Generator, dims: int = 1) -> np.ndarray:
    """Stationary first-order Gauss-Markov sequence (n, dims) with std ``sigma`` and correlation time ``tau`` s."""
    a = math.exp(-dt / tau)
    q = sigma * math.sqrt(max(0.0, 1.0 - a * a))
    out = np.empty((n, dims))
    x = rng.normal(0.0, sigma, dims)
    for k in range(n):
        out[k] = x
        x = a * x + rng.normal(0.0, q, dims)
    return out


@dataclass(frozen=True)
class GnssErrorModel:
    noise_m: float
    bias_m: float
    bias_tau_s: float
    outlier_prob: float
    outlier_m: float
    heading_noise_deg: float
    heading_bias_deg: float

    @classmethod
    def from_sensor(cls, sensor: dict, **overrides) -> "GnssErrorModel":
        """From a style's ``sensor`` group; ``overrides`` (not None) replace single fields."""
        kw = {k: sensor[f"gnss_{k}"] for k in ("noise_m", "bias_m", "bias_tau_s", "outlier_prob", "outlier_m")}
        kw.update(heading_noise_deg=sensor["heading_noise_deg"], heading_bias_deg=sensor["heading_bias_deg"])
        kw.update({k: float(v) for k, v in overrides.items() if v is not None})
        for k, v in kw.items():
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"GNSS error setting {k} must be a finite number >= 0, got {v!r}")
        if kw["bias_tau_s"] <= 0 or kw["outlier_prob"] > 1:
            raise ValueError(
                f"GNSS bias_tau_s must be > 0 and outlier_prob within [0, 1], got {kw['bias_tau_s']}, {kw['outlier_prob']}"
            )
        return cls(**kw)

    @property
    def sigma_m(self) -> float:
        """Per-axis 1-sigma of the error without outliers (what the receiver reports), metres."""
        return math.hypot(self.noise_m, self.bias_m)

    def position_errors(self, n: int, dt: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """(n, 2) east/north errors in metres at fixes ``dt`` seconds apart, and the (n,) outlier mask."""
        bias = gauss_markov(n, dt, self.bias_m, self.bias_tau_s, rng, 2)
        white = rng.normal(0.0, self.noise_m, (n, 2))
        outlier = rng.random(n) < self.outlier_prob
        ang = rng.uniform(0, 2 * math.pi, n)
        mag = self.outlier_m * rng.uniform(0.5, 1.5, n)
        jump = np.stack([np.cos(ang), np.sin(ang)], -1) * (mag * outlier)[:, None]
        return bias + white + jump, outlier

    def heading_errors(self, n: int, dt: float, rng: np.random.Generator) -> np.ndarray:
        """(n,) compass heading errors in degrees."""
        bias = gauss_markov(n, dt, self.heading_bias_deg, HEADING_BIAS_TAU_S, rng)[:, 0]
        return bias + rng.normal(0.0, self.heading_noise_deg, n)
