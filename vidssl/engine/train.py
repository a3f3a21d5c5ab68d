"""Training loops: self-supervised pretraining and supervised fine-tuning, resumable per epoch."""

from __future__ import annotations

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
from vidssl.engine.checkpoint import Checkpointer, config_key, load_state_dict, save_state_dict
from vidssl.config import Params
from vidssl.data.clips import ClipDataset, ClipSpec, MultiClipDataset, read_list, to_float, usable_records
from vidssl.data.store import packs_fingerprint

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


def move_batch(batch: Any, dev: torch.device) -> Any:
    """Move a (nested) batch to ``dev``; uint8 clip tensors (5-D and up) become float in [0, 1] there."""
    if torch.is_tensor(batch):
        batch = batch.to(dev, non_blocking=True)
        return to_float(batch) if batch.dim() >= 5 else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_batch(b, dev) for b in batch)
    if isinstance(batch, dict):
        return {k: move_batch(v, dev) for k, v in batch.items()}
    return batch


def make_loader(ds: Dataset, *, batch_size: int, workers: int, shuffle: bool, seed: int,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader whose shuffling and per-worker augmentation RNG derive from ``seed`` alone."""
    return DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=workers,
        generator=torch.Generator().manual_seed(seed), pin_memory=torch.cuda.is_available(),
        worker_init_fn=_worker_init if workers else None,
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


def run_epochs(
    *, epochs: int, ckpt: Checkpointer, modules: dict[str, Any], step_epoch: Callable[[int], dict[str, float]],
    tracker: Tracker, main: bool = True,
) -> list[dict[str, float]]:
    """Run epochs from the last checkpoint on; save all ``modules`` state after every epoch.

    ``main=False`` (data-parallel ranks other than 0) resumes and trains alike but neither logs nor saves."""
    history: list[dict[str, float]] = []
    start = 0
    state = ckpt.load()
    if state is not None:
        for name, module in modules.items():
            module.load_state_dict(state[name])
        history, start = list(state["history"]), int(state["epoch"])
        if "rng" in state:  # in-process draws (augmentation with no loader workers) continue where they were
            torch.set_rng_state(state["rng"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng_cuda"])
        log.info("resuming from %s at epoch %d", ckpt.path, start)
    for epoch in range(start, epochs):
        t0 = time.time()
        metrics = step_epoch(epoch)
        metrics["epoch_seconds"] = time.time() - t0
        history.append(metrics)
        if not main:
            continue
        tracker.log_metrics(metrics, step=epoch)
        log.info("epoch %d/%d %s", epoch + 1, epochs, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        rng = {"rng": torch.get_rng_state()} | ({"rng_cuda": torch.cuda.get_rng_state()}
                                                 if torch.cuda.is_available() else {})
        ckpt.save(epoch + 1, history=history, **rng, **{n: m.state_dict() for n, m in modules.items()})
    return history


# ---------------------------------------------------------------- pretraining


def pretrain(cfg: Params, lists_dir: Path, persist_dir: Path, out_dir: Path,
             tracker: Tracker | None = None) -> dict[str, Any]:
    """Self-supervised pretraining of ``cfg.model.backbone`` with ``cfg.pretrain.method``.

    Writes ``out_dir/backbone.pt`` and returns summary metrics; resumes from ``persist_dir/last.pt``. Under
    torchrun it trains data-parallel (``vidssl.engine.ddp``): ``pretrain.batch_size`` is the global batch, and only
    rank 0 writes.
    """
    from vidssl.methods.registry import build_method

    tracker = tracker or NullTracker()
    par = ddp.setup()
    seed_all(cfg.seed)  # the same seed on every rank: the same initial weights
    list_path = Path(lists_dir) / "pretrain.csv"
    records = usable_records(read_list(list_path), clip_spec(cfg))  # clip.short_videos: drop leaves some out
    if len(records) < cfg.pretrain.batch_size:
        raise ValueError(f"{list_path}: {len(records)} videos, fewer than pretrain.batch_size="
                         f"{cfg.pretrain.batch_size}; lower pretrain.batch_size or add videos")
    ddp.per_rank_batch(cfg.pretrain.batch_size, par)
    dev = par.device
    method = build_method(cfg.pretrain.method, build_model_backbone(cfg), cfg, n_samples=len(records))
    method = ddp.prepare(method, par).to(dev)
    model = ddp.wrap(method, par)  # what a training step calls: the method, or DDP around it
    ds = method.make_dataset(records, clip_spec(cfg), cfg)
    p = cfg.pretrain
    params = [q for q in method.parameters() if q.requires_grad]  # EMA key encoders are not optimised
    if p.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=p.milestones, gamma=p.gamma)
    # The frames too: re-extracted packs behind an unchanged list must not resume (or reuse) a finished run.
    # "state": 2 since checkpoints carry the methods' generator states; older ones cannot resume a method.
    key = config_key({"seed": cfg.seed, "model": cfg.model.model_dump(), "clip": cfg.clip.model_dump(),
                      "pretrain": p.used(), "list": file_digest(list_path),
                      "frames": packs_fingerprint(r.frames_path for r in records), "state": 2})

    def step_epoch(epoch: int) -> dict[str, float]:
        model.train()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}  # per term: some are logged only when a batch measures them (acc_rank)
        seed = cfg.seed * 1000 + epoch
        ddp.seed_epoch(seed, par)
        loader = (make_loader(ds, batch_size=p.batch_size, workers=p.workers, shuffle=True, seed=seed,
                              drop_last=True) if par.world == 1 else
                  ddp.sharded_loader(ds, batch_size=p.batch_size, workers=p.workers, seed=seed, par=par,
                                     worker_init_fn=_worker_init if p.workers else None))
        for batch in loader:
            batch = move_batch(batch, dev)
            loss, terms = model(batch, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            method.on_step_end()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
        sched.step()
        sums, counts = ddp.merge_epoch_sums(sums, counts, par)
        ddp.sync_state(method, par, epoch)
        return {**{k: v / counts[k] for k, v in sums.items()}, "lr": opt.param_groups[0]["lr"]}

    history = run_epochs(epochs=p.epochs, ckpt=Checkpointer(persist_dir, key),
                         modules={"method": method, "optimizer": opt, "scheduler": sched},
                         step_epoch=step_epoch, tracker=tracker, main=par.main)
    if par.main:
        save_state_dict(Path(out_dir) / "backbone.pt", {"backbone": method.backbone.state_dict(),
                                                        "name": cfg.model.backbone})
    return {"epochs": len(history), "final_loss": history[-1]["loss"], "seconds": epoch_seconds(history),
            "history": history}


# ---------------------------------------------------------------- fine-tuning


class Classifier(nn.Module):
    """Backbone + linear head on the pooled feature (IIC: Linear(512, C))."""

    def __init__(self, backbone: nn.Module, n_classes: int, dropout: float = 0.0, normalise: bool = False) -> None:
        from vidssl.engine.protocols import Normalise

        super().__init__()
        self.normalise = Normalise() if normalise else nn.Identity()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.out_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
                    average: str = "logits") -> dict[str, Any]:
    """Video-level accuracy: each video's clip logits (or softmax outputs) averaged (METHODS.md §1.3).

    Raises:
        ValueError: if the classifier's output holds NaN or Inf (no accuracy is computed from it).
    """
    from vidssl.engine.protocols import check_logits, video_scores

    model.eval()
    dev = next(model.parameters()).device
    preds, labels = [], []
    for clips, label, _ in make_loader(ds, batch_size=batch_size, workers=workers, shuffle=False, seed=0):
        b, n = clips.shape[:2]
        logits = model(to_float(clips.flatten(0, 1).to(dev))).view(b, n, -1)
        check_logits(logits, "fine-tune test")
        preds.append(torch.stack([video_scores(v, average) for v in logits]).argmax(1).cpu())
        labels.append(label)
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
    """Fine-tune backbone + linear head on train.csv, test on test.csv, under ``finetune.protocol``.

    The protocol (``vidssl.engine.protocols``) sets the schedule's shape, model selection (the last epoch, or
    the lowest loss on val.csv), augmentation, dropout, clip geometry, test views, averaging and normalisation.
    """
    from vidssl.engine.protocols import AugmentedClipDataset, build_scheduler, get_protocol, test_dataset

    ddp.require_single_process("finetune")
    tracker = tracker or NullTracker()
    seed_all(cfg.seed)
    lists_dir, f = Path(lists_dir), cfg.finetune
    proto = get_protocol(f.protocol)
    spec = proto.clip_spec(clip_spec(cfg))
    records = read_list(lists_dir / "train.csv")
    augmented = proto.flip or proto.jitter is not None
    train_ds = AugmentedClipDataset(records, spec, proto) if augmented else ClipDataset(records, spec)
    use_val = proto.select == "val_loss" or proto.schedule == "plateau"
    val_ds = None
    if use_val:
        val = read_list(lists_dir / "val.csv") if (lists_dir / "val.csv").is_file() else []
        if not val:
            raise ValueError(f"finetune.protocol {proto.name!r} selects on validation loss, but "
                             f"{lists_dir / 'val.csv'} holds no videos; set lists.val_videos (IIC: 800 on UCF101, "
                             "400 on HMDB51) or choose finetune.protocol: plain")
        val_ds = MultiClipDataset(val, spec, 1)
    model = Classifier(build_model_backbone(cfg), n_classes_of(lists_dir), dropout=proto.dropout,
                       normalise=proto.normalise)
    if init is not None:
        load_backbone(model.backbone, init)
    dev = device()
    model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=f.lr, momentum=f.momentum, weight_decay=f.weight_decay)
    sched = build_scheduler(proto, opt, f.epochs)
    key = config_key({"seed": cfg.seed, "model": cfg.model.model_dump(), "clip": cfg.clip.model_dump(),
                      "finetune": f.model_dump(), "list": file_digest(lists_dir / "train.csv"),
                      "frames": packs_fingerprint(r.frames_path for r in train_ds.records),
                      "init": file_digest(init) if init else None})
    best_path = Path(persist_dir) / "best.pt"

    def step_epoch(epoch: int) -> dict[str, float]:
        model.train()
        tot_loss, correct, seen = 0.0, 0, 0
        for clips, label, _ in make_loader(train_ds, batch_size=f.batch_size, workers=f.workers, shuffle=True,
                                           seed=cfg.seed * 1000 + epoch):
            clips, label = to_float(clips.to(dev, non_blocking=True)), label.to(dev)
            logits = model(clips)
            loss = F.cross_entropy(logits, label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot_loss += loss.item() * len(label)
            correct += int((logits.argmax(1) == label).sum())
            seen += len(label)
        out = {"train_loss": tot_loss / seen, "train_clip_acc": correct / seen, "lr": opt.param_groups[0]["lr"]}
        if val_ds is not None:
            out["val_loss"] = validation_loss(model, val_ds, batch_size=f.batch_size, workers=f.workers)
            # The best epoch's weights, kept beside the per-epoch checkpoint under the run's key, so a resumed
            # run compares with them and another run's never count.
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
    history = run_epochs(epochs=f.epochs, ckpt=Checkpointer(persist_dir, key),
                         modules={"model": model, "optimizer": opt, "scheduler": sched},
                         step_epoch=step_epoch, tracker=tracker)
    selected = len(history)
    if proto.select == "val_loss":
        best = load_state_dict(best_path)
        model.load_state_dict(best["model"])
        selected = int(best["epoch"])
    test_ds = test_dataset(proto, read_list(lists_dir / "test.csv"), spec, f.test_clips)
    t_eval = time.time()
    per_batch = 1 if proto.test == "dense" else max(1, f.batch_size // f.test_clips)
    result = evaluate_videos(model, test_ds, batch_size=per_batch, workers=f.workers, average=proto.average)
    save_state_dict(Path(out_dir) / "classifier.pt", {"model": model.state_dict(), "name": cfg.model.backbone})
    return {"test_accuracy": result["accuracy"], "pred": result["pred"], "true": result["true"],
            "epochs": len(history), "selected_epoch": selected, "protocol": proto.name,
            "seconds": epoch_seconds(history) + time.time() - t_eval, "history": history}
