"""Linear probe: a frozen backbone's video features, computed once, and a linear classifier trained on them.

The protocol most SSL papers now report beside fine-tuning. Every video's feature is the backbone's pooled
feature averaged over ``finetune.test_clips`` evenly spaced centre clips (the fine-tune test views); train and
test features are computed once and cached (``features.npz``), then the head trains on them alone, so an epoch
costs a matrix product, not a pass of the backbone. The head follows CoCLR's feature probe
(eval/feature_linear_probe.py): BatchNorm without affine parameters then Linear, SGD lr 1.0, momentum 0.9,
weight decay 1e-3, batch 1024, lr x0.1 at 60% and 80% of ``finetune.epochs``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidssl.progress import Progress

LR, WEIGHT_DECAY, MOMENTUM, BATCH, MILESTONES = 1.0, 1e-3, 0.9, 1024, (0.6, 0.8)


@torch.no_grad()
def backbone_features(backbone: nn.Module, records: Sequence[Any], spec: Any, n_clips: int, *,
                      batch_size: int = 4, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N×D pooled backbone features averaged over ``n_clips`` clips, N labels), backbone in eval mode."""
    from vidssl.data.clips import MultiClipDataset, to_float
    from vidssl.engine.train import make_loader

    backbone.eval()
    dev = next(backbone.parameters()).device
    feats, labels = [], []
    ds = MultiClipDataset(records, spec, n_clips)
    loader = make_loader(ds, batch_size=batch_size, workers=workers, shuffle=False, seed=0)
    bar = Progress(len(loader), f"features of {len(ds)} videos", unit="batch", report_end=True)
    for clips, label, _ in loader:
        b, n = clips.shape[:2]
        feats.append(backbone(to_float(clips.flatten(0, 1).to(dev))).view(b, n, -1).mean(1).float().cpu())
        labels.append(label)
        bar.update(1)
    bar.close()
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def probe_head(dim: int, n_classes: int) -> nn.Sequential:
    """CoCLR's feature probe: BatchNorm without affine parameters, then Linear."""
    # Cumulative BN statistics (momentum None): the features never change, so the running estimate is their
    # exact mean; the default 0.1 momentum still lags far behind after the few steps a small set gives.
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, momentum=None), nn.Linear(dim, n_classes))


def probe_classifier(backbone: nn.Module, head_state: dict[str, Any], n_classes: int) -> nn.Sequential:
    """A frozen backbone and its trained probe head as one clip classifier (eval mode).

    The head is affine in eval mode, so the mean of its logits over a video's clips is its logit of the mean
    feature, the score :func:`linear_probe` gives: averaging logits over the same clips reproduces the probe.
    """
    head = probe_head(backbone.out_dim, n_classes)
    head.load_state_dict(head_state)
    return nn.Sequential(backbone, head).eval()


def train_linear(train_x: np.ndarray, train_y: np.ndarray, n_classes: int, epochs: int, seed: int,
                 ) -> tuple[nn.Module, list[dict[str, float]]]:
    """A BN + Linear head trained on cached features; returns it (eval mode) and per-epoch history."""
    torch.manual_seed(seed)
    x, y = torch.from_numpy(np.asarray(train_x, dtype=np.float32)), torch.from_numpy(np.asarray(train_y)).long()
    head = probe_head(x.shape[1], n_classes)
    opt = torch.optim.SGD(head.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    miles = sorted({max(1, round(m * epochs)) for m in MILESTONES})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, miles, gamma=0.1)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(epochs):
        head.train()
        t0 = time.time()
        order = torch.randperm(len(x), generator=gen)
        tot, correct = 0.0, 0
        for i in range(0, len(x), BATCH):
            idx = order[i:i + BATCH]
            if len(idx) < 2:  # BatchNorm needs two samples; a last batch of one is skipped
                continue
            logits = head(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
        sched.step()
        history.append({"train_loss": tot / len(x), "train_clip_acc": correct / len(x),
                        "lr": opt.param_groups[0]["lr"], "epoch_seconds": time.time() - t0})
    return head.eval(), history


def linear_probe(cfg: Any, lists_dir: Path, weights: Path | None, out_dir: Path) -> dict[str, Any]:
    """Linear-probe accuracy of a frozen backbone (``weights`` None = random init with ``cfg.seed``).

    Raises:
        NonFiniteFeatures: if a video's feature holds NaN or Inf (named), before the head trains.
    """
    from vidssl.data.clips import read_list, usable_records
    from vidssl.engine.train import build_model_backbone, clip_spec, device, load_backbone, n_classes_of, seed_all
    from vidssl.evaluation.retrieval import check_finite
    from vidssl.io import atomic_path

    seed_all(cfg.seed)
    f, spec = cfg.finetune, clip_spec(cfg)
    backbone = build_model_backbone(cfg)
    if weights is not None:
        load_backbone(backbone, weights)
    backbone.to(device())
    t0 = time.time()
    sets = {}
    # The head trains on the whole training split (pretrain.csv: no model is selected on validation videos, so
    # none are held out), as CoCLR's probe takes every train video; it is tested on the test split.
    for split, file in (("train", "pretrain.csv"), ("test", "test.csv")):
        records = usable_records(read_list(Path(lists_dir) / file), spec)
        feats, labels = backbone_features(backbone, records, spec, f.test_clips, workers=f.workers)
        name = "random init" if weights is None else str(weights)
        check_finite(feats, f"linear-probe {split} features of {name}", [r.video_id for r in records])
        sets[split] = (feats, labels)
    extract_s = time.time() - t0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "features.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **{f"{s}_{k}": v for s, (x, y) in sets.items() for k, v in (("x", x), ("y", y))})
    head, history = train_linear(*sets["train"], n_classes_of(lists_dir), f.epochs, cfg.seed)
    from vidssl.engine.checkpoint import save_state_dict

    save_state_dict(out_dir / "classifier.pt", {"head": head.state_dict(), "name": cfg.model.backbone})
    with torch.no_grad():
        logits = head(torch.from_numpy(sets["test"][0]))
    pred, true = logits.argmax(1).numpy(), sets["test"][1]
    return {"test_accuracy": float((pred == true).mean()), "pred": pred.tolist(), "true": true.tolist(),
            "epochs": len(history), "protocol": "linear", "feature_seconds": extract_s,
            "seconds": extract_s + sum(h["epoch_seconds"] for h in history), "history": history}
