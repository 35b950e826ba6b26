# SPDX-License-Identifier: Apache-2.0
"""`open_backend`: one entry point that picks and opens the right backend for a model file."""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from xview_loc_ros.inference.base import Backend, ModelFileError
from xview_loc_ros.inference.modelfile import model_kind, require_file
from xview_loc_ros.inference.ort_backend import OrtBackend
from xview_loc_ros.inference.torch_backend import TorchBackend
from xview_loc_ros.inference.trt_backend import check_version, open_tensorrt

log = logging.getLogger(__name__)
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
# which model files each backend can run
_RUNS = {"torch": ("checkpoint",), "onnxruntime": ("onnx",), "tensorrt": ("onnx", "engine")}


def _importable(module: str) -> Optional[str]:
    try:
        importlib.import_module(module)
    except Exception as e:  # a broken install raises more than ImportError
        return f"`import {module}` failed ({type(e).__name__}: {e})"
    return None


def backend_availability() -> Dict[str, Optional[str]]:
    """{backend: None if usable here, else why not}. TensorRT also needs a CUDA GPU (its buffers
    are torch CUDA tensors)."""
    avail: Dict[str, Optional[str]] = {"torch": _importable("torch"), "onnxruntime": _importable("onnxruntime")}
    trt = _importable("tensorrt")
    if trt is None:
        trt = _supported_tensorrt()
    if trt is None:
        if avail["torch"] is not None:
            trt = "TensorRT needs torch for its CUDA buffers, and torch does not import"
        else:
            import torch

            trt = None if torch.cuda.is_available() else "no CUDA GPU visible to torch"
    avail["tensorrt"] = trt
    return avail


def _supported_tensorrt() -> Optional[str]:
    """None when the importable tensorrt is a supported version, else why not."""
    import tensorrt

    try:
        check_version(str(getattr(tensorrt, "__version__", "?")))
    except RuntimeError as e:
        return str(e)
    return None


@dataclass(frozen=True)
class Choice:
    backend: str
    reason: str


def choose_backend(model_path: str | os.PathLike, requested: str, availability: Mapping[str, Optional[str]]) -> Choice:
    """Pure decision: which backend runs ``model_path`` given what is usable (see
    :func:`backend_availability`). ``auto``: TensorRT if usable (engine or ONNX), else ONNX
    Runtime (ONNX), else torch (checkpoint). Raises ValueError when nothing fits."""
    if requested not in BACKENDS:
        raise ValueError(f"backend {requested!r}: expected one of {BACKENDS}")
    kind = model_kind(model_path)
    if requested != "auto":
        if kind not in _RUNS[requested]:
            raise ValueError(
                f"{model_path}: backend {requested} cannot run a {kind} file "
                f"(it runs {', '.join(_RUNS[requested])}); export a checkpoint with `xview-adapt export`"
            )
        if availability.get(requested) is not None:
            raise ValueError(f"backend {requested} is not usable here: {availability[requested]}")
        return Choice(requested, "asked for explicitly")
    skipped: List[str] = []
    for name in ("tensorrt", "onnxruntime", "torch"):
        if kind not in _RUNS[name]:
            continue
        why_not = availability.get(name)
        if why_not is None:
            note = f" ({'; '.join(skipped)})" if skipped else ""
            return Choice(name, f"auto: {name} is usable for a {kind} file{note}")
        skipped.append(f"{name} skipped: {why_not}")
    raise ValueError(f"{model_path}: no usable backend for a {kind} file: {'; '.join(skipped)}")


def open_backend(
    model_path: str | os.PathLike,
    backend: str = "auto",
    device: Optional[str] = None,
    fp16: bool = False,
    threads: Optional[int] = None,
    cuda_graphs: bool = False,
    max_batch: int = 1,
    cache_dir: Optional[str | os.PathLike] = None,
    availability: Optional[Mapping[str, Optional[str]]] = None,
) -> Backend:
    """Open ``model_path`` (.pt checkpoint, .onnx, .plan/.engine) on ``backend``.

    ``device``: None (best available), "cpu", "cuda", "cuda:N". ``fp16``: torch autocast / TensorRT
    FP16 build. ``threads``: CPU intra-op threads (torch, ONNX Runtime). ``cuda_graphs``: torch only.
    ``max_batch``/``cache_dir``: TensorRT engines built from an ONNX. ``availability`` overrides
    :func:`backend_availability` (tests, or to forbid a backend).

    With ``auto``, an ONNX file whose TensorRT start fails (an import that breaks late, a driver
    older than TensorRT's CUDA runtime, an unsupported version or precision, a failed build) runs
    on ONNX Runtime instead; the warning log and the backend's ``fallback_reason`` say why.
    """
    path = require_file(model_path)
    avail = backend_availability() if availability is None else availability
    choice = choose_backend(path, backend, avail)
    if cuda_graphs and choice.backend != "torch":
        raise ValueError(f"cuda_graphs applies to the torch backend only, not {choice.backend}")
    log.info("inference backend %s for %s: %s", choice.backend, path.name, choice.reason)
    if choice.backend == "torch":
        return TorchBackend.from_checkpoint(path, device=device, fp16=fp16, cuda_graphs=cuda_graphs, threads=threads)
    if choice.backend == "onnxruntime":
        return OrtBackend(path, device=device, fp16=fp16, threads=threads)
    try:
        return open_tensorrt(path, device=device, fp16=fp16, max_batch=max_batch, cache_dir=cache_dir)
    except Exception as e:  # anything TensorRT raises while starting; only `auto` on an ONNX may fall back
        if backend != "auto" or model_kind(path) != "onnx" or avail.get("onnxruntime") is not None:
            raise
        why = f"{type(e).__name__}: {e}"
    log.warning("inference backend: TensorRT could not start for %s (%s); falling back to onnxruntime", path.name, why)
    fallback = _ort_fallback(path, device, threads, why)
    fallback.fallback_reason = f"tensorrt could not start: {why}"
    return fallback


def _ort_fallback(path: Path, device: Optional[str], threads: Optional[int], why: str) -> Backend:
    """ONNX Runtime in place of a TensorRT that did not start: FP32 (FP16 is a TensorRT build option
    and ONNX Runtime's own FP16 needs its TensorRT provider, which shares TensorRT's fault), on the
    requested device where this onnxruntime has a GPU provider, else on its default providers."""
    try:
        try:
            return OrtBackend(path, device=device, threads=threads)
        except ValueError as e:  # a CPU-only onnxruntime asked for a GPU: run anyway, and say so
            if isinstance(e, ModelFileError) or device is None or device == "cpu":
                raise
            log.warning("onnxruntime fallback on its default providers instead of %s: %s", device, e)
            return OrtBackend(path, device=None, threads=threads)
    except Exception as e:
        raise RuntimeError(f"{path}: TensorRT could not start ({why}), and neither could onnxruntime ({e})") from e


__all__ = ["BACKENDS", "Choice", "ModelFileError", "backend_availability", "choose_backend", "open_backend"]
