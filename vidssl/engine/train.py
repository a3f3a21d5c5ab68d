"""Training loops: self-supervised pretraining and supervised fine-tuning, resumable per epoch."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vidssl.engine import ddp
from vidssl.engine.checkpoint import Checkpointer, load_state_dict, run_key, save_state_dict
from vidssl.engine.precision import Precision, check_finite, check_finite_weights
from vidssl.progress import Progress
from vidssl.engine.resources import configure_threads
from vidssl.config import Params
from vidssl.data.clips import ClipDataset, ClipSpec, MultiClipDataset, read_list, to_float, usable_records
from vidssl.data.store import packs_fingerprint
from vidssl.data.pool import PooledLoader, map_batch

log = logging.getLogger(__name__)


class Tracker(Protocol):
    """What training reports to; ``vidssl.pipeline.tracking`` implements it over MLflow."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...


class NullTracker:
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass


device = ddp.default_device  # one process's device; under torchrun each rank's comes from ddp.setup()


def seed_all(seed: int) -> None:
    """Seed every RNG training touches."""
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def file_digest(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def move_batch(batch: Any, dev: torch.device, *, floats: bool = True) -> Any:
    """Move a (nested) batch to ``dev``; uint8 clip tensors (5-D and up) become float in [0, 1] there unless
    ``floats`` is False (the methods' augmentation takes uint8 and crops before converting).

    Clips may arrive in their decoded channels-last layout (:func:`vidssl.data.clips.stack_decoded`); they are
    made contiguous here, on the device, so every method sees the usual layout and the same values."""
    def move(x: Any) -> Any:
        if not torch.is_tensor(x):
            return x
        x = x.to(dev, non_blocking=True)
        if x.dim() >= 5:
            x = x.contiguous()
        return to_float(x) if floats and x.dim() >= 5 else x

    return map_batch(batch, move)


def make_loader(ds: Dataset, *, batch_size: int, workers: int, shuffle: bool, seed: int,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader whose shuffling and per-worker augmentation RNG derive from ``seed`` alone."""
    return PooledLoader(
        ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=workers,
        generator=torch.Generator().manual_seed(seed), pin_memory=torch.cuda.is_available(),
        worker_init_fn=_worker_init if workers else None, collate_fn=getattr(ds, "collate", None),
    )


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers only decode and crop; leave the cores to the model


def clip_spec(cfg: Params) -> ClipSpec:
    return ClipSpec(**cfg.clip.model_dump())


def build_model_backbone(cfg: Params) -> nn.Module:
    from vidssl.models import build_backbone

    kwargs = {"width": cfg.model.width} if cfg.model.backbone == "tiny" else {}
    return build_backbone(cfg.model.backbone, **kwargs)


def epoch_seconds(history: list[dict[str, float]]) -> float:
    """Summed per-epoch times; kept in the checkpoint, so a resumed run still reports what every epoch cost."""
    return float(sum(h["epoch_seconds"] for h in history))


def _rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from: torch (CPU and CUDA), numpy's global and Python's."""
    import random

    out: dict[str, Any] = {"rng": torch.get_rng_state(), "rng_numpy": _numpy_state(),
                           "rng_python": repr(random.getstate())}
    if torch.cuda.is_available():
        out["rng_cuda"] = torch.cuda.get_rng_state()
    return out


def _numpy_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _set_rng_state(state: dict[str, Any]) -> None:
    import ast
    import random

    if "rng" in state:
        torch.set_rng_state(state["rng"])
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["rng_cuda"])
    if "rng_numpy" in state:
        n = state["rng_numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "rng_python" in state:
        random.setstate(ast.literal_eval(state["rng_python"]))


@dataclasses.dataclass
class EpochTally:
    """Running sums of one epoch, kept in mid-epoch checkpoints so a resumed epoch reports all of it."""

    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)  # some terms are logged only sometimes
    clips: int = 0
    wait: float = 0.0  # seconds blocked on the loader
    startup: float = 0.0  # of which waiting for the first batch (workers starting, filling their queues)
    busy: float = 0.0  # seconds in forward, backward and the optimiser
    seconds: float = 0.0  # wall time of earlier (interrupted) parts of this epoch

    def add(self, terms: dict[str, float], clips: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.clips += clips

    def telemetry(self, seconds: float, world: int) -> dict[str, float]:
        """Per-epoch throughput: clips/s (all ranks), the fraction of step time spent waiting for data (in all,
        and once the first batch is in: the loader's start is a fixed cost per epoch that a short epoch
        magnifies), the seconds to that first batch, and the peak GPU memory (CUDA only)."""
        steady = self.wait - self.startup
        out = {"clips_per_s": self.clips * world / max(seconds, 1e-9),
               "data_wait": self.wait / max(self.wait + self.busy, 1e-9),
               "data_wait_steady": steady / max(steady + self.busy, 1e-9),
               "loader_start_seconds": self.startup}
        if torch.cuda.is_available():
            out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return out


@dataclasses.dataclass
class Loop:
    """One resumable training run: epochs of micro-batches, optimiser steps every ``accumulate`` of them,
    checkpoints at every epoch end and every ``checkpoint_minutes`` within an epoch.

    The caller supplies what differs between pretraining and fine-tuning: ``loader(epoch, start)`` yields the
    epoch's micro-batches from micro-batch ``start`` on, ``steps(epoch)`` counts them, ``step(batch, epoch)``
    returns (loss, logged terms, clips), ``begin_epoch``/``end_epoch`` frame the epoch (``end_epoch`` turns the
    tally into the epoch's metrics), ``after_step`` runs after every optimiser step.
    """

    where: str
    epochs: int
    ckpt: Checkpointer
    modules: dict[str, Any]
    net: nn.Module
    opt: torch.optim.Optimizer
    precision: Precision
    loader: Callable[[int, int], Any]
    steps: Callable[[int], int]
    step: Callable[[Any, int], tuple[torch.Tensor, dict[str, float], int]]
    end_epoch: Callable[[int, EpochTally], dict[str, float]]
    begin_epoch: Callable[[int], None] = lambda epoch: None
    after_step: Callable[[], None] = lambda: None
    tracker: Tracker = dataclasses.field(default_factory=lambda: NullTracker())
    main: bool = True
    world: int = 1
    accumulate: int = 1
    checkpoint_minutes: float = 0.0
    hint: str = ""

    def _state(self, history: list[dict[str, float]], tally: EpochTally | None) -> dict[str, Any]:
        return {"history": history, "precision": self.precision.state_dict(), **_rng_state(),
                "tally": dataclasses.asdict(tally) if tally is not None else None,
                **{n: m.state_dict() for n, m in self.modules.items()}}

    def _save(self, epoch: int, step: int, history: list[dict[str, float]], tally: EpochTally | None) -> None:
        """Checkpoint (rank 0); the caller has checked the weights are finite."""
        if self.main:
            self.ckpt.save(epoch, step, **self._state(history, tally))

    def run(self) -> list[dict[str, float]]:
        """Train from the last good checkpoint on; return every epoch's metrics."""
        history: list[dict[str, float]] = []
        start_epoch, start_step, tally = 0, 0, EpochTally()
        state = self.ckpt.load()
        if state is not None:
            for name, module in self.modules.items():
                module.load_state_dict(state[name])
            self.precision.load_state_dict(state.get("precision") or {})
            history, start_epoch, start_step = list(state["history"]), int(state["epoch"]), int(state.get("step", 0))
            if state.get("tally"):
                tally = EpochTally(**state["tally"])
            if not start_step:
                _set_rng_state(state)
            log.info("resuming from %s at epoch %d%s", self.ckpt.path, start_epoch + 1,
                     f", step {start_step}" if start_step else "")
        every = self.checkpoint_minutes * 60
        for epoch in range(start_epoch, self.epochs):
            self.begin_epoch(epoch)
            first = start_step if epoch == start_epoch else 0
            if first:  # resumed mid-epoch: the draws continue where the checkpoint left them
                _set_rng_state(state or {})
            else:
                tally = EpochTally()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            n = self.steps(epoch)
            bar = Progress(n, f"{self.where} epoch {epoch + 1} of {self.epochs}", initial=first, enabled=self.main)
            t0 = last_save = time.monotonic()
            self.opt.zero_grad(set_to_none=True)
            tick = time.perf_counter()
            i, done = first, 0
            for i, batch in enumerate(self.loader(epoch, first), start=first):
                done += 1
                got = time.perf_counter()
                tally.wait += got - tick
                if done == 1:
                    tally.startup += got - tick
                loss, terms, clips = self.step(batch, epoch)
                check_finite(loss, terms, where=self.where, epoch=epoch, step=i, hint=self.hint)
                self.precision.backward(loss / self.accumulate if self.accumulate > 1 else loss)
                tally.add(terms, clips)
                boundary = (i + 1) % self.accumulate == 0
                if boundary:
                    self.precision.step(self.opt)
                    self.opt.zero_grad(set_to_none=True)
                    self.after_step()
                tick = time.perf_counter()
                tally.busy += tick - got
                bar.update(1, loss=terms.get("loss", float("nan")))
                if boundary and every and i + 1 < n and time.monotonic() - last_save >= every:
                    tally.seconds += time.monotonic() - t0
                    t0 = last_save = time.monotonic()
                    check_finite_weights(self.net, where=self.where, epoch=epoch, step=i + 1, hint=self.hint)
                    self._save(epoch, i + 1, history, tally)
            bar.close()
            if first + done != n:
                raise RuntimeError(f"{self.where}: the loader of epoch {epoch + 1} gave {first + done} "
                                   f"micro-batches, expected {n}")
            seconds = tally.seconds + time.monotonic() - t0
            metrics = self.end_epoch(epoch, tally)
            metrics.update(self.tally_telemetry(tally, seconds))
            metrics["epoch_seconds"] = seconds
            history.append(metrics)
            check_finite_weights(self.net, where=self.where, epoch=epoch, step=done + first, hint=self.hint)
            if self.main:
                self.tracker.log_metrics(metrics, step=epoch)
                log.info("epoch %d/%d %s", epoch + 1, self.epochs,
                         " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            self._save(epoch + 1, 0, history, None)
        return history

    def tally_telemetry(self, tally: EpochTally, seconds: float) -> dict[str, float]:
        return tally.telemetry(seconds, self.world)


def make_optimizer(params: list[nn.Parameter], p: Any) -> torch.optim.Optimizer:
    if p.optimizer == "adam":
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)


def compile_backbone(module: nn.Module, enabled: bool) -> None:
    """``train.compile``: compile every backbone stage inside ``module`` in place (state-dict keys unchanged)."""
    if not enabled:
        return
    from vidssl.models.base import Backbone

    for m in module.modules():
        if isinstance(m, Backbone):
            for stage in m.stages.values():
                stage.compile(dynamic=False)  # a few fixed shapes (views, last batch); dynamic ones failed to lower


def _first_step_compiled(step: Callable[..., Any], enabled: bool) -> Callable[..., Any]:
    """Name a torch.compile failure in one line (it surfaces at the first call, deep in a traceback)."""
    if not enabled:
        return step
    done = False

    def wrapped(*args: Any) -> Any:
        nonlocal done
        if done:
            return step(*args)
        try:
            out = step(*args)
        except Exception as err:
            if type(err).__module__.startswith("torch._dynamo") or type(err).__module__.startswith("torch._inductor"):
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise RuntimeError(f"train.compile: torch.compile failed ({type(err).__name__}: {first}); "
                                   "set train.compile: false") from None
            raise
        done = True
        return out

    return wrapped


# ---------------------------------------------------------------- pretraining


def pretrain(cfg: Params, lists_dir: Path, persist_dir: Path, out_dir: Path,
             tracker: Tracker | None = None) -> dict[str, Any]:
    """Self-supervised pretraining of ``cfg.model.backbone`` with ``cfg.pretrain.method``.

    Writes ``out_dir/backbone.pt`` and returns summary metrics; resumes from the newest good checkpoint of this
    run key under ``persist_dir``. Under torchrun it trains data-parallel (``vidssl.engine.ddp``):
    ``pretrain.batch_size`` is the global batch, and only rank 0 writes.
    """
    from vidssl.engine.plan import check_accumulation, check_fits
    from vidssl.methods.registry import build_method

    tracker = tracker or NullTracker()
    par = ddp.setup()
    p, t = cfg.pretrain, cfg.train
    workers = configure_threads(p.workers, t.threads, "pretrain")
    seed_all(cfg.seed)  # the same seed on every rank: the same initial weights
    list_path = Path(lists_dir) / "pretrain.csv"
    records = usable_records(read_list(list_path), clip_spec(cfg))  # clip.short_videos: drop leaves some out
    if len(records) < p.batch_size:
        raise ValueError(f"{list_path}: {len(records)} videos, fewer than pretrain.batch_size="
                         f"{p.batch_size}; lower pretrain.batch_size or add videos")
    ddp.per_rank_batch(p.batch_size, par)
    check_accumulation(cfg, par.world)
    dev = par.device
    check_fits(cfg, par.world, dev)  # on a GPU: stop now, with the numbers, rather than out of memory hours in
    precision = Precision(t.precision, dev)
    method = build_method(p.method, build_model_backbone(cfg), cfg, n_samples=len(records))
    method = ddp.prepare(method, par).to(dev)
    precision.apply(method)
    compile_backbone(method, t.compile)
    model = ddp.wrap(method, par)  # what a training step calls: the method, or DDP around it
    ds = method.make_dataset(records, clip_spec(cfg), cfg)  # frames only: uint8 clips, uncropped
    augment = method.make_augment(clip_spec(cfg), cfg)  # the views, batched on the device
    params = [q for q in method.parameters() if q.requires_grad]  # EMA key encoders are not optimised
    opt = make_optimizer(params, p)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=p.milestones, gamma=p.gamma)
    # The frames too: re-extracted packs behind an unchanged list must not resume (or reuse) a finished run.
    # "state": 4 since augmentation draws from the method's generator on the device (3: checkpoints kept per
    # run key with mid-epoch state); older checkpoints cannot resume to the same run.
    key = run_key(p.method,
                  {"seed": cfg.seed, "model": cfg.model.model_dump(), "clip": cfg.clip.model_dump(),
                   "pretrain": p.used(), "precision": precision.name, "accumulate": t.accumulate, "state": 4},
                  {"list": file_digest(list_path), "frames": packs_fingerprint(r.frames_path for r in records)})
    steps_per_epoch = len(records) // p.batch_size * t.accumulate

    def begin_epoch(epoch: int) -> None:
        model.train()
        ddp.seed_epoch(cfg.seed * 1000 + epoch, par)

    def loader(epoch: int, start: int) -> DataLoader:
        return ddp.epoch_loader(ds, batch_size=p.batch_size, workers=workers, seed=cfg.seed * 1000 + epoch,
                                par=par, accumulate=t.accumulate, start=start,
                                worker_init_fn=_worker_init if workers else None)

    def step(batch: Any, epoch: int) -> tuple[torch.Tensor, dict[str, float], int]:
        batch = augment(move_batch(batch, dev, floats=False), method.augment_generator)
        loss, terms = model(batch, epoch)
        return loss, terms, _batch_len(batch)

    def end_epoch(epoch: int, tally: EpochTally) -> dict[str, float]:
        sched.step()
        sums, counts = ddp.merge_epoch_sums(tally.sums, tally.counts, par)
        ddp.sync_state(method, par, epoch)
        return {**{k: v / counts[k] for k, v in sums.items()}, "lr": opt.param_groups[0]["lr"]}

    history = Loop(
        where="pretrain", epochs=p.epochs, ckpt=Checkpointer(persist_dir, key),
        modules={"method": method, "optimizer": opt, "scheduler": sched}, net=method, opt=opt,
        precision=precision, loader=loader, steps=lambda epoch: steps_per_epoch,
        step=_first_step_compiled(step, t.compile), end_epoch=end_epoch, begin_epoch=begin_epoch,
        after_step=method.on_step_end, tracker=tracker, main=par.main, world=par.world, accumulate=t.accumulate,
        checkpoint_minutes=t.checkpoint_minutes,
        hint=_hint("pretrain", p.lr, precision.name),
    ).run()
    if par.main:
        save_state_dict(Path(out_dir) / "backbone.pt", {"backbone": method.backbone.state_dict(),
                                                        "name": cfg.model.backbone})
    return {"epochs": len(history), "final_loss": history[-1]["loss"], "seconds": epoch_seconds(history),
            **_last_telemetry(history), "precision": precision.name, "history": history}


def _hint(section: str, lr: float, precision: str) -> str:
    low = f" or set train.precision: fp32 (now {precision})" if precision != "fp32" else ""
    return f"Lower {section}.lr (now {lr:g}){low}."


def _batch_len(batch: Any) -> int:
    """Clips in a batch: the length of its first tensor."""
    if torch.is_tensor(batch):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_len(batch[0])
    return 0


def _last_telemetry(history: list[dict[str, float]]) -> dict[str, float]:
    """The last epoch's throughput figures, for the stage summary."""
    keys = ("clips_per_s", "data_wait", "data_wait_steady", "peak_gpu_mem_gib")
    return {k: history[-1][k] for k in keys if history and k in history[-1]}


# ---------------------------------------------------------------- fine-tuning


class Classifier(nn.Module):
    """Backbone + linear head on the pooled feature (IIC: Linear(512, C)).

    ``residual``: the backbone sees each frame minus the one before (IIC fine-tunes and tests on that); then
    ``normalise``: ImageNet mean and std. Both are part of the forward pass, so training, validation and test
    see the same input.
    """

    def __init__(self, backbone: nn.Module, n_classes: int, dropout: float = 0.0, normalise: bool = False,
                 residual: bool = False) -> None:
        from vidssl.engine.protocols import Normalise

        super().__init__()
        self.residual = residual
        self.normalise = Normalise() if normalise else nn.Identity()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.out_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from vidssl.engine.protocols import residual

        x = residual(x) if self.residual else x
        return self.head(self.dropout(self.backbone(self.normalise(x))))


def load_backbone(backbone: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load pretrained weights strictly: IIC's strict=False silently left models at random init (§2(g))."""
    state = load_state_dict(path)
    backbone.load_state_dict(state["backbone"], strict=True)


def n_classes_of(lists_dir: Path) -> int:
    path = Path(lists_dir) / "classes.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class index not found; run `vidssl lists` first")
    return sum(1 for _ in path.open(encoding="utf-8")) - 1


@torch.no_grad()
def evaluate_videos(model: nn.Module, ds: MultiClipDataset, *, batch_size: int, workers: int,
                    average: str = "logits", clips_per_pass: int = 64) -> dict[str, Any]:
    """Video-level accuracy: each video's clip logits (or softmax outputs) averaged (METHODS.md §1.3).

    The model sees at most ``clips_per_pass`` clips at once (a long video's dense windows in ten crops run to
    thousands); in eval mode the result does not depend on it.

    Raises:
        ValueError: if the classifier's output holds NaN or Inf (no accuracy is computed from it).
    """
    from vidssl.engine.protocols import check_logits, video_scores

    model.eval()
    dev = next(model.parameters()).device
    preds, labels = [], []
    loader = make_loader(ds, batch_size=batch_size, workers=workers, shuffle=False, seed=0)
    bar = Progress(len(loader), "finetune test", unit="batch")
    for clips, label, _ in loader:
        b, n = clips.shape[:2]
        flat = clips.flatten(0, 1)
        logits = torch.cat([model(to_float(part.to(dev))) for part in flat.split(clips_per_pass)]).view(b, n, -1)
        check_logits(logits, "fine-tune test")
        preds.append(torch.stack([video_scores(v, average) for v in logits]).argmax(1).cpu())
        labels.append(label)
        bar.update(1)
    bar.close()
    pred, true = torch.cat(preds).numpy(), torch.cat(labels).numpy()
    return {"accuracy": float((pred == true).mean()), "pred": pred.tolist(), "true": true.tolist()}


@torch.no_grad()
def validation_loss(model: nn.Module, ds: MultiClipDataset, *, batch_size: int, workers: int) -> float:
    """Mean cross-entropy of each validation video's centre clip (model selection and the plateau schedule)."""
    from vidssl.engine.protocols import check_logits

    model.eval()
    dev = next(model.parameters()).device
    total, seen = 0.0, 0
    for clips, label, _ in make_loader(ds, batch_size=batch_size, workers=workers, shuffle=False, seed=0):
        logits = model(to_float(clips.flatten(0, 1).to(dev)))
        check_logits(logits, "fine-tune validation")
        total += float(F.cross_entropy(logits, label.to(dev), reduction="sum"))
        seen += len(label)
    return total / seen


def finetune(cfg: Params, lists_dir: Path, init: Path | None, persist_dir: Path, out_dir: Path,
             tracker: Tracker | None = None) -> dict[str, Any]:
    """Fine-tune backbone + linear head, test on test.csv, under ``finetune.protocol``.

    The protocol (``vidssl.engine.protocols``) sets the schedule's shape, model selection (the last epoch, or
    the lowest loss on val.csv), augmentation, dropout, clip geometry, test views, averaging and normalisation.
    A protocol that validates trains on train.csv (the training split less the validation videos); one that
    never looks at val.csv trains on the whole training split (pretrain.csv), as its seed does.
    """
    from vidssl.engine.protocols import DeviceAugment, build_scheduler, get_protocol, test_dataset

    ddp.require_single_process("finetune")
    tracker = tracker or NullTracker()
    f, t = cfg.finetune, cfg.train
    workers = configure_threads(f.workers, t.threads, "finetune")
    seed_all(cfg.seed)
    lists_dir = Path(lists_dir)
    proto = get_protocol(f.protocol)
    spec = proto.clip_spec(clip_spec(cfg))
    use_val = proto.select == "val_loss" or proto.schedule == "plateau"
    train_list = lists_dir / ("train.csv" if use_val else "pretrain.csv")
    records = read_list(train_list)
    # The loader samples and decodes only (uint8 at the resize); crop, flip and jitter run batched on the device.
    train_ds = ClipDataset(records, spec, crop=False)
    augment = DeviceAugment(spec.crop, proto, cfg.seed)
    val_ds = None
    if use_val:
        val = read_list(lists_dir / "val.csv") if (lists_dir / "val.csv").is_file() else []
        if not val:
            raise ValueError(f"finetune.protocol {proto.name!r} selects on validation loss, but "
                             f"{lists_dir / 'val.csv'} holds no videos; set lists.val_videos (IIC: 800 on UCF101, "
                             "400 on HMDB51) or choose finetune.protocol: plain")
        val_ds = MultiClipDataset(val, spec, 1)
    model = Classifier(build_model_backbone(cfg), n_classes_of(lists_dir), dropout=proto.dropout,
                       normalise=proto.normalise, residual=proto.residual)
    if init is not None:
        load_backbone(model.backbone, init)
    dev = device()
    model.to(dev)
    precision = Precision(t.precision, dev)
    precision.apply(model)
    compile_backbone(model, t.compile)
    opt = torch.optim.SGD(model.parameters(), lr=f.lr, momentum=f.momentum, weight_decay=f.weight_decay)
    sched = build_scheduler(proto, opt, f.epochs)
    key = run_key("finetune",
                  {"seed": cfg.seed, "model": cfg.model.model_dump(), "clip": cfg.clip.model_dump(),
                   "finetune": f.model_dump(), "precision": precision.name, "state": 4,  # 4: crops on the device
                   # what the protocol does, not only its name: a changed recipe never resumes an older run
                   "recipe": dataclasses.asdict(proto)},
                  {"list": file_digest(train_list),
                   "frames": packs_fingerprint(r.frames_path for r in train_ds.records),
                   "init": file_digest(init) if init else None})
    ckpt = Checkpointer(persist_dir, key)
    # The best epoch's weights, kept beside the checkpoints in the run key's folder, so a resumed run compares
    # with them and another run's never count.
    best_path = ckpt.dir / "best.pt"
    par = ddp.Parallel(device=dev)

    def loader(epoch: int, start: int) -> DataLoader:
        return ddp.epoch_loader(train_ds, batch_size=f.batch_size, workers=workers, seed=cfg.seed * 1000 + epoch,
                                par=par, start=start, drop_last=False,
                                worker_init_fn=_worker_init if workers else None)

    def step(batch: Any, epoch: int) -> tuple[torch.Tensor, dict[str, float], int]:
        clips, label, _ = batch
        clips, label = augment(move_batch(clips, dev, floats=False)), label.to(dev)
        logits = model(clips)
        loss = F.cross_entropy(logits, label)
        n = len(label)
        # Weighted by the batch size, so the epoch's means are per clip (the last batch may be smaller).
        return loss, {"loss": loss.item(), "loss_sum": loss.item() * n,
                      "correct": float((logits.argmax(1) == label).sum())}, n

    def end_epoch(epoch: int, tally: EpochTally) -> dict[str, float]:
        seen = max(tally.clips, 1)
        out = {"train_loss": tally.sums["loss_sum"] / seen, "train_clip_acc": tally.sums["correct"] / seen,
               "lr": opt.param_groups[0]["lr"]}
        if val_ds is not None:
            out["val_loss"] = validation_loss(model, val_ds, batch_size=f.batch_size, workers=workers)
            if proto.select == "val_loss" and out["val_loss"] < best_val[0]:
                best_val[0] = out["val_loss"]
                save_state_dict(best_path, {"model": model.state_dict(), "epoch": epoch + 1,
                                            "val_loss": out["val_loss"], "key": key})
        if proto.schedule == "plateau":
            sched.step(out["val_loss"])
        else:
            sched.step()
        return out

    best = load_state_dict(best_path) if best_path.is_file() else None
    best_val = [float(best["val_loss"]) if best is not None and best.get("key") == key else float("inf")]
    history = Loop(
        where="finetune", epochs=f.epochs, ckpt=ckpt,
        modules={"model": model, "optimizer": opt, "scheduler": sched, "augment": augment}, net=model, opt=opt,
        precision=precision,
        loader=loader, steps=lambda epoch: -(-len(train_ds) // f.batch_size),
        step=_first_step_compiled(step, t.compile), end_epoch=end_epoch, begin_epoch=lambda epoch: model.train(),
        tracker=tracker, checkpoint_minutes=t.checkpoint_minutes,
        hint=_hint("finetune", f.lr, precision.name),
    ).run()
    selected = len(history)
    if proto.select == "val_loss":
        best = load_state_dict(best_path)
        model.load_state_dict(best["model"])
        selected = int(best["epoch"])
    test_ds = test_dataset(proto, read_list(lists_dir / "test.csv"), spec, f.test_clips)
    t_eval = time.time()
    per_batch = 1 if proto.test == "dense" else max(1, f.batch_size // f.test_clips)
    result = evaluate_videos(model, test_ds, batch_size=per_batch, workers=workers, average=proto.average)
    save_state_dict(Path(out_dir) / "classifier.pt", {"model": model.state_dict(), "name": cfg.model.backbone})
    return {"test_accuracy": result["accuracy"], "pred": result["pred"], "true": result["true"],
            "epochs": len(history), "selected_epoch": selected, "protocol": proto.name,
            "seconds": epoch_seconds(history) + time.time() - t_eval,
            **_last_telemetry(history), "precision": precision.name, "history": history}
