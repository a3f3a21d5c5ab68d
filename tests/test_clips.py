"""Temporal samplers, clip-consistent crops and the datasets training reads."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vidssl.data.clips import (ClipDataset, ClipSpec, MultiClipDataset, clip_indices, linspace_clips, random_clip,
                               random_crop, read_list, resize_short, to_float, to_tensor, usable_records)
from vidssl.data.store import FramePack


def test_clip_indices_clamp_short_videos() -> None:
    assert clip_indices(0, 4, 2, 100) == [0, 2, 4, 6]
    assert clip_indices(5, 4, 1, 7) == [5, 6, 6, 6]  # the last frame repeats


def test_random_clip_stays_inside_and_is_consecutive() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        idx = random_clip(40, 16, 1, rng)
        assert idx[0] >= 0 and idx[-1] <= 39 and np.all(np.diff(idx) == 1)
    starts = {random_clip(40, 16, 1, rng)[0] for _ in range(500)}
    assert starts == set(range(25))  # every legal start is reachable


def test_linspace_clips_follow_the_vcop_rule() -> None:
    # VCOP/IIC: 16-frame clips centred at linspace(8, L-8, 10).
    clips = linspace_clips(100, 16, 1, 10)
    centres = np.linspace(8, 92, 10)
    assert [c[8] for c in clips] == [int(round(x)) for x in centres]
    assert all(len(c) == 16 and c[0] >= 0 and c[-1] <= 99 for c in clips)


def test_crop_is_the_same_window_for_every_frame() -> None:
    frame = np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    clip = to_tensor(np.repeat(frame[None], 8, axis=0))
    out = random_crop(clip, 20, np.random.default_rng(2))
    assert out.shape == (3, 8, 20, 20)
    assert all(torch.equal(out[:, 0], out[:, t]) for t in range(8))


def test_resize_short_keeps_aspect_and_dtype() -> None:
    clip = torch.zeros(3, 2, 40, 80, dtype=torch.uint8)
    out = resize_short(clip, 20)
    assert out.shape == (3, 2, 20, 40) and out.dtype == torch.uint8
    assert resize_short(clip, 40) is clip


def test_to_float_range() -> None:
    x = torch.tensor([0, 255], dtype=torch.uint8)
    assert to_float(x).tolist() == [0.0, 1.0]


def test_datasets_return_the_frames_they_claim(tiny_lists: Path) -> None:
    records = read_list(tiny_lists / "test.csv")
    spec = ClipSpec(frames=8, stride=2, resize=40, crop=40)
    clip, label, index = ClipDataset(records, spec)[0]
    assert clip.dtype == torch.uint8 and clip.shape == (3, 8, 40, 40) and index == 0
    assert label == records[0].label
    multi, _, _ = MultiClipDataset(records, spec, n_clips=3)[1]
    assert multi.shape == (3, 3, 8, 40, 40)
    expected = FramePack(records[1].frames_path).read(linspace_clips(records[1].n_frames, 8, 2, 3)[2])
    assert torch.equal(multi[2], to_tensor(expected))


def test_read_list_names_missing_columns(tmp_path: Path) -> None:
    bad = tmp_path / "train.csv"
    bad.write_text("video_id,label\nx,1\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_list(bad)
    with pytest.raises(FileNotFoundError, match="vidssl lists"):
        read_list(tmp_path / "none.csv")


# ---------------------------------------------------------------- the frame store at scale


_MANY_PACKS = r"""
import resource, sys, tracemalloc, zipfile
from pathlib import Path
import numpy as np
from vidssl.data.store import OPEN_PACKS, FramePack, encode_jpeg, frame_name

root, n = Path(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
packs = []
for i in range(n):  # plain ZipFile writes: the atomic writer's fsync-free rename still costs 3 ms a pack here
    path = root / f"{i:05d}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for t in range(3):
            zf.writestr(frame_name(t), encode_jpeg(np.full((8, 8, 3), (i + t) % 256, np.uint8)))
    packs.append(FramePack(path))
peak, held = 0, {}
for pack in packs:  # a Path caches its text and hash on first use: the dataset's index, not what reading holds
    str(pack.path), hash(pack.path)
tracemalloc.start()
for i, pack in enumerate(packs):
    frames = pack.read([2, 0])
    assert frames.shape == (2, 8, 8, 3) and abs(int(frames[0, 0, 0, 0]) - (i + 2) % 256) <= 2, i
    del frames
    peak = max(peak, len(OPEN_PACKS))
    if i + 1 in (n // 3, n):  # Python memory held once a third of the packs is read, and once all are
        held[i + 1] = tracemalloc.get_traced_memory()[0]
print(peak, len(list(Path("/proc/self/fd").iterdir())), held[n] - held[n // 3])
"""


def test_reads_3000_packs_under_a_256_file_limit(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "VIDSSL_OPEN_PACKS": "16"}
    out = subprocess.run([sys.executable, "-c", _MANY_PACKS, str(tmp_path), "3000"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    peak, fds, growth = map(int, out.stdout.split())
    assert peak == 16  # the cache filled to its bound and never beyond
    assert fds < 64  # open files stay flat in the number of packs read
    # memory too: 2,000 more packs read add almost nothing (~2 KiB measured); packs kept open would add ~7 KiB each
    assert growth < 64 * 1024, growth


def test_open_pack_cache_closes_what_it_evicts(tiny_lists: Path) -> None:
    from vidssl.data.store import OPEN_PACKS, set_open_pack_limit

    records = read_list(tiny_lists / "train.csv")
    old = OPEN_PACKS.limit
    try:
        set_open_pack_limit(2)
        held = []
        for r in records:
            FramePack(r.frames_path).read([0])
            held.append(OPEN_PACKS.get(Path(r.frames_path))[0])
        assert len(OPEN_PACKS) == 2
        assert all(zf.fp is None for zf in held[:-2]) and all(zf.fp is not None for zf in held[-2:])
        with pytest.raises(IndexError, match="frame 99 requested, the pack has 24 frames"):
            FramePack(records[0].frames_path).read([99])
    finally:
        set_open_pack_limit(old)


# ---------------------------------------------------------------- short videos: loop or drop


def test_short_video_loops_from_its_first_frame(tiny_lists: Path) -> None:
    rec = read_list(tiny_lists / "test.csv")[0]  # 24 frames
    spec = ClipSpec(frames=10, stride=4, resize=40, crop=40)  # span 37 > 24
    ds = ClipDataset([rec], spec)
    assert ds.records[0].n_frames == 37 and ds.frames == [24]
    whole = FramePack(rec.frames_path).read(list(range(24)))
    got = ds.load(0, list(range(0, 37, 4)))
    expected = to_tensor(whole[[i % 24 for i in range(0, 37, 4)]])  # 0, 4, ..., 20, then 24 -> 0, 28 -> 4, ...
    assert torch.equal(got, expected)
    clip, _, _ = ds[0]
    assert clip.shape == (3, 10, 40, 40)
    multi, _, _ = MultiClipDataset([rec], spec, n_clips=3)[0]
    assert multi.shape == (3, 3, 10, 40, 40)


def test_drop_leaves_short_videos_out_of_every_dataset(tiny_lists: Path) -> None:
    records = read_list(tiny_lists / "train.csv")
    short = dataclasses.replace(records[0], n_frames=5)
    mixed = [short] + records[1:]
    drop = ClipSpec(frames=8, stride=1, resize=40, crop=40, short_videos="drop")  # span 8
    assert usable_records(mixed, drop) == records[1:]
    assert ClipDataset(mixed, drop).records == records[1:]
    assert len(MultiClipDataset(mixed, drop, 2)) == len(records) - 1
    assert usable_records(mixed, dataclasses.replace(drop, short_videos="loop")) == mixed
    with pytest.raises(ValueError, match="clip.short_videos='skip'"):
        usable_records(mixed, dataclasses.replace(drop, short_videos="skip"))


class _Decoded(torch.utils.data.Dataset):
    """Clips as ClipDataset yields them: 3×T×H×W views of decoded T×H×W×3 frames (channels last)."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        frames = np.random.default_rng(i).integers(0, 256, (4, 6, 7, 3), dtype=np.uint8)
        return to_tensor(frames), i % 3, i


def test_decoded_clips_stack_without_a_transposition_and_move_to_the_same_values() -> None:
    from torch.utils.data import DataLoader, default_collate

    from vidssl.data.clips import collate_clips, stack_decoded
    from vidssl.engine.train import move_batch

    ds = _Decoded()
    want = default_collate([ds[i] for i in range(3)])  # contiguous stack: the values every method expects
    got = collate_clips([ds[i] for i in range(3)])
    assert got[0].stride() == (504, 1, 126, 21, 3) and not got[0].is_contiguous()  # the decoded layout kept
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    moved = move_batch(got, torch.device("cpu"), floats=False)
    assert moved[0].is_contiguous() and torch.equal(moved[0], want[0])
    assert torch.equal(move_batch(got, torch.device("cpu"))[0], want[0].float() / 255)
    # Clips not in the decoded layout (already contiguous, or cut by a crop) stack as before.
    assert stack_decoded([ds[0][0].contiguous(), ds[1][0].contiguous()]) is None
    cut = [(x[..., 1:5, 2:6], y, z) for x, y, z in (ds[i] for i in range(3))]
    assert all(torch.equal(a, b) for a, b in zip(collate_clips(cut), default_collate(cut)))
    # In loader workers the batch is built in shared memory (no copy on its way out) and arrives equal.
    for workers in (0, 2):
        # Workers from a fresh interpreter: after a Prefect flow ran in this process (test_flows, if it shares
        # this pytest worker), every forked child exits 1 at shutdown (tests/test_pool.py says why).
        batches = list(DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=collate_clips,
                                  multiprocessing_context="forkserver" if workers else None))
        assert [b[0].is_shared() for b in batches] == [workers > 0] * 2
        for k, b in enumerate(batches):
            ref = default_collate([ds[i] for i in range(3 * k, 3 * k + 3)])
            assert all(torch.equal(a, r) for a, r in zip(b, ref))
