# SPDX-License-Identifier: Apache-2.0
"""Checkpoint files: ``{"config": {...plain values}, "state_dict": ..., **extras}`` readable with
``torch.load(weights_only=True)``, written atomically."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from xview_loc_ros.fsutil import atomic_path
from xview_loc_ros.models.registry import build_model


class CheckpointError(ValueError):
    """A checkpoint file is missing, not ours, or does not fit the requested model."""


def save_checkpoint(path: str | os.PathLike, model: Any, **extra: Any) -> None:
    """Write ``model`` (a CrossViewModel, or a DDP wrapper of one) and plain ``extra`` values."""
    import torch

    net = getattr(model, "module", model)
    ckpt = {"config": dict(net.config), "state_dict": net.state_dict(), **extra}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """The raw checkpoint dict; a clear error for a missing file or a foreign format."""
    import torch

    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several unrelated types for corrupt/foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path}: not an xview_loc_ros checkpoint (needs 'config' and 'state_dict'; "
            "import a released CCVPE state_dict with --init ccvpe-official:PATH)"
        )
    return ckpt


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", expect_config: Optional[Dict[str, Any]] = None
) -> Tuple[Any, Dict[str, Any]]:
    """Build the model the checkpoint describes and load its weights strictly.

    With ``expect_config`` every key given there must equal the checkpoint's value (refuses e.g.
    resuming a run with a checkpoint of another architecture or input size).
    """
    ckpt = read_checkpoint(path, map_location)
    cfg = dict(ckpt["config"])
    if expect_config is not None:
        diff = {k: (cfg.get(k), v) for k, v in expect_config.items() if cfg.get(k) != v}
        if diff:
            items = ", ".join(f"{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in sorted(diff.items()))
            raise CheckpointError(f"{path}: checkpoint config differs from the requested one ({items})")
    try:
        model = build_model(cfg.pop("arch"), **cfg)
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: weights do not fit the config ({e})") from e
    return model, ckpt


def import_ccvpe_official(path: str | os.PathLike, arch: str, **overrides: Any) -> Any:
    """A released CCVPE checkpoint (plain state_dict of CVM_VIGOR / CVM_KITTI) loaded into our model."""
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable CCVPE state_dict ({type(e).__name__}: {e})") from e
    if isinstance(sd, dict) and "state_dict" in sd and "config" in sd:
        raise CheckpointError(f"{path}: already an xview_loc_ros checkpoint; use --init PATH instead")
    sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}
    model = build_model(arch, **overrides)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: does not match {arch} ({str(e).splitlines()[0]} ...)") from e
    return model
