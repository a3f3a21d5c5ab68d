"""Measurement (not a speed benchmark): how much MLFO's per-frame colour adds to a clip's frame-to-frame change.

MLFO draws grey and colour jitter for every frame on its own (``pretrain.mlfo.colour: frame``, its code). The
temporal signal a clip carries is what changes between its frames; per-frame colour adds a change of its own.
This prints the mean absolute frame-to-frame difference of MLFO's clips (pixels in [0, 1]) with crop only, and
the factor that colour drawn per clip and per frame multiply it by: on the embedded MotionShapes data at the
report's geometry (8 frames, 28 px) and on real UCF101 clips at MLFO's (16 frames, 112 px; decoded here from
``--real``, the shared sample of the dataset). Where the factor is large, colour flicker, not motion, is most of
what differs between a clip's frames. Results: bench/RESULTS.md, section bench/colour_flicker.py.

A second table asks the same of the Gaussian blur that DualVar and the SimCLR/MoCo/CMC cores draw per clip
(σ ~ U(0.1, 2) pixels, the code's at 112 px, applied unscaled to the demo's 28 px crops): the fraction of the
frame change it leaves. Were it much lower on MotionShapes than on UCF101, the unscaled σ would blur away more
motion than the methods' code does on its own data (measured: it is not).

    python bench/colour_flicker.py [--lists data/lists] [--real ../shared/data/real/ucf101/videos]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from vidssl.data.augment import AugmentSpec, _blur, augment_clip
from vidssl.data.clips import ClipDataset, ClipSpec, VideoRecord, random_clip, read_list
from vidssl.data.decode import decode_frames
from vidssl.data.store import write_pack
from vidssl.methods.base import sample_views
from vidssl.methods.mlfo import MLFODataset, mlfo_augment, mlfo_augment_spec


def frame_change(clip: torch.Tensor) -> float:
    """Mean |x[t+1] - x[t]| of a uint8 3×T×H×W clip, on the [0, 1] scale."""
    x = clip.float() / 255
    return (x[:, 1:] - x[:, :-1]).abs().mean().item()


def measure(records: list[VideoRecord], spec: ClipSpec, draws: int = 3) -> dict[str, float]:
    """Mean frame change of MLFO's two local clips over ``draws`` samples of every video, per augmentation."""
    out = {}
    ds = MLFODataset(records, spec)
    for name, per_frame in (("crop only", None), ("colour per clip", False), ("colour per frame", True)):
        aug = (AugmentSpec(crop=spec.crop, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)) if per_frame is None
               else mlfo_augment_spec(spec.crop, flip=False, per_frame_colour=per_frame))
        augment, g = mlfo_augment(aug), torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        out[name] = float(np.mean([frame_change(c) for i in range(len(records)) for _ in range(draws)
                                   for c in sample_views(augment, ds[i], g)[:2]]))
    return out


def blur_kept(records: list[VideoRecord], spec: ClipSpec, stride: int, draws: int = 3) -> float:
    """Mean fraction of a crop-only clip's frame change left after a per-clip blur with σ ~ U(0.1, 2)."""
    rng = np.random.default_rng(0)
    ds = ClipDataset(records, spec)
    kept = []
    for i, rec in enumerate(records):
        for _ in range(draws):
            idx = random_clip(rec.n_frames, spec.frames, stride, rng)
            frames = sorted(set(idx))
            video = ds.load(i, frames)[:, [frames.index(f) for f in idx]]
            clip = augment_clip(video, AugmentSpec(crop=spec.crop), rng)
            blurred = _blur(clip.float(), float(rng.uniform(0.1, 2.0))).round().clamp(0, 255)
            kept.append(frame_change(blurred) / max(frame_change(clip), 1e-9))
    return float(np.mean(kept))


def real_records(folder: Path, work: Path, limit: int) -> list[VideoRecord]:
    """Decode up to ``limit`` videos under ``folder`` (short side 128, 25 fps) into frame packs in ``work``."""
    records = []
    for k, video in enumerate(sorted(folder.rglob("*.avi"))[:limit]):
        frames = list(decode_frames(video, short_side=128, fps=25, quality=2, warnings=[]))
        pack = work / f"{k}.zip"
        write_pack(pack, frames)
        records.append(VideoRecord(video.stem, str(pack), len(frames), 0))
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lists", type=Path, default=Path("data/lists"))
    ap.add_argument("--real", type=Path, default=Path("../shared/data/real/ucf101/videos"))
    ap.add_argument("--videos", type=int, default=60)
    args = ap.parse_args()
    rows = [("MotionShapes, 8 frames, 28 px", read_list(args.lists / "pretrain.csv")[: args.videos],
             ClipSpec(frames=8, stride=4, resize=32, crop=28))]
    with tempfile.TemporaryDirectory() as tmp:
        if args.real.is_dir():
            real = real_records(args.real, Path(tmp), args.videos)
            rows.append((f"UCF101, {len(real)} videos, 16 frames, 112 px", real,
                         ClipSpec(frames=16, stride=1, resize=128, crop=112)))
        print("| clips | frame change, crop only | x colour per clip | x colour per frame |\n|---|---|---|---|")
        for name, records, spec in rows:
            d = measure(records, spec)
            base = d["crop only"]
            print(f"| {name} | {base:.4f} | {d['colour per clip'] / base:.2f} | {d['colour per frame'] / base:.2f} |")
        # DualVar's geometry: stride 4 (ds) at both scales, 8 frames at 28 px and its own 16 at 112 px.
        print("\n| clips (stride 4) | frame change kept by a per-clip blur, σ ~ U(0.1, 2) px |")
        print("|---|---|")
        for name, records, spec in rows:
            spec = ClipSpec(frames=spec.frames, stride=4, resize=spec.resize, crop=spec.crop)
            print(f"| {name} | {blur_kept(records, spec, stride=4):.3f} |")


if __name__ == "__main__":
    main()
