# SPDX-License-Identifier: Apache-2.0
"""Checkpoint files: ``{"config": {...plain values}, "state_dict": ..., **extras}`` readable with
``torch.load(weights_only=True)``, written atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional, Tuple

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
            "import a released state_dict with --init ccvpe-official:PATH or adapting-cvl:PATH)"
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


@dataclass(frozen=True)
class ReleasedSource:
    """Where a released state_dict comes from: ``prefix`` (``--init PREFIX:PATH``), a human ``label``,
    the architectures it was released for, and the config its network needs (e.g. its padding)."""

    prefix: str
    label: str
    archs: Tuple[str, ...]
    config: Dict[str, Any] = field(default_factory=dict)


RELEASED_SOURCES: Dict[str, ReleasedSource] = {
    s.prefix: s
    for s in (
        # tudelft-iv/CCVPE: CVM_VIGOR / CVM_KITTI, plain state_dicts, zero padding
        ReleasedSource("ccvpe-official", "CCVPE", ("ccvpe-vigor", "ccvpe-kitti"), {"padding_mode": "zeros"}),
        # tudelft-iv/Adapting_CVL (ECCV 2024): their CVM_VIGOR, same parameter names as CCVPE's, reflect
        # padding in the aerial EfficientNet and the decoder; the repository defines no KITTI network
        ReleasedSource("adapting-cvl", "Adapting_CVL", ("ccvpe-vigor",), {"padding_mode": "reflect"}),
    )
}


def _name_some(items: Iterable[str], n: int = 3) -> str:
    keys = sorted(items)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def import_released(path: str | os.PathLike, arch: str, source: str, **overrides: Any) -> Any:
    """A released state_dict of ``source`` (a key of RELEASED_SOURCES) loaded strictly into our ``arch``
    network built with the source's config; ``module.`` prefixes (DataParallel) are dropped."""
    import torch

    src = RELEASED_SOURCES.get(source)
    if src is None:
        raise ValueError(f"unknown checkpoint source {source!r}; expected one of {sorted(RELEASED_SOURCES)}")
    if arch not in src.archs:
        raise CheckpointError(f"{path}: {src.label} released no {arch} network (only {', '.join(src.archs)})")
    clash = {k: v for k, v in overrides.items() if k in src.config and v != src.config[k]}
    if clash:
        raise CheckpointError(f"{path}: {src.label} networks need {src.config}, not {clash}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable {src.label} state_dict ({type(e).__name__}: {e})") from e
    if isinstance(sd, dict) and "state_dict" in sd and "config" in sd:
        raise CheckpointError(f"{path}: already an xview_loc_ros checkpoint; use --init PATH instead")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: not a state_dict (expected {src.label}'s dict of parameter tensors)")
    sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}
    model = build_model(arch, **{**overrides, **src.config})
    ours = model.state_dict()
    problems = []
    missing, unexpected = set(ours) - set(sd), set(sd) - set(ours)
    if missing:
        problems.append(f"{len(missing)} missing keys: {_name_some(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_name_some(unexpected)}")
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in ours.items() if k in sd and sd[k].shape != v.shape
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (file vs {arch}): {_name_some(shapes)}")
    if problems:
        raise CheckpointError(f"{path}: does not match {arch} ({src.label} state_dict; {'; '.join(problems)})")
    model.load_state_dict(sd, strict=True)
    return model


def import_ccvpe_official(path: str | os.PathLike, arch: str, **overrides: Any) -> Any:
    """A released CCVPE checkpoint (plain state_dict of CVM_VIGOR / CVM_KITTI) loaded into our model."""
    return import_released(path, arch, "ccvpe-official", **overrides)


def import_adapting_cvl(path: str | os.PathLike, arch: str, **overrides: Any) -> Any:
    """A released Adapting_CVL checkpoint (plain state_dict of their CVM_VIGOR: teacher, auxiliary or
    final student) loaded into our model with ``padding_mode="reflect"``."""
    return import_released(path, arch, "adapting-cvl", **overrides)


def split_released_init(init: str) -> Optional[Tuple[str, str]]:
    """``(source, path)`` for ``init`` of the form ``SOURCE:PATH`` with a known source, else None."""
    source, sep, path = init.partition(":")
    return (source, path) if sep and source in RELEASED_SOURCES else None
