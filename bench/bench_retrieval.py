"""Benchmark: retrieval ranking (``vidssl.evaluation.retrieval.topk_retrieval``) vs two baselines, same features.

- bare torch: L2-normalise, one ``queries @ gallery.T`` matmul, one ``torch.topk`` on the same device as ours
  (the floor; target: ours at most 1.2x its time, while holding at most ``chunk_mb`` of similarities instead of
  the whole matrix);
- the seeds' way: sklearn ``cosine_distances`` then a full ``np.argsort`` of every row, on the CPU as their code
  runs (VCOP/IIC retrieve_clips.py; goal: ours at least 20x faster at N = 10k).

Features are synthetic (D-dimensional class centres plus noise) and start in host memory as numpy arrays for
every way (a GPU way's time includes moving them there), so every way must give the same top-k; the script
checks that. Each way runs in its own subprocess and reports its peak resident memory above the features
themselves (Linux VmHWM, reset after the features are made) and, on a GPU, its peak GPU memory.

    python bench/bench_retrieval.py [--n 10000] [--queries 4000] [--dim 512] [--big 100000] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

KS = [1, 5, 10, 20, 50]


def features(n: int, n_q: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(101, dim)).astype(np.float32)
    gl, ql = rng.integers(0, 101, n), rng.integers(0, 101, n_q)
    g = centres[gl] + 4.0 * rng.normal(size=(n, dim)).astype(np.float32)
    q = centres[ql] + 4.0 * rng.normal(size=(n_q, dim)).astype(np.float32)
    return g, gl, q, ql


def _peak_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(way: str, n: int, n_q: int, dim: int, repeats: int, device: str) -> dict:
    import torch

    dev = torch.device(device)
    g, gl, q, ql = features(n, n_q, dim)
    if way == "bare":
        def fn() -> dict:
            gt, qt = torch.from_numpy(g).to(dev), torch.from_numpy(q).to(dev)
            s = torch.nn.functional.normalize(qt) @ torch.nn.functional.normalize(gt).T
            idx = torch.topk(s, max(KS), dim=1).indices.cpu().numpy()
            hits = gl[idx] == ql[:, None]
            return {k: float(hits[:, :k].any(1).mean()) for k in KS}
    elif way == "sklearn":
        from sklearn.metrics.pairwise import cosine_distances

        def fn() -> dict:
            idx = np.argsort(cosine_distances(q, g), axis=1)
            hits = gl[idx[:, : max(KS)]] == ql[:, None]
            return {k: float(hits[:, :k].any(1).mean()) for k in KS}
    else:
        from vidssl.evaluation.retrieval import topk_retrieval

        index = "faiss" if way == "faiss" else "exact"

        def fn() -> dict:
            return topk_retrieval(g, gl, q, ql, KS, index=index, device=dev)
    fn()  # warm-up: thread pools, allocator, CUDA context and kernels
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS: the peak from here on is the ranking's
    base = _rss_mb()
    gpu = dev.type == "cuda" and way in ("bare", "ours")
    if gpu:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        gpu_base = torch.cuda.memory_allocated(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        acc = fn()  # every way ends with its top-k in host memory, so no device work is left pending here
        times.append(time.perf_counter() - t0)
    out = {"seconds": min(times), "peak_mb": _peak_mb() - base, "acc": {str(k): v for k, v in acc.items()}}
    if gpu:
        out["gpu_peak_mb"] = (torch.cuda.max_memory_allocated(dev) - gpu_base) / 2**20
    return out


def spawn(way: str, n: int, n_q: int, dim: int, repeats: int, device: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", way, "--n", str(n), "--queries", str(n_q), "--dim",
                          str(dim), "--repeats", str(repeats), "--device", device], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _where(way: str, device: str) -> str:
    return "cpu" if way in ("sklearn", "faiss") else device


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000, help="gallery videos")
    ap.add_argument("--queries", type=int, default=4_000, help="query videos")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--big", type=int, default=100_000, help="a larger gallery for ours alone (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto", help="where ours and bare torch rank: auto (cuda if present), "
                    "cpu, cuda")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    import torch

    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_retrieval: --device cuda, but torch sees no CUDA device; use --device cpu")
    if a.one:
        print(json.dumps(run_one(a.one, a.n, a.queries, a.dim, a.repeats, a.device)))
        return
    gpu = f", {torch.cuda.get_device_name(0)}" if a.device.startswith("cuda") else ""
    print(f"gallery {a.n} x queries {a.queries} x {a.dim}-d, ours and bare torch on {a.device}{gpu}, "
          f"torch threads {torch.get_num_threads()}, best of {a.repeats}")
    res = {}
    ways = ["bare", "ours", "sklearn"]
    try:
        import faiss  # noqa: F401
        ways.insert(2, "faiss")
    except ImportError:
        print("faiss not installed: its row is skipped")
    for way in ways:
        res[way] = spawn(way, a.n, a.queries, a.dim, 1 if way == "sklearn" else a.repeats, a.device)
        r = res[way]
        gpu_peak = f"   GPU peak +{r['gpu_peak_mb']:8.1f} MB" if "gpu_peak_mb" in r else ""
        print(f"  {way:8s} ({_where(way, a.device):4s}) {r['seconds']:8.3f} s   peak +{r['peak_mb']:8.1f} MB"
              f"{gpu_peak}   top-1 {r['acc']['1']:.4f}")
    same = all(res[w]["acc"] == res["ours"]["acc"] for w in ways)
    print(f"same top-k accuracies in every way: {same}")
    print(f"ours / bare torch time: {res['ours']['seconds'] / res['bare']['seconds']:.2f}x (target <= 1.2x)")
    if "faiss" in res:
        print(f"faiss index / bare torch time: {res['faiss']['seconds'] / res['bare']['seconds']:.2f}x")
    print(f"speed-up over sklearn + argsort: {res['sklearn']['seconds'] / res['ours']['seconds']:.1f}x "
          "(target >= 20x)")
    if a.big:
        big_q = a.queries
        r = spawn("ours", a.big, big_q, a.dim, 1, a.device)
        whole = a.big * big_q * 4 / 2**20
        gpu_peak = f", GPU peak +{r['gpu_peak_mb']:.0f} MB" if "gpu_peak_mb" in r else ""
        print(f"gallery {a.big} x queries {big_q}: ours {r['seconds']:.2f} s, peak +{r['peak_mb']:.0f} MB{gpu_peak} "
              f"(the whole similarity matrix alone would be {whole:.0f} MB)")


if __name__ == "__main__":
    main()
