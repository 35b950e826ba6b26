# SPDX-License-Identifier: Apache-2.0
"""ONNX Runtime backend: providers TensorRT EP, CUDA EP, CPU in that order, whichever exist."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from xview_loc_ros.inference.base import (
    INPUT_AERIAL,
    INPUT_GROUND,
    OUTPUT_FINEST,
    Backend,
    ModelFileError,
    input_shapes,
)
from xview_loc_ros.inference.engine_cache import default_cache_dir
from xview_loc_ros.inference.modelfile import require_file, resolve_onnx_config

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = PROVIDER_PREFERENCE[:2]
Provider = Union[str, Tuple[str, Dict[str, Any]]]


def choose_providers(
    available: Sequence[str], device: Optional[str] = None, fp16: bool = False, trt_cache_dir: Optional[str] = None
) -> List[Provider]:
    """Providers to ask ONNX Runtime for, best first, from those ``available`` lists.

    ``device``: None = any, "cpu" = CPU only, "cuda"/"cuda:N" = GPU providers on device N (CPU
    stays last as ORT's fallback for unsupported nodes). ``fp16`` enables FP16 in the TensorRT EP.
    """
    if device is not None and device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device {device!r}: expected cpu, cuda or cuda:N")
    dev_id = int(device.split(":", 1)[1]) if device and ":" in device else 0
    wanted = [p for p in PROVIDER_PREFERENCE if p in available]
    if device == "cpu":
        wanted = [p for p in wanted if p not in GPU_PROVIDERS]
    elif device is not None and not any(p in GPU_PROVIDERS for p in wanted):
        raise ValueError(
            f"device {device!r}: this onnxruntime has no GPU provider (has {list(available)}); install onnxruntime-gpu"
        )
    out: List[Provider] = []
    for p in wanted:
        if p == "TensorrtExecutionProvider":
            opts: Dict[str, Any] = {"device_id": dev_id, "trt_fp16_enable": bool(fp16)}
            if trt_cache_dir:
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache_dir))
            out.append((p, opts))
        elif p == "CUDAExecutionProvider":
            out.append((p, {"device_id": dev_id}))
        else:
            out.append(p)
    if not out:
        raise ValueError(f"onnxruntime offers none of {PROVIDER_PREFERENCE} (has {list(available)})")
    return out


def session_options(threads: Optional[int] = None) -> Any:
    """SessionOptions with all graph optimisations; ``threads`` sets intra-op threads (None = ORT default)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    return so


class OrtBackend(Backend):
    """An exported ONNX file run by ONNX Runtime; the config comes from its metadata/sidecar.
    ``trt_cache_dir``: where the TensorRT EP (if present) caches engines (default: the engine cache)."""

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        device: Optional[str] = None,
        fp16: bool = False,
        threads: Optional[int] = None,
        trt_cache_dir: Optional[str] = None,
    ) -> None:
        import onnxruntime as ort

        onnx_path = require_file(onnx_path)
        if trt_cache_dir is None:  # without a cache the TensorRT EP rebuilds its engines at every start
            trt_cache_dir = str(default_cache_dir() / "onnxruntime-trt")
        providers = choose_providers(ort.get_available_providers(), device, fp16, trt_cache_dir)
        if fp16 and not any(isinstance(p, tuple) and p[0] == "TensorrtExecutionProvider" for p in providers):
            raise ValueError(
                "fp16 with onnxruntime needs its TensorRT execution provider (the CPU and CUDA providers "
                "run the fp32 graph as exported); use fp32 or the tensorrt backend"
            )
        try:
            self.session = ort.InferenceSession(
                str(onnx_path), sess_options=session_options(threads), providers=providers
            )
        except Exception as e:  # ORT raises its own Fail/InvalidProtobuf/... types for bad files
            raise ModelFileError(
                f"{onnx_path}: ONNX Runtime cannot load it ({type(e).__name__}: {str(e).strip()[:300]})"
            ) from e
        config = resolve_onnx_config(onnx_path, self.session.get_modelmeta().custom_metadata_map)
        self._check_io(onnx_path, config)
        self.threads = threads
        self.fp16 = fp16
        super().__init__(config, onnx_path, [o.name for o in self.session.get_outputs()])

    def _check_io(self, onnx_path: Path, config: Dict[str, Any]) -> None:
        """The graph's inputs must be the config's shapes (batch may be symbolic)."""
        exp = dict(zip((INPUT_GROUND, INPUT_AERIAL), input_shapes(config)))
        got = {i.name: i.shape for i in self.session.get_inputs()}
        if set(got) != set(exp):
            raise ModelFileError(f"{onnx_path}: inputs {sorted(got)}, expected {sorted(exp)}")
        for name, shape in got.items():
            if [int(d) if isinstance(d, int) else None for d in shape[1:]] != list(exp[name]):
                raise ModelFileError(
                    f"{onnx_path}: input {name} has shape {shape} but its config says (B,{','.join(map(str, exp[name]))})"
                )
        if self.session.get_outputs()[0].name != OUTPUT_FINEST:
            raise ModelFileError(
                f"{onnx_path}: first output must be {OUTPUT_FINEST!r}, got {self.session.get_outputs()[0].name!r}"
            )

    def _run(self, ground: np.ndarray, aerial: np.ndarray, names: Sequence[str]) -> Dict[str, np.ndarray]:
        res = self.session.run(list(names), {INPUT_GROUND: ground, INPUT_AERIAL: aerial})
        return {n: np.asarray(r, dtype=np.float32) for n, r in zip(names, res)}

    def describe(self) -> str:
        import onnxruntime as ort

        prov = self.session.get_providers()
        threads = f", {self.threads} intra-op threads" if self.threads else ""
        return (
            f"onnxruntime {ort.__version__} providers {prov}{threads}"
            f"{', fp16 (TensorRT EP)' if self.fp16 else ''}; {self.model_path.name}; {self._sizes()}"
        )
