# SPDX-License-Identifier: Apache-2.0
"""The one inference interface shared by the torch, ONNX Runtime and TensorRT backends.

Every backend takes normalised NCHW float32 arrays (``ground`` (B,3,H,W), ``aerial`` (B,3,S,S), as
made by :mod:`xview_loc_ros.preprocess`) and returns heat-map logits as float32 numpy arrays. Output
names are shared with the ONNX export so that all backends agree: ``heatmap`` is the finest level
(B,1,S,S) in aerial-patch pixels; ``heatmap_level{i}`` are the coarser levels, coarse first;
``orientation`` (B,2,S,S) unit (cos, sin) exists only for models that predict it. Models with a
retrieval head (config ``retrieval_dim`` > 0, :func:`has_retrieval`) add ``ground_descriptor`` and
``aerial_descriptor`` (B,D), L2-normalised rows, last in that order; each depends on its own input only.
"""

from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

INPUT_GROUND = "ground"
INPUT_AERIAL = "aerial"
OUTPUT_FINEST = "heatmap"
OUTPUT_ORIENTATION = "orientation"
OUTPUT_GROUND_DESCRIPTOR = "ground_descriptor"
OUTPUT_AERIAL_DESCRIPTOR = "aerial_descriptor"
RETRIEVAL_OUTPUTS = (OUTPUT_GROUND_DESCRIPTOR, OUTPUT_AERIAL_DESCRIPTOR)
REQUIRED_CONFIG_KEYS = (
    "arch",
    "aerial_size",
    "ground_size",
    "ground_type",
    "fov_deg",
    "mpp",
    "mean",
    "std",
    "known_orientation",
    "levels",
)


class ModelFileError(ValueError):
    """A model file (checkpoint, ONNX, engine, sidecar) is missing, corrupt or does not fit this machine."""


class InputShapeError(ValueError):
    """Inputs handed to a backend disagree with the model's configuration."""


def level_output_name(index: int) -> str:
    """Output name of coarse level ``index`` (0 = coarsest); the finest level is ``heatmap``."""
    return f"heatmap_level{index}"


def has_retrieval(config: Mapping[str, Any]) -> bool:
    """Whether a model with this config has the retrieval head (``retrieval_dim`` > 0)."""
    return int(config.get("retrieval_dim") or 0) > 0


def output_names(config: Mapping[str, Any], orientation: bool) -> List[str]:
    """All output names a model with this config produces, in export order (finest first; then
    orientation, then the retrieval descriptors when the config has a retrieval head)."""
    names = [OUTPUT_FINEST] + [level_output_name(i) for i in range(len(config["levels"]) - 1)]
    if orientation:
        names.append(OUTPUT_ORIENTATION)
    if has_retrieval(config):
        names.extend(RETRIEVAL_OUTPUTS)
    return names


def check_config(config: Any, source: str) -> Dict[str, Any]:
    """Return ``config`` as a dict after checking it has every preprocessing key; ``source`` names
    the file it came from, for the error message."""
    if not isinstance(config, Mapping):
        raise ModelFileError(f"{source}: model config must be a JSON object, got {type(config).__name__}")
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise ModelFileError(f"{source}: model config lacks {missing}")
    return dict(config)


def input_shapes(config: Mapping[str, Any]) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    """Per-sample input shapes (C,H,W) for ground and aerial, from the config (pixels)."""
    h, w = (int(x) for x in config["ground_size"])
    s = int(config["aerial_size"])
    return (3, h, w), (3, s, s)


def check_inputs(
    ground: Any, aerial: Any, config: Mapping[str, Any], max_batch: Optional[int] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Validate and return C-contiguous float32 copies-if-needed of the two input batches.

    Raises InputShapeError naming the input, the expected and the received shape.
    """
    exp_g, exp_a = input_shapes(config)
    arrays = []
    for name, x, exp in ((INPUT_GROUND, ground, exp_g), (INPUT_AERIAL, aerial, exp_a)):
        if not isinstance(x, np.ndarray):
            raise InputShapeError(
                f"{name}: expected a numpy array (B,{exp[0]},{exp[1]},{exp[2]}), got {type(x).__name__}"
            )
        if x.ndim != 4 or tuple(x.shape[1:]) != exp:
            raise InputShapeError(
                f"{name}: model {config.get('arch', '?')} expects shape (B,{exp[0]},{exp[1]},{exp[2]}) "
                f"(normalised NCHW), got {tuple(x.shape)}"
            )
        if not np.issubdtype(x.dtype, np.floating):
            raise InputShapeError(
                f"{name}: expected normalised float32 values, got dtype {x.dtype} "
                "(use xview_loc_ros.preprocess to prepare images)"
            )
        arrays.append(np.ascontiguousarray(x, dtype=np.float32))
    g, a = arrays
    if g.shape[0] != a.shape[0] or g.shape[0] == 0:
        raise InputShapeError(
            f"batch sizes: ground has {g.shape[0]}, aerial has {a.shape[0]}; they must be equal and > 0"
        )
    if max_batch is not None and g.shape[0] > max_batch:
        raise InputShapeError(f"batch size {g.shape[0]} exceeds this backend's maximum of {max_batch}")
    return g, a


class Backend(abc.ABC):
    """A loaded model ready to run. Subclasses implement :meth:`_run`."""

    name: str = "?"
    # set when `open_backend(backend="auto")` fell back to this backend: why the preferred one failed
    fallback_reason: Optional[str] = None

    def __init__(
        self, config: Mapping[str, Any], model_path: Path, outputs: Sequence[str], max_batch: Optional[int] = None
    ) -> None:
        self.config: Dict[str, Any] = check_config(config, str(model_path))
        self.model_path = Path(model_path)
        self.outputs: List[str] = list(outputs)
        self.max_batch = max_batch

    @abc.abstractmethod
    def _run(self, ground: np.ndarray, aerial: np.ndarray, names: Sequence[str]) -> Dict[str, np.ndarray]:
        """Run on checked inputs; return float32 arrays for (at least) ``names``."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line: backend, device, precision, model file and input sizes."""

    def infer_outputs(
        self, ground: np.ndarray, aerial: np.ndarray, names: Optional[Sequence[str]] = None
    ) -> Dict[str, np.ndarray]:
        """Named outputs (default: all the model has)."""
        names = list(self.outputs if names is None else names)
        unknown = [n for n in names if n not in self.outputs]
        if unknown:
            raise ValueError(f"{self.model_path}: has no output(s) {unknown}; it has {self.outputs}")
        g, a = check_inputs(ground, aerial, self.config, self.max_batch)
        out = self._run(g, a, names)
        return {n: out[n] for n in names}

    def infer(self, ground: np.ndarray, aerial: np.ndarray) -> np.ndarray:
        """Finest-level logits, float32 (B,1,S,S), over aerial-patch pixels."""
        return self.infer_outputs(ground, aerial, [OUTPUT_FINEST])[OUTPUT_FINEST]

    def infer_levels(self, ground: np.ndarray, aerial: np.ndarray) -> List[np.ndarray]:
        """All levels' logits (B, n_ori, h, w), coarse -> fine (the last is :meth:`infer`'s)."""
        n = len(self.config["levels"])
        names = [level_output_name(i) for i in range(n - 1)] + [OUTPUT_FINEST]
        out = self.infer_outputs(ground, aerial, names)
        return [out[k] for k in names]

    def warmup(self, n: int = 3, batch: int = 1) -> float:
        """Run ``n`` times on zero inputs (allocations, autotuning, engine caches); returns the
        last run's seconds."""
        g_shape, a_shape = input_shapes(self.config)
        g = np.zeros((batch, *g_shape), np.float32)
        a = np.zeros((batch, *a_shape), np.float32)
        dt = 0.0
        for _ in range(max(1, n)):
            t0 = time.perf_counter()
            self.infer(g, a)
            dt = time.perf_counter() - t0
        return dt

    def _sizes(self) -> str:
        h, w = self.config["ground_size"]
        s = self.config["aerial_size"]
        return (
            f"{self.config['arch']}: ground {self.config['ground_type']} {h}x{w} px, "
            f"aerial {s}x{s} px at {self.config['mpp']:g} m/px, {len(self.config['levels'])} levels"
        )
