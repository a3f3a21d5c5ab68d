"""What a model uses: motion or the static scene.

**Temporal sensitivity.** The test clips are shown as they are, with their frames shuffled (one fixed random
order), reversed, or frozen to one repeated frame (the middle one), and retrieval top-1 (test queries against
the unchanged gallery) and fine-tune accuracy are measured each time. A model that reads motion drops when the
order goes; a model that reads the scene does not (on MotionShapes a reversed clip is its partner class, so a
motion model falls below chance there).

**Background bias.** On MotionShapes generated with ``synth.background_bias``, each class's training videos
share one background family while the test videos draw theirs freely. Test videos whose background is their own
class's training family ("biased") are compared with the others ("unbiased"): a scene model scores far better
on the first; the gap is the bias.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

VARIANTS = ("original", "shuffled", "reversed", "frozen")


def clip_transform(variant: str, frames: int, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The edit applied to every B×3×T×H×W test batch for ``variant`` (None for "original").

    Raises:
        ValueError: for an unknown variant.
    """
    if variant == "original":
        return None
    if variant == "reversed":
        return lambda x: x.flip(2)
    if variant == "frozen":
        return lambda x: x[:, :, x.shape[2] // 2: x.shape[2] // 2 + 1].expand_as(x).contiguous()
    if variant == "shuffled":
        perm = shuffled_order(frames, seed)
        return lambda x: x[:, :, perm]
    raise ValueError(f"unknown clip variant {variant!r}; choose from {list(VARIANTS)}")


def shuffled_order(frames: int, seed: int) -> torch.Tensor:
    """A fixed permutation of ``frames`` frame indices that moves every frame (a derangement, for frames > 1)."""
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(frames)
        if frames < 2 or not (perm == np.arange(frames)).any():
            return torch.from_numpy(perm)


def background_gap(pred: np.ndarray, true: np.ndarray, test_bg: list[str], train_labels: np.ndarray,
                   train_bg: list[str]) -> dict[str, float]:
    """Accuracy on test videos whose background is their class's most common training background ("biased")
    vs the rest ("unbiased"), and the gap between them; NaN for a group with no video."""
    family: dict[int, str] = {}
    for label in np.unique(train_labels):
        family[int(label)] = Counter(b for b, y in zip(train_bg, train_labels) if y == label).most_common(1)[0][0]
    biased = np.array([family.get(int(y)) == b for y, b in zip(true, test_bg)])
    hit = np.asarray(pred) == np.asarray(true)
    acc = {name: float(hit[mask].mean()) if mask.any() else float("nan")
           for name, mask in (("biased", biased), ("unbiased", ~biased))}
    return {**acc, "gap": acc["biased"] - acc["unbiased"], "n_biased": int(biased.sum()),
            "n_unbiased": int((~biased).sum())}


def diagnose(cfg: Any, lists_dir: Path, weights: Path | None, classifier: Path | None,
             synth_json: Path | None = None) -> dict[str, Any]:
    """Temporal sensitivity (retrieval top-1 and, given ``classifier``, fine-tune accuracy per clip variant) and,
    given a MotionShapes ``synth_json``, the background gap of both.

    Raises:
        NonFiniteFeatures / ValueError: on non-finite features or classifier output.
    """
    from vidssl.data.clips import read_list, usable_records
    from vidssl.engine.checkpoint import load_state_dict
    from vidssl.engine.protocols import get_protocol
    from vidssl.engine.train import (
        Classifier, build_model_backbone, clip_spec, device, evaluate_videos, load_backbone, n_classes_of, seed_all,
    )
    from vidssl.evaluation.factors import load_factors, video_key
    from vidssl.evaluation.retrieval import retrieval_hits, video_features
    from vidssl.methods.registry import build_method

    seed_all(cfg.seed)
    spec, r = clip_spec(cfg), cfg.retrieve
    gallery = usable_records(read_list(Path(lists_dir) / "pretrain.csv"), spec)
    test = usable_records(read_list(Path(lists_dir) / "test.csv"), spec)
    backbone = build_model_backbone(cfg)
    if weights is not None:
        load_backbone(backbone, weights)
    method = build_method(cfg.pretrain.method, backbone, cfg, n_samples=len(gallery)).to(device())
    kw = dict(n_clips=r.clips, feature=r.feature, merged=r.merged, workers=r.workers, view=r.view)
    g_feat, g_lab = video_features(method, gallery, spec, **kw)
    if r.center or r.protocol == "centred":
        g_feat = g_feat - g_feat.mean(0, keepdims=True)
    model, proto = None, None
    if classifier is not None:
        state = load_state_dict(classifier)
        if cfg.finetune.protocol == "linear":  # the probe's head on the frozen pretrained backbone
            from vidssl.evaluation.linear import probe_classifier

            frozen = build_model_backbone(cfg)
            if weights is not None:
                load_backbone(frozen, weights)
            model = probe_classifier(frozen, state["head"], n_classes_of(lists_dir))
        else:  # tested as the finetune stage tests it: the protocol's clip, test views and averaging
            proto = get_protocol(cfg.finetune.protocol)
            model = Classifier(build_model_backbone(cfg), n_classes_of(lists_dir), dropout=proto.dropout,
                               normalise=proto.normalise, residual=proto.residual)
            model.load_state_dict(state["model"])
        model.to(device())
    factors = load_factors(synth_json) if synth_json is not None and Path(synth_json).is_file() else None
    out: dict[str, Any] = {"retrieval_top1": {}, "finetune_accuracy": {}, "background": {}}
    for variant in VARIANTS:
        tf = clip_transform(variant, spec.frames, cfg.seed)
        q_feat, q_lab = video_features(method, test, spec, transform=tf, **kw)
        if r.center or r.protocol == "centred":
            q_feat = q_feat - q_feat.mean(0, keepdims=True)
        hits, idx = retrieval_hits(g_feat, g_lab, q_feat, q_lab, 1, index=r.index, chunk_bytes=r.chunk_mb * 2**20)
        out["retrieval_top1"][variant] = float(hits[:, 0].mean())
        preds = {"retrieval": g_lab[idx[:, 0]]}
        if model is not None:
            res = _classify(model, test, spec, cfg, variant, proto, evaluate_videos)
            out["finetune_accuracy"][variant] = res["accuracy"]
            preds["finetune"] = np.asarray(res["pred"])
        if variant == "original" and factors is not None:
            bg = lambda recs: [factors[video_key(v.video_id)]["background"] for v in recs]  # noqa: E731
            for name, pred in preds.items():
                out["background"][name] = background_gap(pred, q_lab, bg(test), g_lab, bg(gallery))
    return out


def _classify(model: Any, test: list, spec: Any, cfg: Any, variant: str, proto: Any, evaluate_videos: Any) -> dict:
    """The fine-tuned classifier on the test videos with ``variant``'s edit applied to every clip before the model.

    ``proto`` (a fine-tune protocol) gives the views and scoring of the finetune stage's test: its clip geometry,
    test clips or dense windows, logit or softmax averaging, so the unedited row is the stage's accuracy. None (a
    linear probe): ``finetune.test_clips`` clips at ``spec``, logits averaged, as the probe scores.
    """
    from vidssl.data.clips import MultiClipDataset
    from vidssl.engine.protocols import test_dataset

    f = cfg.finetune
    if proto is None:
        ds, average = MultiClipDataset(test, spec, f.test_clips), "logits"
        per_batch = max(1, f.batch_size // f.test_clips)
    else:
        spec = proto.clip_spec(spec)
        ds, average = test_dataset(proto, test, spec, f.test_clips), proto.average
        per_batch = 1 if proto.test == "dense" else max(1, f.batch_size // f.test_clips)
    tf = clip_transform(variant, spec.frames, cfg.seed)
    wrapped = _Transformed(model, tf) if tf is not None else model
    return evaluate_videos(wrapped, ds, batch_size=per_batch, workers=f.workers, average=average)


class _Transformed(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, tf: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model, self.tf = model, tf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.tf(x))


def diagnose_table(result: dict[str, Any]) -> str:
    """The diagnostics as Markdown: one row per clip variant, then the background gap."""
    lines = ["| test clips | retrieval top-1 | fine-tune acc |", "|---|---|---|"]
    for v in VARIANTS:
        ret = result["retrieval_top1"].get(v)
        ft = result["finetune_accuracy"].get(v)
        lines.append(f"| {v} | {'–' if ret is None else f'{100 * ret:.1f}'} | "
                     f"{'–' if ft is None else f'{100 * ft:.1f}'} |")
    if result["background"]:
        lines += ["", "| predictor | biased test acc | unbiased test acc | gap (points) | videos (biased / not) |",
                  "|---|---|---|---|---|"]
        for name, g in result["background"].items():
            lines.append(f"| {name} | {100 * g['biased']:.1f} | {100 * g['unbiased']:.1f} | {100 * g['gap']:+.1f} | "
                         f"{g['n_biased']} / {g['n_unbiased']} |")
    return "\n".join(lines)


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The diagnostics as flat MLflow metric names (``retrieval_top1.shuffled``, ``background.finetune.gap``)."""
    out = {f"retrieval_top1.{k}": v for k, v in result["retrieval_top1"].items()}
    out |= {f"finetune_accuracy.{k}": v for k, v in result["finetune_accuracy"].items()}
    for name, g in result["background"].items():
        out |= {f"background.{name}.{k}": float(v) for k, v in g.items() if not np.isnan(v)}
    return out
