# SPDX-License-Identifier: Apache-2.0
"""Ground-level renderer: ray casting of the city height field from a vehicle camera.

Conventions (COMMON.md, DESIGN §3): equirectangular panorama columns u (pixel i covers [i, i+1))
show compass azimuth ``heading + (u - W/2) * 360 / W`` (centre column = heading, azimuth grows to
the right), rows v show elevation ``90 - v * 180 / H`` degrees. Pinhole: looks along the heading,
pitch positive up, principal point at the image centre, fx = fy = (W/2) / tan(hfov/2).

Every column of constant azimuth shares one ray in plan view, so the height field is sampled
once per column (K distances, growing with range); the first sample whose elevation angle,
seen from the camera, reaches a row's elevation is what that row sees (a running maximum and one
vectorised ``searchsorted``). Pinhole images are resampled from a finer (azimuth, elevation) grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

from xview_testbed.synth.shading import shade, sun_vector
from xview_testbed.synth.world import TREE, World

MAX_RANGE_M = 400.0
_TRUNK = np.array([85, 68, 52], np.float32)


@dataclass(frozen=True)
class GroundCamera:
    """A ground camera: ``kind`` "panorama" (360°) or "pinhole" (horizontal ``fov_deg``), size (H, W) px."""

    kind: str
    size: Tuple[int, int]
    fov_deg: float = 360.0
    pitch_deg: float = 0.0
    supersample: int = 2

    def __post_init__(self) -> None:
        if self.kind not in ("panorama", "pinhole"):
            raise ValueError(f"ground camera kind must be 'panorama' or 'pinhole', got {self.kind!r}")
        if len(self.size) != 2 or min(self.size) < 4:
            raise ValueError(f"ground image size must be [height, width] >= 4 px, got {self.size!r}")
        if self.kind == "pinhole" and not 1.0 <= self.fov_deg <= 170.0:
            raise ValueError(f"pinhole horizontal FOV must be within [1, 170] degrees, got {self.fov_deg!r}")
        if self.kind == "panorama" and self.fov_deg != 360.0:
            raise ValueError(f"a panorama covers 360 degrees, got fov_deg={self.fov_deg!r}")

    def intrinsics(self) -> Tuple[float, float, float, float]:
        """(fx, fy, cx, cy) pixels of the pinhole camera."""
        h, w = self.size
        f = (w / 2.0) / math.tan(math.radians(self.fov_deg) / 2.0)
        return f, f, w / 2.0, h / 2.0

    def pixel_angles(self, u: np.ndarray, v: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Continuous pixel (u, v) -> (azimuth relative to the heading, elevation), degrees."""
        h, w = self.size
        if self.kind == "panorama":
            return (np.asarray(u) - w / 2.0) * 360.0 / w, 90.0 - np.asarray(v) * 180.0 / h
        fx, fy, cx, cy = self.intrinsics()
        a, b = (np.asarray(u) - cx) / fx, (np.asarray(v) - cy) / fy
        p = math.radians(self.pitch_deg)
        # ray = forward + a * right - b * up_cam in (level forward, right, up) axes with
        # forward = (cos p, 0, sin p), right = (0, 1, 0), up_cam = (-sin p, 0, cos p)
        x = np.cos(p) + b * np.sin(p)
        y = a * np.ones_like(b)
        z = np.sin(p) - b * np.cos(p)
        return np.degrees(np.arctan2(y, x)), np.degrees(np.arctan2(z, np.hypot(x, y)))


class GroundRenderer:
    """Renders ground views of one world with one style's appearance (precomputed per city)."""

    def __init__(self, world: World, appearance: dict, max_range_m: float = MAX_RANGE_M) -> None:
        self.w = world
        self.app = appearance
        self.max_range_m = float(max_range_m)
        self._samples: dict = {}
        # flattened rasters with one extra cell (index N*N) standing for "outside the city": flat, empty
        self.outside = world.n * world.n
        self.h = np.append(world.height.ravel(), np.float32(0))
        self.caster = np.append(world.caster.ravel(), np.float32(0))
        self.crown_base = np.append(world.crown_base.ravel(), np.float32(0))
        self.cls = np.append(world.cls.ravel(), np.uint8(0))
        self.bid = np.append(world.building.ravel(), 0)
        self.normal = np.append(
            world.normal.reshape(-1, 2).astype(np.float32) / 127.0, np.zeros((1, 2), np.float32), axis=0
        )
        edge = np.concatenate([world.albedo[0], world.albedo[-1], world.albedo[:, 0], world.albedo[:, -1]])
        self.albedo = np.append(world.albedo.reshape(-1, 3), np.median(edge, axis=0)[None].astype(np.uint8), axis=0)
        self.sun = sun_vector(appearance)
        self.horizon = np.asarray(appearance["sky_horizon_rgb"], np.float32)
        self.zenith = np.asarray(appearance["sky_zenith_rgb"], np.float32)
        self.window = np.asarray(appearance["window_rgb"], np.float32)

    def samples(self, angular_step_deg: float) -> np.ndarray:
        """Ray sample distances (metres): a step of half a world pixel near the camera, growing with range
        so that one step stays below ~0.7 of the image's angular pixel size."""
        frac = max(0.004, min(0.03, 0.7 * math.radians(angular_step_deg)))
        key = round(frac, 4)
        if key not in self._samples:
            d, step = [0.4], 0.5 * self.w.res_m
            while d[-1] < self.max_range_m:
                d.append(d[-1] + max(step, key * d[-1]))
            self._samples[key] = np.asarray(d, np.float32)
        return self._samples[key]

    # -- core ---------------------------------------------------------------------------------
    def cast(
        self, east: float, north: float, z: float, az_deg: np.ndarray, el_deg: np.ndarray, angular_step_deg: float = 0.5
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Radiance (R, C, 3) float32 0-255 and range (R, C) metres (inf for sky) of a grid of
        compass azimuths ``az_deg`` (C,) x elevations ``el_deg`` (R,) from ENU (east, north, z) metres;
        ``angular_step_deg`` (the grid's pixel size) sets how finely rays are sampled."""
        w = self.w
        d = self.samples(angular_step_deg)
        n, res = w.n, w.res_m
        az = np.radians(np.asarray(az_deg, np.float64))
        el = np.radians(np.asarray(el_deg, np.float64))
        sx, sy = np.sin(az), np.cos(az)
        cols_n, k_n, rows_n = len(az), len(d), len(el)
        col = np.floor((east / res + n / 2) + (sx / res).astype(np.float32)[:, None] * d).astype(np.int32)
        row = np.floor((n / 2 - north / res) - (sy / res).astype(np.float32)[:, None] * d).astype(np.int32)
        inside = (col >= 0) & (col < n) & (row >= 0) & (row < n)
        flat = np.where(inside, row * n + col, self.outside)
        hgt = self.h[flat]
        base = self.crown_base[flat]
        crown = base > 0
        tan_el = np.tan(el)[:, None]
        with np.errstate(divide="ignore"):
            dg = np.where(tan_el < 0, z / np.maximum(-tan_el, 1e-12), np.inf) * np.ones((1, cols_n))
        ks = self._first_hit(np.where(crown, 0.0, hgt), z, el, d)  # buildings, objects, trunks
        kt = self._first_crown(crown, hgt, base, z, el, d)  # tree crowns (rays may pass beneath)
        ds = d[np.minimum(ks, k_n - 1)]
        obst = (ks < k_n) & (ds <= dg)
        stop = np.where(obst, ds, dg)
        ktc = np.minimum(kt, k_n - 1)
        dt = d[ktc]
        tree = (kt < k_n) & (dt < stop)
        obst &= ~tree
        ground = ~obst & ~tree & np.isfinite(dg) & (dg < MAX_RANGE_M)
        out = np.empty((rows_n, cols_n, 3), np.float32)
        rng_m = np.full((rows_n, cols_n), np.inf, np.float32)

        # sky
        t = np.clip(el / (math.pi / 2), 0, 1)[:, None, None] ** 0.6
        out[:] = (1 - t) * self.horizon + t * self.zenith

        # tree crowns: lit from above, darker toward the underside
        ri, ci = np.nonzero(tree)
        if len(ri):
            k = ktc[ri, ci]
            p = flat[ci, k]
            dist = d[k]
            zh = z + dist * tan_el[ri, 0]
            rel = np.clip((zh - self.crown_base[p]) / np.maximum(self.h[p] - self.crown_base[p], 0.1), 0, 1)
            lit = (self.caster[flat[ci, np.maximum(k - 1, 0)]] <= zh + 0.5).astype(np.float32)
            hx, hy = east + dist * sx[ci], north + dist * sy[ci]
            # foliage clumps: the raster colour varies across the crown, this varies it with height too
            clump = 1 + 0.18 * np.sin(zh * 4.1 + hx * 2.3) * np.sin(zh * 2.7 - hy * 3.1)
            out[ri, ci] = shade(self.albedo[p] * clump[:, None], 0.35 + 0.5 * rel, lit, self.app)
            rng_m[ri, ci] = dist

        # solids (buildings, trunks, objects)
        ri, ci = np.nonzero(obst)
        if len(ri):
            k = np.minimum(ks, k_n - 1)[ri, ci]
            p = flat[ci, k]
            dist = d[k]
            zh = np.clip(z + dist * tan_el[ri, 0], 0.0, self.h[p])
            hx, hy = east + dist * sx[ci], north + dist * sy[ci]
            nrm = self.normal[p]
            b = self.bid[p]
            col_rgb = np.where((self.cls[p] == TREE)[:, None], _TRUNK, self.albedo[p].astype(np.float32))
            fac = w.facade[b]
            is_wall = (b > 0) & (zh <= fac[:, 3] + 0.05)
            along = hx * (-nrm[:, 1]) + hy * nrm[:, 0]
            fz = np.mod(zh / fac[:, 0], 1.0)
            fs = np.mod(along / np.maximum(fac[:, 1], 0.1), 1.0)
            win = is_wall & (fz > 0.3) & (fz < 0.78) & (fs < fac[:, 2]) & (zh < fac[:, 3] - 0.6)
            wall_rgb = np.where(
                win[:, None], 0.75 * self.window + 0.25 * self.horizon, w.facade_rgb[b].astype(np.float32)
            )
            col_rgb = np.where(is_wall[:, None], wall_rgb, col_rgb)
            cos_i = np.where(is_wall, nrm[:, 0] * self.sun[0] + nrm[:, 1] * self.sun[1], 0.5 * self.sun[2] + 0.3)
            prev = flat[ci, np.maximum(k - 1, 0)]
            lit = (self.caster[prev] <= zh + 0.2).astype(np.float32)
            out[ri, ci] = shade(col_rgb, cos_i, lit, self.app)
            rng_m[ri, ci] = dist

        # ground
        ri, ci = np.nonzero(ground)
        if len(ri):
            dist = dg[ri, ci]
            gc = np.floor((east + dist * sx[ci]) / res + n / 2).astype(np.int64)
            gr = np.floor(n / 2 - (north + dist * sy[ci]) / res).astype(np.int64)
            p = np.where((gc >= 0) & (gc < n) & (gr >= 0) & (gr < n), gr * n + gc, self.outside)
            lit = (self.caster[p] <= self.h[p] + 0.2).astype(np.float32)
            out[ri, ci] = shade(self.albedo[p], np.full(len(p), self.sun[2], np.float32), lit, self.app)
            rng_m[ri, ci] = dist

        haze = 1.0 - np.exp(-np.minimum(rng_m, 1e6) / self.app["haze_m"])
        out = out * (1 - haze[..., None]) + self.horizon * haze[..., None]
        return out, rng_m

    @staticmethod
    def _first_crown(
        crown: np.ndarray, top: np.ndarray, base: np.ndarray, z: float, el: np.ndarray, d: np.ndarray
    ) -> np.ndarray:
        """Per (row, column): first crown sample whose vertical extent [base, top] the row's ray passes through
        (K if none). Each crown sample covers the rows between its base and top elevation angles; the
        nearest covering sample wins."""
        cols_n, k_n = crown.shape
        best = np.full((len(el), cols_n), k_n, np.int64)
        cc, kk = np.nonzero(crown)
        if len(cc) == 0:
            return best
        order = np.argsort(el)
        el_sorted = el[order]
        lo = np.searchsorted(el_sorted, np.arctan2(base[cc, kk] - z, d[kk]), side="left")
        hi = np.searchsorted(el_sorted, np.arctan2(top[cc, kk] - z, d[kk]), side="right")
        n_rows = hi - lo
        keep = n_rows > 0
        cc, kk, lo, n_rows = cc[keep], kk[keep], lo[keep], n_rows[keep]
        starts = np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
        rows = np.repeat(lo, n_rows) + np.arange(int(n_rows.sum())) - starts
        np.minimum.at(best, (order[rows], np.repeat(cc, n_rows)), np.repeat(kk, n_rows))
        return best

    @staticmethod
    def _first_hit(heights: np.ndarray, z: float, el: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Per (row, column): index of the first sample whose elevation angle reaches the row's (K if none)."""
        cols_n, k_n = heights.shape
        cm = np.maximum.accumulate(np.arctan2(heights - np.float32(z), d), axis=1)
        off = np.arange(cols_n, dtype=np.float64) * 4.0  # angles span < pi, so columns never interleave
        kk = np.searchsorted((cm + off[:, None]).ravel(), (el[:, None] + off[None, :]).ravel()).reshape(len(el), cols_n)
        return kk - np.arange(cols_n)[None, :] * k_n

    # -- cameras ------------------------------------------------------------------------------
    def render(
        self,
        east: float,
        north: float,
        heading_deg: float,
        camera: GroundCamera,
        height_m: float,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """RGB uint8 image of ``camera`` at ENU (east, north) metres, ``height_m`` above the ground, facing
        compass ``heading_deg``; exposure, white balance and noise of the style applied."""
        img = self.radiance(east, north, heading_deg, camera, height_m)
        img = img * self.app["ground_exposure"] * np.asarray(self.app["ground_white_balance"], np.float32)
        if self.app["ground_noise"] > 0:
            rng = rng or np.random.default_rng(0)
            img = img + rng.normal(0, self.app["ground_noise"], img.shape[:2] + (1,)).astype(np.float32)
        return np.clip(img, 0, 255).astype(np.uint8)

    def radiance(
        self, east: float, north: float, heading_deg: float, camera: GroundCamera, height_m: float
    ) -> np.ndarray:
        """Float radiance (H, W, 3) before the camera's exposure / noise."""
        h, w = camera.size
        ss = max(1, int(camera.supersample))
        if camera.kind == "panorama":
            j = (np.arange(w * ss) + 0.5) / ss
            i = (np.arange(h * ss) + 0.5) / ss
            az_rel, _ = camera.pixel_angles(j, np.zeros_like(j))
            _, el = camera.pixel_angles(np.zeros_like(i), i)
            img, _ = self.cast(east, north, height_m, heading_deg + az_rel, el, angular_step_deg=360.0 / (w * ss))
            return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) if ss > 1 else img
        uu, vv = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        az_rel, el = camera.pixel_angles(uu, vv)
        step = min(camera.fov_deg / w, 2 * math.degrees(math.atan(h / 2 / camera.intrinsics()[1])) / h) / ss
        a0, e0 = az_rel.min() - step, el.min() - step
        ga = a0 + np.arange(int((az_rel.max() - a0) / step) + 3) * step
        ge = e0 + np.arange(int((el.max() - e0) / step) + 3) * step
        grid, _ = self.cast(east, north, height_m, heading_deg + ga, ge, angular_step_deg=step)
        mx = ((az_rel - a0) / step).astype(np.float32)
        my = ((el - e0) / step).astype(np.float32)
        return cv2.remap(grid, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
