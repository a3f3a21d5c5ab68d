"""GPU benchmark (run through bench/gpu.sh): clips/s and peak memory of pretraining steps in bf16 (vidssl:
autocast backbone, channels-last-3d) vs fp32 on the default contiguous layout (the seeds' loop style, the raw
baseline), for IIC, MoCo and BE on R3D-18 and I3D at 16x112x112; then the data-wait fraction of vidssl's own
pretraining loop reading frames from the store (JPEG packs, loader workers). Prints one summary table.

    python bench/bench_gpu.py [--device cuda] [--steps 10] [--batch 16] [--workers 8]
    python bench/bench_gpu.py --device cpu --tiny     # the same code path on a CPU, in a minute or two
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import default_collate


def _cfg(method: str, backbone: str, args: argparse.Namespace, precision: str, epochs: int = 1) -> Any:
    from vidssl.config import parse_params

    frames, size, resize = (8, 32, 40) if args.tiny else (16, 112, 128)
    return parse_params({
        "seed": 0, "model": {"backbone": backbone, "width": 8},
        "clip": {"frames": frames, "stride": 1, "resize": resize, "crop": size},
        "pretrain": {"method": method, "epochs": epochs, "batch_size": args.batch, "workers": args.workers,
                     "lr": 0.001, "milestones": [], "iic": {"nce_k": 1024}},
        "train": {"precision": precision, "checkpoint_minutes": 0},
    })


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def step_rate(method_name: str, backbone: str, args: argparse.Namespace, records: list[Any], *, fast: bool
              ) -> tuple[float, float | None]:
    """(clips/s, peak GiB) of ``args.steps`` timed training steps on one fixed batch already on the device.

    ``fast``: vidssl's bf16 autocast backbone and channels-last-3d; else fp32 on the contiguous layout.
    """
    from vidssl.engine.precision import Precision
    from vidssl.engine.train import build_model_backbone, clip_spec, make_optimizer, move_batch
    from vidssl.methods.registry import build_method

    dev = torch.device(args.device)
    cfg = _cfg(method_name, backbone, args, "bf16" if fast else "fp32")
    torch.manual_seed(0)
    method = build_method(method_name, build_model_backbone(cfg), cfg, n_samples=len(records)).to(dev)
    if fast:
        Precision("bf16", dev).apply(method)
    else:  # the seeds' loop: every backbone (online and key encoders) on the default contiguous layout
        from vidssl.models.base import Backbone

        for m in method.modules():
            if isinstance(m, Backbone):
                m._check_input = lambda x: x.contiguous()  # type: ignore[method-assign]
    # The batch as vidssl's loop gets it: the dataset's own collate, uint8 clips on the device; each timed step
    # then makes the method's views there (batched augmentation) before the forward pass, as the loop does.
    ds = method.make_dataset(records, clip_spec(cfg), cfg)
    collate = getattr(ds, "collate", None) or default_collate
    frames = move_batch(collate([ds[i % len(ds)] for i in range(args.batch)]), dev, floats=False)
    augment = method.make_augment(clip_spec(cfg), cfg)
    opt = make_optimizer([p for p in method.parameters() if p.requires_grad], cfg.pretrain)
    method.train()
    times = []
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    for i in range(args.steps + 2):  # two warm-up steps (kernel selection, lazy buffers)
        _sync(dev)
        t0 = time.perf_counter()
        batch = augment(frames, method.augment_generator)
        loss, _ = method(batch, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.on_step_end()
        _sync(dev)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    del method, opt, batch, frames
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return args.batch / statistics.median(times), peak


def data_wait(method_name: str, backbone: str, args: argparse.Namespace, lists: Path, state: Path
              ) -> tuple[float, float]:
    """The data-wait fraction of vidssl's pretraining (train.precision auto: bf16 on a GPU) over one epoch of
    frames from the store: in all, and after the first batch (the loader's start, a fixed cost per epoch)."""
    from vidssl.engine.train import pretrain

    cfg = _cfg(method_name, backbone, args, "auto", epochs=1)
    last = pretrain(cfg, lists, state, state / "out")["history"][-1]
    return float(last["data_wait"]), float(last["data_wait_steady"])


def _lists(folder: Path, args: argparse.Namespace, repeat: int) -> tuple[Path, list[Any]]:
    """Noise videos at the clip geometry as JPEG packs (the frame store), listed ``repeat`` times."""
    from vidssl.engine.plan import _synthetic_lists

    records = _synthetic_lists(folder / "frames", _cfg("iic", "tiny", args, "fp32"), args.videos)
    lists = folder / "lists"
    lists.mkdir()
    with open(lists / "pretrain.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "frames_path", "n_frames", "label", "class_name", "split"])
        w.writerows([f"{r.video_id}_{k}", r.frames_path, r.n_frames, r.label, "c", "pretrain"]
                    for k in range(repeat) for r in records)
    return lists, records


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny backbone, 8x32x32 clips (a CPU check of the script)")
    ap.add_argument("--methods", default="iic,moco,be")
    ap.add_argument("--backbones", default="r3d18,i3d")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--videos", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=4, help="list each video this often (one epoch = the loader run)")
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device; run with --device cpu --tiny to check the script")
    backbones = ["tiny"] if args.tiny else args.backbones.split(",")
    methods = args.methods.split(",")
    t_start = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lists, records = _lists(Path(tmp), args, args.repeat)
        print(f"frame store: {args.videos} videos x {args.repeat} list rows, made in {time.time() - t_start:.0f} s",
              flush=True)
        for backbone in backbones:
            for m in methods:
                fp32, mem32 = step_rate(m, backbone, args, records, fast=False)
                bf16, mem16 = step_rate(m, backbone, args, records, fast=True)
                wait = data_wait(m, backbone, args, lists, Path(tmp) / f"state-{backbone}-{m}")
                rows.append((backbone, m, fp32, bf16, mem32, mem16, wait))
                print(f"  {backbone} {m}: fp32 {fp32:.1f} clips/s, bf16 {bf16:.1f} clips/s, data wait "
                      f"{100 * wait[0]:.0f}% ({100 * wait[1]:.0f}% after the first batch) "
                      f"({time.time() - t_start:.0f} s)", flush=True)
    gib = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    clip = "8x32x32" if args.tiny else "16x112x112"
    print(f"\nvidssl GPU benchmark: {dev}, batch {args.batch} clips of {clip}, {args.steps} timed steps, "
          f"torch {torch.__version__}, {time.time() - t_start:.0f} s")
    print("| backbone | method | fp32 contiguous clips/s | bf16 channels-last clips/s | speed-up | "
          "fp32 peak GiB | bf16 peak GiB | data wait (vidssl loop, store) | after the first batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for backbone, m, fp32, bf16, mem32, mem16, wait in rows:
        print(f"| {backbone} | {m} | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f}x | {gib(mem32)} | {gib(mem16)} | "
              f"{100 * wait[0]:.0f}% | {100 * wait[1]:.0f}% |")


if __name__ == "__main__":
    main()
