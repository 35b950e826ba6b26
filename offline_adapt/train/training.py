# SPDX-License-Identifier: Apache-2.0
"""The generic training loop shared by supervised training and adaptation.

``fit`` knows nothing about the architecture or the loss: it runs Adam over ``train_loader``,
calls ``loss_fn(output, batch)``, checkpoints ``out_dir/last.pt`` after every epoch (model,
optimizer, epoch, RNG states: an interrupted run resumes exactly) and ``out_dir/best.pt`` by the
validation metric. Deterministic for a given seed on CPU. Under ``torchrun`` (WORLD_SIZE > 1) it
initialises the process group (gloo on CPU, nccl on CUDA), wraps the model in
DistributedDataParallel, and rank 0 alone validates and writes files.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler
from torch.utils.data.distributed import DistributedSampler

from xview_loc_ros.fsutil import OutputLock, atomic_write_json
from xview_loc_ros.models import save_checkpoint
from xview_loc_ros.models.checkpoint import CheckpointError, read_checkpoint

log = logging.getLogger(__name__)

LossFn = Callable[[Any, Dict[str, Any]], Any]


@dataclass
class FitResult:
    history: List[Dict[str, Any]] = field(default_factory=list)
    best_value: Optional[float] = None
    best_epoch: Optional[int] = None
    last_path: Path = Path("last.pt")
    best_path: Path = Path("best.pt")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def dist_info() -> Tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", dist_info()[2])
    return torch.device("cpu")


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    workers: int = 0,
    drop_last: bool = False,
    sample_weights: Optional[Sequence[float]] = None,
) -> DataLoader:
    """A DataLoader whose order depends only on ``seed`` (a DistributedSampler under torchrun).
    ``sample_weights`` (one per item): draw len(dataset) items per epoch with replacement in
    proportion to them (single process only)."""
    rank, world, _ = dist_info()
    gen = torch.Generator()
    gen.manual_seed(seed)
    sampler: Optional[Sampler] = None
    if sample_weights is not None:
        if world > 1:
            raise ValueError(
                "weighted sampling (--mix balanced) runs in one process; use --mix proportional under torchrun"
            )
        if len(sample_weights) != len(dataset):  # type: ignore[arg-type]
            raise ValueError(f"{len(sample_weights)} sample weights for {len(dataset)} items")  # type: ignore[arg-type]
        sampler = WeightedRandomSampler(list(sample_weights), len(sample_weights), replacement=True, generator=gen)
        shuffle = False
    elif world > 1:
        sampler = DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        shuffle = False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        generator=gen,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


def _rng_state(loader: DataLoader) -> Dict[str, Any]:
    np_state: Any = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": random.getstate(),
    }
    if loader.generator is not None:
        state["loader"] = loader.generator.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any], loader: DataLoader) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "loader" in state and loader.generator is not None:
        loader.generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_device(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", disable=not enabled or not sys.stderr.isatty(), leave=False)


def batchnorm_layers(module: torch.nn.Module) -> List[torch.nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer inside ``module`` (itself included)."""
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def freeze_batchnorm(model: torch.nn.Module) -> None:
    """Put every batch-norm layer of ``model`` in eval mode: forward passes use, and no longer
    update, the running statistics; the affine weights still get gradients. Call after
    ``model.train()``, which sets them back to train mode."""
    for m in batchnorm_layers(model):
        m.eval()


def reestimate_batchnorm(
    model: torch.nn.Module,
    loader: DataLoader,
    batches: int,
    device: torch.device,
    within: Optional[Sequence[torch.nn.Module]] = None,
) -> int:
    """Reset the BatchNorm running statistics and re-estimate them as the cumulative average
    over up to ``batches`` batches of ``loader`` (train-mode forward, no gradients). ``within``:
    only the BatchNorm layers inside these modules (e.g. a model's ground branch); the others stay
    in eval mode during the pass, so their statistics are untouched. The loader's RNG state is
    saved and restored, so training (and exact resume) is unaffected. Returns the number of
    batches used (0 when there is no BatchNorm layer to re-estimate)."""
    bns = batchnorm_layers(model) if within is None else [m for w in within for m in batchnorm_layers(w)]
    if not bns:
        return 0
    chosen = {id(m) for m in bns}
    saved = [(m, m.momentum) for m in bns]
    gen_state = loader.generator.get_state() if loader.generator is not None else None
    cpu_state = torch.get_rng_state()
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    for m in batchnorm_layers(model):
        if id(m) not in chosen:
            m.eval()
    n = 0
    with torch.no_grad():
        for batch in loader:
            if n >= batches:
                break
            model(batch["ground"].to(device), batch["aerial"].to(device))
            n += 1
    for m, mom in saved:
        m.momentum = mom
    model.train(was_training)
    if gen_state is not None:
        loader.generator.set_state(gen_state)
    torch.set_rng_state(cpu_state)
    return n


def _lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    if schedule == "constant":
        return 1.0
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def fit(
    model: torch.nn.Module,
    train_loader: DataLoader,
    loss_fn: LossFn,
    *,
    epochs: int,
    out_dir: str | os.PathLike,
    lr: float = 1e-4,
    seed: int = 0,
    validate_fn: Optional[Callable[[torch.nn.Module], Optional[Dict[str, float]]]] = None,
    select_key: str = "mean_m",
    resume: bool = False,
    amp: Optional[bool] = None,
    device: Optional[torch.device] = None,
    steps_per_epoch: Optional[int] = None,
    extra: Optional[Dict[str, Any]] = None,
    progress: bool = True,
    lr_schedule: str = "constant",
    bn_reestimate_batches: int = 0,
    frozen_bn: bool = False,
) -> FitResult:
    """Train ``model`` for ``epochs`` epochs; see the module docstring.

    ``loss_fn(output, batch)`` returns a loss tensor or (loss, dict of floats to log).
    ``validate_fn(model)`` (rank 0 only, model in eval mode) returns metrics; the lowest
    ``select_key`` selects best.pt (without validation best.pt is the last epoch).
    ``steps_per_epoch`` caps the batches per epoch. ``extra``: plain values stored in checkpoints.
    ``amp``: mixed precision (fp16 autocast + grad scaling), default on when training on CUDA.
    ``lr_schedule``: "constant" (CCVPE) or "cosine" (per-epoch decay from ``lr`` to 5 % of it; a
    pure function of the epoch, so resuming needs no scheduler state).
    ``bn_reestimate_batches``: after each epoch, recompute BatchNorm running statistics as the
    plain average over this many training batches with the epoch's final weights ("precise BN"),
    before validation and checkpointing. The exponential running averages lag behind fast weight
    changes; on the small model at lr 1e-3 they made eval-mode errors jump several-fold.
    ``frozen_bn``: BatchNorm layers stay in eval mode while training (:func:`freeze_batchnorm`):
    the running statistics stay those of the initial model, the affine weights still train.
    """
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    if frozen_bn and bn_reestimate_batches:
        raise ValueError("frozen_bn keeps the running statistics; re-estimating them each epoch contradicts it")
    out_dir = Path(out_dir)
    rank, world, _ = dist_info()
    # Rank 0 writes the run folder: a second run on it would interleave its checkpoints with ours.
    with OutputLock(out_dir, "training run") if rank == 0 else contextlib.nullcontext():
        device = device or default_device()
        if world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        amp = (device.type == "cuda") if amp is None else bool(amp)
        seed_everything(seed + rank)
        net = model.to(device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
        result = FitResult(last_path=out_dir / "last.pt", best_path=out_dir / "best.pt")
        start_epoch = 0
        if resume and result.last_path.is_file():
            ckpt = read_checkpoint(result.last_path, map_location=device)
            # config is a CrossViewModel attribute, which nn.Module types as Tensor | Module
            net_config = cast(Dict[str, Any], net.config)
            if ckpt["config"] != net_config:
                diff = sorted(
                    k for k in set(ckpt["config"]) | set(net_config) if ckpt["config"].get(k) != net_config.get(k)
                )
                raise CheckpointError(f"{result.last_path}: cannot resume, its model config differs in {diff}")
            net.load_state_dict(ckpt["state_dict"])
            opt.load_state_dict(ckpt["optimizer"])
            if "scaler" in ckpt and scaler.is_enabled():
                scaler.load_state_dict(ckpt["scaler"])
            start_epoch = int(ckpt["epoch"])
            result.history = list(ckpt.get("history", []))
            result.best_value, result.best_epoch = ckpt.get("best_value"), ckpt.get("best_epoch")
            _set_rng_state(ckpt["rng"][rank] if isinstance(ckpt["rng"], list) else ckpt["rng"], train_loader)
            log.info("resumed %s at epoch %d", result.last_path, start_epoch)
        train_net = net
        if world > 1:
            train_net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        n_batches = len(train_loader) if steps_per_epoch is None else min(steps_per_epoch, len(train_loader))

        for epoch in range(start_epoch, epochs):
            if hasattr(train_loader.sampler, "set_epoch"):
                train_loader.sampler.set_epoch(epoch)
            for group in opt.param_groups:
                group["lr"] = lr * _lr_factor(lr_schedule, epoch, epochs)
            train_net.train()
            if frozen_bn:
                freeze_batchnorm(net)
            t0, pairs, loss_sum = time.perf_counter(), 0, 0.0
            parts_sum: Dict[str, float] = {}
            bar = _progress(n_batches, f"epoch {epoch + 1}/{epochs}", progress and rank == 0)
            for step, batch in enumerate(train_loader):
                if step >= n_batches:
                    break
                batch = _to_device(batch, device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                    out = train_net(batch["ground"], batch["aerial"])
                    res = loss_fn(out, batch)
                loss, parts = res if isinstance(res, tuple) else (res, {})
                if not torch.isfinite(loss):
                    raise RuntimeError(f"epoch {epoch + 1} step {step}: loss is {float(loss)} (diverged)")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                b = int(batch["ground"].shape[0])
                pairs += b
                loss_sum += float(loss.detach()) * b
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v) * b
                bar.set_postfix(loss=f"{float(loss.detach()):.4g}", pairs_s=f"{pairs / (time.perf_counter() - t0):.1f}")
                bar.update(1)
            bar.close()
            dt = time.perf_counter() - t0
            if bn_reestimate_batches > 0:
                reestimate_batchnorm(net, train_loader, bn_reestimate_batches, device)
            rec: Dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": loss_sum / max(pairs, 1),
                "pairs_per_s": pairs / dt,
                "seconds": dt,
                **{k: v / max(pairs, 1) for k, v in parts_sum.items()},
            }
            rng: Any = _rng_state(train_loader)
            if world > 1:
                gathered: List[Any] = [None] * world
                torch.distributed.all_gather_object(gathered, rng)
                rng = gathered
            if rank == 0:
                metrics = None
                if validate_fn is not None:
                    net.eval()
                    with torch.no_grad():
                        metrics = validate_fn(net)
                    rec.update({f"val_{k}": v for k, v in (metrics or {}).items()})
                value = (metrics or {}).get(select_key)
                improved = validate_fn is None or (
                    value is not None and (result.best_value is None or value < result.best_value)
                )
                if improved:
                    result.best_value, result.best_epoch = value, epoch + 1
                result.history.append(rec)
                state = dict(
                    epoch=epoch + 1,
                    optimizer=opt.state_dict(),
                    rng=rng,
                    history=result.history,
                    best_value=result.best_value,
                    best_epoch=result.best_epoch,
                    seed=seed,
                    **(extra or {}),
                )
                if scaler.is_enabled():
                    state["scaler"] = scaler.state_dict()
                save_checkpoint(result.last_path, net, **state)
                if improved:
                    save_checkpoint(
                        result.best_path, net, epoch=epoch + 1, metrics=metrics or {}, seed=seed, **(extra or {})
                    )
                atomic_write_json(out_dir / "history.json", result.history)
                val = (
                    ""
                    if metrics is None
                    else " " + " ".join(f"val_{k}={v:.3f}" for k, v in metrics.items() if isinstance(v, float))
                )
                log.info(
                    "epoch %d/%d loss=%.4g %.1f pairs/s%s%s",
                    epoch + 1,
                    epochs,
                    rec["loss"],
                    rec["pairs_per_s"],
                    val,
                    " (best)" if improved and validate_fn is not None else "",
                )
            if world > 1:
                torch.distributed.barrier()
        return result
