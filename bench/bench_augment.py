"""Benchmark: MLFO's per-frame colour augmentation, frame by frame (baseline) vs frames batched per op.

Colour only (float clip in, float clip out): the crop and resize before it run the same code either way.

MLFO jitters colour and greys each frame on its own draw. The plain way runs the colour ops once per frame (4
ops, the hue shift alone ~40 tensor calls, on a 1-frame tensor); ``augment_clip`` now draws the same numbers,
then on small frames applies each op to all frames that use it at the same position of their op order (at most
16 calls per clip), and on large ones goes frame by frame as before. Outputs are bit-identical
(tests/test_augment.py); this measures the time, in the same run, on one thread (what a DataLoader worker
uses), for the demo's 28 px clips and the paper's 112 px.

    python bench/bench_augment.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch

from vidssl.data.augment import _colour
from vidssl.methods.mlfo import mlfo_augment_spec


def frame_by_frame(x: torch.Tensor, spec, rng: np.random.Generator) -> torch.Tensor:
    """The baseline: every frame through the colour ops on its own (how per-frame colour ran before)."""
    return torch.cat([_colour(x[:, i : i + 1], spec, rng) for i in range(x.shape[1])], dim=1)


def clips_per_second(fn, seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| clip (3×T×S×S), colour only | frame by frame (baseline) clips/s | batched clips/s | speed-up |")
    print("|---|---|---|---|")
    for t, s in ((8, 28), (16, 28), (16, 112)):
        spec = mlfo_augment_spec(s, flip=False)
        x = torch.rand(3, t, s, s)
        rng = np.random.default_rng(0)
        base = clips_per_second(partial(frame_by_frame, x, spec, rng), args.seconds)
        new = clips_per_second(partial(_colour, x, spec, rng, per_frame=True), args.seconds)
        print(f"| 3×{t}×{s}×{s} | {base:.1f} | {new:.1f} | {new / base:.2f}x |")


if __name__ == "__main__":
    main()
