"""Measurement (not a speed benchmark): how much MLFO's per-frame colour adds to a clip's frame-to-frame change.

MLFO draws grey and colour jitter for every frame on its own (``pretrain.mlfo.colour: frame``, its code). The
temporal signal a clip carries is what changes between its frames; per-frame colour adds a change of its own.
This prints the mean absolute frame-to-frame difference of MLFO's clips (pixels in [0, 1]) with crop only, and
the factor that colour drawn per clip and per frame multiply it by: on the embedded MotionShapes data at the
report's geometry (8 frames, 28 px) and on real UCF101 clips at MLFO's (16 frames, 112 px; decoded here from
``--real``, the shared sample of the dataset). Where the factor is large, colour flicker, not motion, is most of
what differs between a clip's frames. Results: bench/RESULTS.md, session 20.

    python bench/colour_flicker.py [--lists data/lists] [--real ../shared/data/real/ucf101/videos]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from vidssl.data.augment import AugmentSpec
from vidssl.data.clips import ClipSpec, VideoRecord, read_list
from vidssl.data.decode import decode_frames
from vidssl.data.store import write_pack
from vidssl.methods.mlfo import MLFODataset


def frame_change(clip: torch.Tensor) -> float:
    """Mean |x[t+1] - x[t]| of a uint8 3×T×H×W clip, on the [0, 1] scale."""
    x = clip.float() / 255
    return (x[:, 1:] - x[:, :-1]).abs().mean().item()


def measure(records: list[VideoRecord], spec: ClipSpec, draws: int = 3) -> dict[str, float]:
    """Mean frame change of MLFO's two local clips over ``draws`` samples of every video, per augmentation."""
    out = {}
    for name, per_frame in (("crop only", None), ("colour per clip", False), ("colour per frame", True)):
        ds = MLFODataset(records, spec, flip=False, per_frame_colour=bool(per_frame))
        if per_frame is None:  # MLFO's crop alone: the change the video itself carries
            ds.augment_spec = AugmentSpec(crop=spec.crop, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3))
        torch.manual_seed(0)
        out[name] = float(np.mean([frame_change(c) for i in range(len(records)) for _ in range(draws)
                                   for c in ds[i][:2]]))
    return out


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


if __name__ == "__main__":
    main()
