"""`vidssl plan`: will this run fit, and how long is it? Parameters, measured activation memory, the per-GPU
batch and gradient accumulation that fit a given memory, and the number of optimiser steps.

Gradient accumulation splits each optimiser step's batch into ``train.accumulate`` micro-batches. It leaves the
loss unchanged only where a sample's negatives do not come from its own batch; :data:`BATCH_NOTES` says, per
method, what a smaller per-GPU batch changes.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidssl.config import Params

GIB = 2**30
# Memory no run can use: the CUDA context, allocator fragmentation, cuDNN workspaces (fraction of the card).
HEADROOM = 0.10

_BANK = ("negatives come from memory banks ({k} rows per sample), not from the batch: accumulation gives the "
         "same loss per sample; bank rows are updated after each micro-batch, and batch-norm statistics cover "
         "the micro-batch")
_QUEUE = ("negatives come from a queue of keys, not from the batch: accumulation gives the same loss per "
          "sample; keys enter the queue after each micro-batch, the key encoder moves once per optimiser step, "
          "and batch-norm statistics cover the micro-batch")
_INBATCH = ("negatives are the other clips of the batch (gathered across GPUs): a smaller per-GPU batch keeps "
            "them only through more GPUs (the global batch), so accumulation is refused")
BATCH_NOTES: dict[str, str] = {
    "iic": _BANK,
    "cmc": _BANK,
    "moco": _QUEUE,
    "be_moco": _QUEUE,
    "be": _QUEUE + " (the moco variant; the triplet and consistency forms pair clips within the batch)",
    "simclr": _INBATCH,
    "dualvar": _INBATCH + " (and the temporal-context and rank losses compare clips within the batch)",
    "mlfo": _INBATCH + " (and its Sinkhorn prototypes balance assignments over the batch)",
    "vcop": ("each clip tuple's order is classified on its own: accumulation gives the same loss; batch-norm "
             "statistics cover the micro-batch"),
}


def accumulation_allowed(cfg: Params) -> bool:
    """Whether ``cfg``'s method keeps its loss when the batch is split into micro-batches."""
    method = cfg.pretrain.method
    if method in ("iic", "cmc", "moco", "be_moco", "vcop"):
        return True
    if method == "be":
        return cfg.pretrain.be.variant == "moco"
    return False


def check_accumulation(cfg: Params, world: int = 1) -> None:
    """Refuse ``train.accumulate`` > 1 where the loss needs the whole batch, or a batch that does not split.

    Raises:
        ValueError: naming the key and what to do.
    """
    k, b, m = cfg.train.accumulate, cfg.pretrain.batch_size, cfg.pretrain.method
    if k == 1:
        return
    if not accumulation_allowed(cfg):
        raise ValueError(f"train.accumulate={k}: {m}'s {BATCH_NOTES.get(m, 'loss needs the whole batch')}; set "
                         "train.accumulate: 1 and spread the batch over more GPUs (torchrun)")
    if b % (world * k):
        raise ValueError(f"train.accumulate={k}: pretrain.batch_size={b} does not split into {world} GPU(s) x {k} "
                         f"micro-batches; use a batch size that is a multiple of {world * k}")


def _synthetic_lists(folder: Path, cfg: Params, n: int) -> list[Any]:
    """``n`` noise videos at the clip geometry, long enough for every method's sampler."""
    from vidssl.data.clips import VideoRecord
    from vidssl.data.store import write_pack

    rng = np.random.default_rng(0)
    frames = max(64, 4 * cfg.clip.span)
    size = cfg.clip.resize
    records = []
    for i in range(n):
        path = folder / f"v{i}.zip"
        write_pack(path, [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(frames)])
        records.append(VideoRecord(video_id=f"v{i}", frames_path=str(path), n_frames=frames, label=i % 2))
    return records


def _saved_bytes() -> tuple[Any, dict[str, int]]:
    """A saved-tensors hook pair counting the bytes autograd keeps for backward (distinct storages)."""
    seen: dict[str, int] = {"bytes": 0}
    storages: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in storages:
            storages.add(ptr)
            seen["bytes"] += t.untyped_storage().nbytes()
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), seen


@dataclasses.dataclass
class Plan:
    method: str
    backbone: str
    device: str
    precision: str
    params: int
    trainable: int
    static_bytes: int  # weights, gradients, optimiser state, buffers (banks, queues)
    activation_bytes_per_sample: int
    measured_batch: int
    step_seconds: float
    batch_size: int
    world: int
    gpu_mem_gib: float
    accumulate: int | None  # None: the batch does not fit even with accumulation
    micro_batch: int | None
    optimizer_steps: int | None
    note: str

    def lines(self) -> list[str]:
        mb = lambda b: f"{b / 2**20:.1f} MiB"  # noqa: E731
        fit = (f"per-GPU batch {self.batch_size // self.world} as {self.accumulate} x {self.micro_batch} "
               f"(train.accumulate: {self.accumulate})" if self.accumulate else
               "does NOT fit: " + ("more GPUs or a smaller pretrain.batch_size" if "refused" in self.note else
                                   "a smaller pretrain.batch_size or clip size"))
        return [
            f"method {self.method}, backbone {self.backbone}, {self.device}, precision {self.precision}",
            f"parameters: {self.params:,} ({self.trainable:,} trainable)",
            f"static memory (weights, gradients, optimiser, banks/queues): {mb(self.static_bytes)}",
            f"activation memory per sample (all its views; forward+backward on {self.device}, batch "
            f"{self.measured_batch}): {mb(self.activation_bytes_per_sample)}",
            f"one step of batch {self.measured_batch} took {self.step_seconds:.2f} s here",
            f"global batch {self.batch_size} over {self.world} GPU(s) of {self.gpu_mem_gib:g} GiB: {fit}",
            f"optimiser steps: {self.optimizer_steps if self.optimizer_steps is not None else '? (no lists)'}",
            f"smaller per-GPU batch: {self.note}",
        ]


def fit(static: int, per_sample: int, batch: int, world: int, gpu_mem_gib: float, allowed: bool
        ) -> tuple[int | None, int | None]:
    """(accumulate, micro-batch) for the least accumulation whose micro-batch fits ``gpu_mem_gib``, or
    (None, None) when none fits (or accumulation is not allowed and the whole per-GPU batch does not fit)."""
    budget = gpu_mem_gib * GIB * (1 - HEADROOM) - static
    per_gpu = batch // world
    for k in range(1, per_gpu + 1) if allowed else (1,):
        if per_gpu % k == 0 and (per_gpu // k) * per_sample <= budget:
            return k, per_gpu // k
    return None, None


def measure(cfg: Params, dev: torch.device, *, batch: int = 2, n_samples: int | None = None
            ) -> tuple[nn.Module, int, int, float]:
    """Build ``cfg``'s method on ``dev`` and run one forward/backward of ``batch`` samples of noise videos.

    Returns (method, static bytes, activation bytes per sample, step seconds). On CUDA the activation memory is
    the allocator's peak above the static memory; elsewhere it is what autograd saved for backward.
    """
    from vidssl.engine.precision import Precision
    from vidssl.engine.train import build_model_backbone, clip_spec, make_optimizer, move_batch
    from vidssl.methods.registry import build_method

    torch.manual_seed(cfg.seed)
    precision = Precision(cfg.train.precision, dev)
    with tempfile.TemporaryDirectory() as tmp:
        records = _synthetic_lists(Path(tmp), cfg, batch)
        method = build_method(cfg.pretrain.method, build_model_backbone(cfg), cfg,
                              n_samples=n_samples or batch).to(dev)
        precision.apply(method)
        ds = method.make_dataset(records, clip_spec(cfg), cfg)
        from torch.utils.data import default_collate

        items = [ds[i] for i in range(batch)]
    opt = make_optimizer([q for q in method.parameters() if q.requires_grad], cfg.pretrain)
    method.train()
    # the views the method trains on, made on the device as in training
    x = method.make_augment(clip_spec(cfg), cfg)(move_batch(ds.collate(items) if hasattr(ds, "collate") else
                                                            default_collate(items), dev, floats=False),
                                                 method.augment_generator)
    # One step first: the optimiser state exists only after it (and lazy heads and kernels are built).
    for p in (q for q in method.parameters() if q.requires_grad):
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    opt_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                    if torch.is_tensor(t))
    weights = sum(p.numel() * p.element_size() for p in method.parameters())
    grads = sum(p.numel() * p.element_size() for p in method.parameters() if p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for b in method.buffers())
    static = weights + grads + opt_bytes + buffers
    t0 = time.perf_counter()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        loss, _ = method(x, 0)
        loss.backward()
        torch.cuda.synchronize(dev)
        act = torch.cuda.max_memory_allocated(dev) - base
    else:
        hooks, seen = _saved_bytes()
        with hooks:
            loss, _ = method(x, 0)
        loss.backward()
        act = seen["bytes"]
    opt.step()
    seconds = time.perf_counter() - t0
    opt.zero_grad(set_to_none=True)
    return method, static, math.ceil(act / batch), seconds


def plan(cfg: Params, *, gpu_mem_gib: float = 80.0, world: int = 1, dev: torch.device | None = None,
         n_videos: int | None = None, batch: int = 2) -> Plan:
    """Measure ``cfg``'s method on ``dev`` and fit its global batch into ``world`` GPUs of ``gpu_mem_gib``."""
    from vidssl.engine.precision import resolve

    dev = dev or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    method, static, per_sample, seconds = measure(cfg, dev, batch=batch, n_samples=n_videos)
    p = cfg.pretrain
    allowed = accumulation_allowed(cfg)
    k, micro = fit(static, per_sample, p.batch_size, world, gpu_mem_gib, allowed)
    steps = p.epochs * (n_videos // p.batch_size) if n_videos else None
    return Plan(
        method=p.method, backbone=cfg.model.backbone, device=str(dev), precision=resolve(cfg.train.precision, dev),
        params=sum(q.numel() for q in method.parameters()),
        trainable=sum(q.numel() for q in method.parameters() if q.requires_grad),
        static_bytes=static, activation_bytes_per_sample=per_sample, measured_batch=batch, step_seconds=seconds,
        batch_size=p.batch_size, world=world, gpu_mem_gib=gpu_mem_gib, accumulate=k, micro_batch=micro,
        optimizer_steps=steps, note=BATCH_NOTES.get(p.method, "unknown method").format(k=getattr(
            getattr(p, p.method, None), "nce_k", "K")),
    )


def check_fits(cfg: Params, world: int, dev: torch.device) -> None:
    """Before training on a GPU: stop with `vidssl plan`'s numbers if the per-GPU micro-batch cannot fit.

    Raises:
        ValueError: the run would run out of GPU memory (see :func:`refuse_if_over`).
    """
    if dev.type != "cuda":
        return
    total = torch.cuda.get_device_properties(dev).total_memory / GIB
    _, static, per_sample, _ = measure(cfg, dev, batch=2)
    torch.cuda.empty_cache()
    refuse_if_over(cfg, world, static, per_sample, total)


def refuse_if_over(cfg: Params, world: int, static: int, per_sample: int, total_gib: float) -> None:
    """Raise when ``cfg``'s micro-batch needs more than ``total_gib`` (less headroom), naming the numbers and
    the setting that would fit.

    Raises:
        ValueError: naming the memory needed, the card's, and ``train.accumulate`` or what else to change.
    """
    micro = cfg.pretrain.batch_size // world // cfg.train.accumulate
    need = static + micro * per_sample
    if need <= total_gib * GIB * (1 - HEADROOM):
        return
    k, m = fit(static, per_sample, cfg.pretrain.batch_size, world, total_gib, accumulation_allowed(cfg))
    advice = (f"set train.accumulate: {k} (micro-batch {m})" if k else
              "use more GPUs or a smaller pretrain.batch_size / clip")
    raise ValueError(
        f"pretrain: micro-batch {micro} needs {need / GIB:.1f} GiB ({static / GIB:.1f} static + {micro} x "
        f"{per_sample / 2**20:.0f} MiB activations per sample) but this GPU has {total_gib:.0f} GiB; {advice} "
        "(`vidssl plan` shows the numbers)")
