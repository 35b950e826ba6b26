# SPDX-License-Identifier: Apache-2.0
"""The model registry: ``build_model(name, **overrides)`` for every architecture and its config rules.

Config keys (plain values): arch, aerial_size (S px), ground_size [H, W] px, ground_type
("panorama"|"pinhole"), fov_deg (horizontal), mpp (aerial metres per pixel), mean/std, known_orientation,
n_ori, levels [[cells_per_side, n_ori], ...] coarse -> fine; ``small`` only: width (channel multiplier 1-3);
``ccvpe-*`` only: padding_mode ("zeros" as CCVPE, "reflect" as Adapting_CVL's adapted CCVPE; a checkpoint
written before the key existed is "zeros"). Every architecture, optional: retrieval_dim (D of the retrieval
head's global descriptors; absent or 0 = no head, and then neither key is stored, so configs of models without a
head are unchanged) and retrieval_pool ("gem" | "spatial"; default "spatial" for known-orientation panoramas,
else "gem").
"""

from __future__ import annotations

from typing import Any, Dict

from xview_loc_ros.models.ccvpe import CCVPE, KITTI_HEAD, VIGOR_HEAD
from xview_loc_ros.models.common import PADDING_MODES, RETRIEVAL_POOLS, CrossViewModel, levels_for
from xview_loc_ros.models.small import SmallCrossView, head_spec

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

ARCHS = ("small", "ccvpe-vigor", "ccvpe-kitti")

DEFAULTS: Dict[str, Dict[str, Any]] = {
    "small": dict(
        aerial_size=128,
        ground_size=[64, 256],
        ground_type="panorama",
        fov_deg=360.0,
        mpp=0.5,
        known_orientation=True,
        n_ori=16,
        width=1,
    ),
    # VIGOR: 640 px aerial at ~0.11 m/px resized to 512 -> ~0.14 m/px
    "ccvpe-vigor": dict(
        aerial_size=512,
        ground_size=[320, 640],
        ground_type="panorama",
        fov_deg=360.0,
        mpp=0.14,
        known_orientation=True,
        n_ori=20,
        padding_mode="zeros",
    ),
    "ccvpe-kitti": dict(
        aerial_size=512,
        ground_size=[256, 1024],
        ground_type="pinhole",
        fov_deg=81.4,
        mpp=0.19583,
        known_orientation=False,
        n_ori=16,
        padding_mode="zeros",
    ),
}
_DERIVED = ("levels", "arch", "mean", "std")
RETRIEVAL_KEYS = ("retrieval_dim", "retrieval_pool")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def build_model(name: str, **overrides: Any) -> CrossViewModel:
    """Build an untrained model. ``overrides`` may set any config key; derived keys (levels) given
    in ``overrides`` must equal what the architecture implies (so a checkpoint config round-trips)."""
    if name not in DEFAULTS:
        raise ValueError(f"unknown model config {name!r}; expected one of {ARCHS}")
    cfg: Dict[str, Any] = dict(DEFAULTS[name], arch=name, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    unknown = set(overrides) - set(cfg) - set(_DERIVED) - set(RETRIEVAL_KEYS)
    _check(not unknown, f"{name}: unknown config keys {sorted(unknown)}")
    retrieval_dim = overrides.pop("retrieval_dim", 0)
    retrieval_pool = overrides.pop("retrieval_pool", None)
    _check(
        isinstance(retrieval_dim, int) and not isinstance(retrieval_dim, bool) and 0 <= retrieval_dim <= 4096,
        f"{name}: retrieval_dim must be an integer 0..4096 (0 = no retrieval head), got {retrieval_dim!r}",
    )
    given_levels = overrides.pop("levels", None)
    _check(overrides.pop("arch", name) == name, f"config arch {cfg['arch']!r} does not match {name!r}")
    cfg.update(overrides)
    cfg["ground_size"] = [int(x) for x in cfg["ground_size"]]
    cfg["aerial_size"] = int(cfg["aerial_size"])
    cfg["fov_deg"], cfg["mpp"] = float(cfg["fov_deg"]), float(cfg["mpp"])
    cfg["known_orientation"] = bool(cfg["known_orientation"])
    _check(
        cfg["ground_type"] in ("panorama", "pinhole"),
        f"{name}: ground_type must be panorama or pinhole, got {cfg['ground_type']!r}",
    )
    _check(
        cfg["ground_type"] != "panorama" or cfg["fov_deg"] == 360.0,
        f"{name}: a panorama has fov_deg 360, got {cfg['fov_deg']}",
    )
    _check(cfg["mpp"] > 0, f"{name}: mpp must be > 0, got {cfg['mpp']}")
    if name == "small":
        model = _build_small(cfg)
    else:
        model = _build_ccvpe(name, cfg)
    if given_levels is not None and [list(map(int, x)) for x in given_levels] != cfg["levels"]:
        raise ValueError(f"{name}: config levels {given_levels} do not match the architecture's {cfg['levels']}")
    if retrieval_dim:
        if retrieval_pool is None:
            pano = cfg["ground_type"] == "panorama" and cfg["known_orientation"]
            retrieval_pool = "spatial" if pano else "gem"
        _check(
            retrieval_pool in RETRIEVAL_POOLS,
            f"{name}: retrieval_pool must be one of {RETRIEVAL_POOLS}, got {retrieval_pool!r}",
        )
        cfg["retrieval_dim"], cfg["retrieval_pool"] = int(retrieval_dim), str(retrieval_pool)
        model.add_retrieval_head(int(retrieval_dim), str(retrieval_pool))
    else:
        _check(retrieval_pool is None, f"{name}: retrieval_pool given without a retrieval_dim > 0")
    return model


def _build_small(cfg: Dict[str, Any]) -> CrossViewModel:
    s = cfg["aerial_size"]
    h, w = cfg["ground_size"]
    _check(s % 64 == 0 and s >= 64, f"small: aerial_size must be a multiple of 64 px, got {s}")
    _check(h % 16 == 0 and w % 16 == 0, f"small: ground_size must be multiples of 16 px, got {cfg['ground_size']}")
    pano = cfg["ground_type"] == "panorama"
    if cfg["known_orientation"] and not pano:
        # a north-up patch cannot be matched against a pinhole view without rotating one of them;
        # pinhole models predict orientation, and a known heading is used as a prior when decoding.
        raise ValueError(
            "small: known_orientation is supported for panoramas only; use known_orientation=False for pinhole"
        )
    n_ori = 1 if cfg["known_orientation"] else int(cfg["n_ori"])
    _check(n_ori == 1 or 16 % n_ori == 0, f"small: n_ori must divide 16, got {n_ori}")
    cfg["n_ori"] = n_ori
    cfg["levels"] = levels_for(s, s // 32, 5, n_ori)
    width = cfg["width"] = int(cfg["width"])
    _check(width in (1, 2, 3), f"small: width must be 1, 2 or 3, got {width}")
    spec = head_spec(w // 16, h // 16, n_ori, orientation=not cfg["known_orientation"], width=width)
    return SmallCrossView(cfg, spec, circular=pano)


def _build_ccvpe(name: str, cfg: Dict[str, Any]) -> CrossViewModel:
    base = DEFAULTS[name]
    for key in ("aerial_size", "ground_size", "ground_type", "n_ori"):
        _check(cfg[key] == base[key], f"{name}: {key} is fixed by the architecture at {base[key]!r}, got {cfg[key]!r}")
    _check(
        cfg["padding_mode"] in PADDING_MODES,
        f"{name}: padding_mode must be one of {PADDING_MODES}, got {cfg['padding_mode']!r}",
    )
    head = VIGOR_HEAD if name == "ccvpe-vigor" else KITTI_HEAD
    cfg["levels"] = levels_for(512, 8, 6, head.n_ori)
    return CCVPE(cfg, head, circular=cfg["ground_type"] == "panorama" and cfg["fov_deg"] == 360.0)
