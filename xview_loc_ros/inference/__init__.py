# SPDX-License-Identifier: Apache-2.0
"""Inference backends behind one interface: TensorRT, ONNX Runtime, PyTorch.

``open_backend(model_path, backend="auto")`` returns a :class:`Backend` with ``.config`` (the
checkpoint config: sizes, m/px, normalisation), ``.infer(ground, aerial)`` -> finest-level logits
float32 (B,1,S,S), ``.infer_levels``, ``.warmup()``, ``.describe()``. Heavy libraries are imported
only by the backend that needs them.
"""

from xview_loc_ros.inference.base import (
    INPUT_AERIAL,
    INPUT_GROUND,
    OUTPUT_AERIAL_DESCRIPTOR,
    OUTPUT_FINEST,
    OUTPUT_GROUND_DESCRIPTOR,
    OUTPUT_ORIENTATION,
    Backend,
    InputShapeError,
    ModelFileError,
    check_inputs,
    has_retrieval,
    input_shapes,
    level_output_name,
    output_names,
)
from xview_loc_ros.inference.select import BACKENDS, Choice, backend_availability, choose_backend, open_backend

__all__ = [
    "BACKENDS",
    "Backend",
    "Choice",
    "INPUT_AERIAL",
    "INPUT_GROUND",
    "InputShapeError",
    "ModelFileError",
    "OUTPUT_AERIAL_DESCRIPTOR",
    "OUTPUT_FINEST",
    "OUTPUT_GROUND_DESCRIPTOR",
    "OUTPUT_ORIENTATION",
    "backend_availability",
    "check_inputs",
    "choose_backend",
    "has_retrieval",
    "input_shapes",
    "level_output_name",
    "open_backend",
    "output_names",
]
