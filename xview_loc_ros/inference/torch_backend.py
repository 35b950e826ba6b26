# SPDX-License-Identifier: Apache-2.0
"""PyTorch backend: a checkpoint on CPU or CUDA, fp32 or fp16 autocast, optional CUDA graphs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from xview_loc_ros.inference.base import (
    OUTPUT_AERIAL_DESCRIPTOR,
    OUTPUT_FINEST,
    OUTPUT_GROUND_DESCRIPTOR,
    OUTPUT_ORIENTATION,
    Backend,
    ModelFileError,
    level_output_name,
    output_names,
)


def _named_outputs(out: Any) -> Dict[str, Any]:
    """ModelOutput -> {output name: tensor} in the shared naming."""
    named = {OUTPUT_FINEST: out.heatmaps[-1]}
    named.update({level_output_name(i): h for i, h in enumerate(out.heatmaps[:-1])})
    if out.orientation is not None:
        named[OUTPUT_ORIENTATION] = out.orientation
    if out.ground_descriptor is not None:
        named[OUTPUT_GROUND_DESCRIPTOR] = out.ground_descriptor
        named[OUTPUT_AERIAL_DESCRIPTOR] = out.aerial_descriptor
    return named


class TorchBackend(Backend):
    """Eager PyTorch. ``device``: "cpu", "cuda" or "cuda:N" (default: CUDA when present).
    ``fp16``: autocast to float16 (CUDA only). ``cuda_graphs``: capture one graph per batch size
    and replay it (CUDA only; the inputs are copied into static buffers). ``threads`` sets
    torch's intra-op threads, which are process-wide."""

    name = "torch"

    def __init__(
        self,
        model: Any,
        model_path: str | os.PathLike,
        device: Optional[str] = None,
        fp16: bool = False,
        cuda_graphs: bool = False,
        threads: Optional[int] = None,
    ) -> None:
        import torch

        self._torch = torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine")
        if fp16 and not cuda:
            raise ValueError("fp16 autocast needs a CUDA device; use fp32 on CPU")
        if cuda_graphs and not cuda:
            raise ValueError("CUDA graphs need a CUDA device")
        if threads:
            torch.set_num_threads(int(threads))
        self.fp16, self.cuda_graphs = fp16, cuda_graphs
        self.model = model.to(self.device).eval()
        with torch.inference_mode():
            probe = self._forward(*self._zeros(1, model.config))
        super().__init__(model.config, Path(model_path), output_names(model.config, OUTPUT_ORIENTATION in probe))
        self._graphs: Dict[int, Any] = {}

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs: Any) -> "TorchBackend":
        from xview_loc_ros.models import CheckpointError, load_checkpoint

        try:
            model, _ = load_checkpoint(path, map_location="cpu")
        except CheckpointError as e:  # torch's load errors span lines; keep the first
            raise ModelFileError(str(e).splitlines()[0]) from e
        return cls(model, path, **kwargs)

    def _zeros(self, batch: int, config: Dict[str, Any]):
        h, w = config["ground_size"]
        s = config["aerial_size"]
        t = self._torch
        return (t.zeros(batch, 3, h, w, device=self.device), t.zeros(batch, 3, s, s, device=self.device))

    def _forward(self, g: Any, a: Any) -> Dict[str, Any]:
        with self._torch.autocast(self.device.type, dtype=self._torch.float16, enabled=self.fp16):
            return _named_outputs(self.model(g, a))

    def _graph(self, batch: int):
        """(graph, static inputs, static outputs) for this batch size, captured on first use."""
        if batch not in self._graphs:
            t = self._torch
            g, a = self._zeros(batch, self.config)
            side = t.cuda.Stream()
            side.wait_stream(t.cuda.current_stream())
            with t.cuda.stream(side), t.inference_mode():
                for _ in range(3):  # warm-up on a side stream, as CUDA graph capture requires
                    self._forward(g, a)
            t.cuda.current_stream().wait_stream(side)
            graph = t.cuda.CUDAGraph()
            with t.cuda.graph(graph), t.inference_mode():
                out = self._forward(g, a)
            self._graphs[batch] = (graph, g, a, out)
        return self._graphs[batch]

    def _run(self, ground: np.ndarray, aerial: np.ndarray, names: Sequence[str]) -> Dict[str, np.ndarray]:
        t = self._torch
        g = t.from_numpy(ground).to(self.device, non_blocking=True)
        a = t.from_numpy(aerial).to(self.device, non_blocking=True)
        with t.inference_mode():
            if self.cuda_graphs:
                graph, sg, sa, out = self._graph(g.shape[0])
                sg.copy_(g)
                sa.copy_(a)
                graph.replay()
            else:
                out = self._forward(g, a)
            return {n: out[n].float().cpu().numpy() for n in names}

    def describe(self) -> str:
        prec = "fp16 autocast" if self.fp16 else "fp32"
        graphs = ", CUDA graphs" if self.cuda_graphs else ""
        dev = str(self.device)
        if self.device.type == "cuda":
            dev += f" ({self._torch.cuda.get_device_name(self.device)})"
        else:
            dev += f" ({self._torch.get_num_threads()} threads)"
        return f"torch {self._torch.__version__} on {dev}, {prec}{graphs}; {self.model_path.name}; {self._sizes()}"
