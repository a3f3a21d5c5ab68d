"""Temporal samplers, clip-consistent crops and the datasets training reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidssl.data.clips import (ClipDataset, ClipSpec, MultiClipDataset, clip_indices, linspace_clips, random_clip,
                               random_crop, read_list, resize_short, to_float, to_tensor)
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
