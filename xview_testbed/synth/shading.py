# SPDX-License-Identifier: Apache-2.0
"""Sun lighting shared by the aerial and ground renderers, so both views of a city agree."""

from __future__ import annotations

import math

import numpy as np

_AMBIENT_TINT = np.array([0.92, 0.97, 1.12], np.float32)  # shade is lit by the blue sky


def sun_vector(appearance: dict) -> np.ndarray:
    """Unit vector toward the sun in ENU (east, north, up) from compass azimuth / elevation (degrees)."""
    az, el = math.radians(appearance["sun_azimuth_deg"]), math.radians(appearance["sun_elevation_deg"])
    return np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)], np.float32)


def shade(albedo: np.ndarray, cos_incidence: np.ndarray, lit: np.ndarray, appearance: dict) -> np.ndarray:
    """Radiance (0-255 scale, float32) of surfaces with ``albedo`` (..., 3) 0-255.

    ``cos_incidence`` is the cosine between the surface normal and the sun direction, ``lit`` 0..1
    whether the sun reaches the point (cast shadows); sky light is ambient and bluish.
    """
    amb = float(appearance["ambient"])
    direct = (1.0 - amb) * 1.25 * np.clip(cos_incidence, 0.0, None) * lit
    gain = amb * _AMBIENT_TINT + direct[..., None]
    return albedo.astype(np.float32) * gain
