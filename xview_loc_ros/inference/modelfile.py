# SPDX-License-Identifier: Apache-2.0
"""Model files and the config that travels with them.

An exported ONNX file carries the checkpoint config twice: as ONNX ``metadata_props`` (key
``xview_loc_config``, JSON) and in a sidecar ``OUT.onnx.json``; a TensorRT engine cannot hold
metadata, so its sidecar ``OUT.plan.json`` carries the config and the engine's cache key. The
runtime takes sizes, m/px and normalisation from there and never guesses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Literal, Optional, overload

from xview_loc_ros.fsutil import atomic_write_json
from xview_loc_ros.inference.base import ModelFileError, check_config

CONFIG_METADATA_KEY = "xview_loc_config"
SIDECAR_FORMAT = "xview_loc_ros.model/1"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".plan", ".engine")


def model_kind(path: str | os.PathLike) -> str:
    """ "checkpoint", "onnx" or "engine" from the file suffix; ValueError for anything else."""
    suffix = Path(path).suffix.lower()
    for kind, suffixes in (("checkpoint", CHECKPOINT_SUFFIXES), ("onnx", ONNX_SUFFIXES), ("engine", ENGINE_SUFFIXES)):
        if suffix in suffixes:
            return kind
    raise ModelFileError(
        f"{path}: unknown model file type {suffix!r}; expected a checkpoint "
        f"{CHECKPOINT_SUFFIXES}, an ONNX file {ONNX_SUFFIXES} or a TensorRT engine {ENGINE_SUFFIXES}"
    )


def require_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    return path


def sidecar_path(path: str | os.PathLike) -> Path:
    """``OUT.onnx`` -> ``OUT.onnx.json`` (the suffix is kept so an ONNX and an engine of the same
    stem never share a sidecar)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(model_path: str | os.PathLike, config: Dict[str, Any], **extra: Any) -> Path:
    """Write ``model_path``'s sidecar atomically: {"format", "config", **extra}."""
    out = sidecar_path(model_path)
    atomic_write_json(out, {"format": SIDECAR_FORMAT, "config": dict(config), **extra})
    return out


@overload
def read_sidecar(model_path: str | os.PathLike, required: Literal[True] = True) -> Dict[str, Any]: ...


@overload
def read_sidecar(model_path: str | os.PathLike, required: bool) -> Optional[Dict[str, Any]]: ...


def read_sidecar(model_path: str | os.PathLike, required: bool = True) -> Optional[Dict[str, Any]]:
    """The sidecar dict with a checked ``config``; None when absent and not ``required``."""
    path = sidecar_path(model_path)
    if not path.is_file():
        if required:
            raise ModelFileError(
                f"{model_path}: its config sidecar {path.name} is missing (written by `xview-adapt export`)"
            )
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: unreadable config sidecar ({e})") from e
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise ModelFileError(f"{path}: not an xview_loc_ros model sidecar (format {SIDECAR_FORMAT!r} expected)")
    data["config"] = check_config(data.get("config"), str(path))
    return data


def config_from_metadata(metadata: Dict[str, str], source: str) -> Optional[Dict[str, Any]]:
    """The config embedded in ONNX metadata props (as a str->str map), or None when absent."""
    raw = metadata.get(CONFIG_METADATA_KEY)
    if raw is None:
        return None
    try:
        return check_config(json.loads(raw), source)
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{source}: metadata {CONFIG_METADATA_KEY!r} is not valid JSON ({e})") from e


def resolve_onnx_config(onnx_path: str | os.PathLike, metadata: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Config of an ONNX file: embedded metadata and sidecar must agree where both exist; one of
    them must exist. ``metadata`` avoids re-reading the file when a session already has it."""
    onnx_path = require_file(onnx_path)
    if metadata is None:
        metadata = read_onnx_metadata(onnx_path)
    embedded = config_from_metadata(metadata, str(onnx_path))
    side = read_sidecar(onnx_path, required=False)
    side_cfg = side["config"] if side else None
    if embedded is not None and side_cfg is not None and embedded != side_cfg:
        diff = sorted(k for k in set(embedded) | set(side_cfg) if embedded.get(k) != side_cfg.get(k))
        raise ModelFileError(
            f"{onnx_path}: embedded config and sidecar {sidecar_path(onnx_path).name} disagree on {diff}"
        )
    cfg = embedded if embedded is not None else side_cfg
    if cfg is None:
        raise ModelFileError(
            f"{onnx_path}: carries no preprocessing config (no {CONFIG_METADATA_KEY!r} metadata, "
            f"no {sidecar_path(onnx_path).name}); export it with `xview-adapt export`"
        )
    return cfg


def read_onnx_metadata(onnx_path: str | os.PathLike) -> Dict[str, str]:
    """metadata_props of an ONNX file, without loading external weight data."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and others for a corrupt file
        raise ModelFileError(f"{onnx_path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    return {p.key: p.value for p in model.metadata_props}
