"""Benchmark: each method's augmentation, batched on the training device vs per sample in a loader worker.

Baseline (the per-sample worker path): every clip of a sample through ``vidssl.data.augment.augment_clip``,
one sample at a time, as the methods' datasets did in their DataLoader workers (one thread each), then the
conversion to float the training loop did on the device. Batched: the
method's own ``make_augment`` on a whole batch of the uint8 clips its dataset now yields, on the device (here
the CPU, also one thread, so the ratio is per core; on a GPU the batched path runs there and the workers only
decode). Both start from the same decoded uint8 frames, so decoding is not
timed. Clips/s counts the views a method trains on (IIC 1, SimCLR 2, DualVar/BE/MLFO 3, VCOP 3 per sample).

    python bench/bench_augment.py [--seconds 2] [--scale demo|paper|both] [--methods iic,dualvar,...]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from vidssl.config import Params, parse_params
from vidssl.data.augment import AugmentSpec, augment_clip
from vidssl.data.clips import ClipSpec, to_float
from vidssl.methods.be import be_augment_spec, be_params
from vidssl.methods.contrastive import Contrastive, augment_spec
from vidssl.methods.dualvar import _params as dualvar_params
from vidssl.methods.dualvar import full_transform
from vidssl.methods.mlfo import mlfo_augment_spec, split_clips
from vidssl.methods.params_mlfo import MLFOParams
from vidssl.methods.registry import build_method
from vidssl.models import build_backbone

METHODS = ("iic", "simclr", "dualvar", "be", "mlfo", "vcop")
SCALES = {  # frames, loader frame size (H, W), crop, batch
    "demo": (8, (32, 42), 28, 16),
    "paper": (16, (128, 171), 112, 16),
}


def sample_tensors(name: str, frames: int, hw: tuple[int, int], g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """One sample's uint8 clip tensors as the method's dataset now yields them (frames only, uncropped)."""

    def clip(t: int = frames) -> torch.Tensor:
        return torch.randint(0, 256, (3, t, *hw), generator=g, dtype=torch.uint8)

    if name in ("simclr", "dualvar", "be"):
        return clip(), clip()
    if name == "mlfo":
        return (clip(2 * frames),)
    if name == "vcop":
        return (torch.stack([clip() for _ in range(3)]),)
    return (clip(),)


def per_sample(name: str, cfg: Params, crop: int) -> Callable[[tuple[torch.Tensor, ...], np.random.Generator], list]:
    """The per-sample worker path of ``name``: its clips through ``augment_clip`` as its dataset used to."""
    plain = AugmentSpec(crop=crop)
    if name == "simclr":
        spec = augment_spec(Contrastive.params(cfg).model_copy(), crop)
        return lambda s, rng: [augment_clip(s[0], spec, rng), augment_clip(s[1], spec, rng)]
    if name == "dualvar":
        p = dualvar_params(cfg)
        full = full_transform(crop, p)
        return lambda s, rng: [augment_clip(s[0], plain if rng.random() < p.crop_only_p else full, rng),
                               augment_clip(s[1], full, rng), augment_clip(s[0], full, rng)]
    if name == "be":
        spec = be_augment_spec(be_params(cfg), crop)
        return lambda s, rng: [augment_clip(s[0], spec, rng), augment_clip(s[0], spec, rng),
                               augment_clip(s[1], spec, rng)]
    if name == "mlfo":
        p = getattr(cfg.pretrain, "mlfo", None) or MLFOParams()
        spec = mlfo_augment_spec(crop, p.flip, p.colour == "frame")
        return lambda s, rng: [augment_clip(c, spec, rng) for c in split_clips(s[0], s[0].shape[1] // 2)]
    if name == "vcop":
        return lambda s, rng: [augment_clip(c, plain, rng) for c in s[0]]
    return lambda s, rng: [augment_clip(s[0], plain, rng)]


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Clips per second of ``fn`` (which returns how many clips it made), after one warm-up call."""
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        n += fn()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--scale", choices=[*SCALES, "both"], default="both")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cfg = parse_params({})  # every method's own defaults (params.yaml's demo overrides aside)
    print(f"device {dev}, {args.threads} thread(s); per-sample path on 1 thread, as a loader worker runs it")
    print("| scale | method | per-sample worker path (baseline) clips/s | batched on the device clips/s | "
          "speed-up |")
    print("|---|---|---|---|---|")
    for scale in SCALES if args.scale == "both" else [args.scale]:
        frames, hw, crop, bs = SCALES[scale]
        spec = ClipSpec(frames=frames, stride=1, resize=min(hw), crop=crop)
        for name in args.methods.split(","):
            g = torch.Generator().manual_seed(0)
            samples = [sample_tensors(name, frames, hw, g) for _ in range(bs)]
            method = build_method(name, build_backbone("tiny", width=4), cfg, n_samples=bs)
            augment = method.make_augment(spec, cfg)
            base_fn, rng = per_sample(name, cfg, crop), np.random.default_rng(0)
            k = 0

            def baseline() -> int:
                nonlocal k
                k = (k + 1) % bs
                torch.set_num_threads(1)
                views = base_fn(samples[k], rng)
                torch.set_num_threads(args.threads)
                for v in views:  # what the training loop then did to the collated clips on the device
                    to_float(v.to(dev))
                return len(views)

            batch = tuple(torch.stack([s[i] for s in samples]) for i in range(len(samples[0])))

            def batched() -> int:
                out = augment(tuple(b.to(dev) for b in batch), method.augment_generator)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                return sum(len(o) if o.dim() == 5 else o.shape[0] * o.shape[1] for o in out
                           if torch.is_tensor(o) and o.dim() >= 5)

            old, new = rate(baseline, args.seconds), rate(batched, args.seconds)
            print(f"| {scale} {frames}×{hw[0]}×{hw[1]} -> {crop} | {name} | {old:.1f} | {new:.1f} | "
                  f"{new / old:.2f}x |")


if __name__ == "__main__":
    main()
