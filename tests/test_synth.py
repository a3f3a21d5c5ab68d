"""MotionShapes: reversed-pair classes, correct motion, determinism, UCF101 layout, decodable mp4."""

from __future__ import annotations

import hashlib
import json
import math
import platform
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vidssl.data import synth
from vidssl.data.synth import (
    CLASSES,
    FAMILIES,
    appearance_pool,
    generate,
    partner,
    plan_videos,
    render_video,
    sample_track,
)

SMALL = dict(n_classes=8, scale=0.2, videos_per_class=20, size=32, frames=8, fps=10)  # 4 videos per class


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ms")
    return out, generate(out, seed=3, workers=2, **SMALL)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _centroids(mask: np.ndarray) -> np.ndarray:
    """(T, 2) x, y centroid of each frame's mask, pixel-centre coordinates."""
    ys, xs = np.mgrid[0 : mask.shape[1], 0 : mask.shape[2]] + 0.5
    area = mask.sum(axis=(1, 2))
    return np.stack([(mask * xs).sum(axis=(1, 2)) / area, (mask * ys).sum(axis=(1, 2)) / area], axis=1)


def _slope(values: np.ndarray) -> float:
    return float(np.polyfit(np.arange(len(values)), values, 1)[0])


def test_classes_come_in_reversed_pairs() -> None:
    assert len(CLASSES) >= 10 and len(CLASSES) % 2 == 0 and len(set(CLASSES)) == len(CLASSES)
    assert CLASSES[:8] == [
        "MoveLeft",
        "MoveRight",
        "MoveUp",
        "MoveDown",
        "Grow",
        "Shrink",
        "RotateCW",
        "RotateCCW",
    ]
    for name in CLASSES:
        assert partner(partner(name)) == name != partner(name)


@pytest.mark.parametrize("n", [6, 7, 9, len(CLASSES) + 2])
def test_n_classes_validation(tmp_path: Path, n: int) -> None:
    with pytest.raises(ValueError, match=f"n_classes={n}"):
        generate(tmp_path, n_classes=n)


@pytest.mark.parametrize(
    "kwargs, key", [({"size": 33}, "size=33"), ({"seed": -1}, "seed=-1"), ({"frames": 2}, "frames=2")]
)
def test_bad_arguments_name_the_value(tmp_path: Path, kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        generate(tmp_path, **kwargs)


@pytest.mark.parametrize("name", CLASSES[::2])
def test_reversing_a_video_gives_exactly_the_partner_video(name: str) -> None:
    # Same draws, opposite sign: reversal is a measure-preserving bijection between partner classes,
    # so frame-level statistics (and any orderless summary) are identically distributed within a pair.
    for seed in range(5):
        a = render_video(name, np.random.default_rng(seed), 48, 12)
        b = render_video(partner(name), np.random.default_rng(seed), 48, 12)
        np.testing.assert_array_equal(a.video[::-1], b.video)
        np.testing.assert_array_equal(a.mask[::-1], b.mask)
        for field in ("x", "y", "radius", "angle"):
            np.testing.assert_allclose(getattr(a.track.reversed(), field), getattr(b.track, field), atol=1e-9)


@pytest.mark.parametrize(
    "name, dx, dy",
    [
        ("MoveRight", 1, 0),
        ("MoveLeft", -1, 0),
        ("MoveUp", 0, -1),
        ("MoveDown", 0, 1),
        ("MoveUpRight", 1, -1),
        ("MoveDownLeft", -1, 1),
    ],
)
def test_move_classes_move_the_mask_centroid(name: str, dx: int, dy: int) -> None:
    for seed in range(4):
        clip = render_video(name, np.random.default_rng(seed), 96, 20)
        c = _centroids(clip.mask)
        sx, sy = _slope(c[:, 0]), _slope(c[:, 1])
        for s, d in ((sx, dx), (sy, dy)):
            assert s > 0.4 if d > 0 else s < -0.4 if d < 0 else abs(s) < 0.1, (name, sx, sy)
        # Reversed it moves the other way, as its partner does.
        assert _slope(_centroids(clip.mask[::-1])[:, 0]) == pytest.approx(-sx)


def test_grow_and_shrink_change_the_area() -> None:
    for seed in range(4):
        grow = render_video("Grow", np.random.default_rng(seed), 96, 20).mask.sum(axis=(1, 2))
        shrink = render_video("Shrink", np.random.default_rng(seed + 10), 96, 20).mask.sum(axis=(1, 2))
        assert grow[-1] / grow[0] > 3 and np.all(np.diff(grow) > -3)  # area grows with radius squared
        assert shrink[0] / shrink[-1] > 3 and np.all(np.diff(shrink) < 3)


def _orientation(mask: np.ndarray) -> np.ndarray:
    """Principal-axis angle per frame (image coordinates, y down), unwrapped over its period pi."""
    c = _centroids(mask)
    ys, xs = np.mgrid[0 : mask.shape[1], 0 : mask.shape[2]] + 0.5
    dx, dy = xs[None] - c[:, 0, None, None], ys[None] - c[:, 1, None, None]
    mu20, mu02, mu11 = (
        (mask * dx * dx).sum((1, 2)),
        (mask * dy * dy).sum((1, 2)),
        (mask * dx * dy).sum((1, 2)),
    )
    return np.unwrap(np.arctan2(2 * mu11, mu20 - mu02)) / 2


@pytest.mark.parametrize("name, sign", [("RotateCW", 1), ("RotateCCW", -1)])
def test_rotation_direction(name: str, sign: int) -> None:
    # With y pointing down, a clockwise turn on screen increases the angle of the principal axis.
    for seed in range(4):
        clip = render_video(name, np.random.default_rng(seed), 96, 20, shape="arrow")
        rate = math.degrees(_slope(_orientation(clip.mask)))
        assert 2.0 < sign * rate < 7.0, (name, rate)
        assert np.ptp(_centroids(clip.mask), axis=0).max() < 1.5  # turns in place


def test_object_stays_inside_the_frame() -> None:
    for i, name in enumerate(CLASSES * 5):
        track = sample_track(name, np.random.default_rng(i), 64, 30)
        for lo in (track.x - track.radius, track.y - track.radius):
            assert lo.min() >= 0
        for hi in (track.x + track.radius, track.y + track.radius):
            assert hi.max() <= 64
        mask = render_video(name, np.random.default_rng(i), 64, 30).mask
        assert mask.sum(axis=(1, 2)).min() > 10


def test_plan_splits_by_group_with_two_per_side() -> None:
    for per_class, n_test in ((4, 2), (5, 2), (20, 6), (100, 28)):
        specs = plan_videos(8, per_class)
        assert len({s.relpath for s in specs}) == len(specs) == 8 * per_class
        test = [s for s in specs if s.split == "test"]
        assert len(test) == 8 * n_test
        assert all(1 <= s.group <= 7 for s in test)
        assert all(8 <= s.group <= 25 for s in specs if s.split == "train")


def test_split_files_follow_the_ucf101_format(small: tuple[Path, dict]) -> None:
    out, summary = small
    raw = {
        n: (out / "splits" / n).read_bytes() for n in ("classInd.txt", "trainlist01.txt", "testlist01.txt")
    }
    for data in raw.values():
        assert data.endswith(b"\r\n") and data.count(b"\n") == data.count(b"\r\n")
    ind = [line.split(" ") for line in raw["classInd.txt"].decode().splitlines()]
    assert ind == [[str(i + 1), c] for i, c in enumerate(CLASSES[:8])]
    train = [line.split(" ") for line in raw["trainlist01.txt"].decode().splitlines()]
    test = raw["testlist01.txt"].decode().splitlines()
    for path, label in train:
        assert path.split("/")[0] == CLASSES[int(label) - 1] and path.endswith(".mp4")
    assert not {p for p, _ in train} & set(test)
    on_disk = {str(p.relative_to(out / "videos")) for p in (out / "videos").rglob("*.mp4")}
    assert on_disk == {p for p, _ in train} | set(test)
    for c in CLASSES[:8]:
        assert (
            sum(p.startswith(c + "/") for p, _ in train) >= 2
            and sum(p.startswith(c + "/") for p in test) >= 2
        )
    assert summary["n_videos"] == 32 and summary["videos_per_class"] == 4
    assert json.loads((out / "synth.json").read_text()) == summary


def test_videos_decode_back_to_the_rendered_frames(small: tuple[Path, dict]) -> None:
    import ffmpeg
    import imageio_ffmpeg

    out, summary = small
    row = summary["videos"][5]
    data, _ = (
        ffmpeg.input(str(out / "videos" / row["path"]))
        .output("pipe:", format="rawvideo", pix_fmt="rgb24")
        .run(cmd=imageio_ffmpeg.get_ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
    )
    frames = np.frombuffer(data, np.uint8).reshape(-1, 32, 32, 3)
    assert frames.shape[0] == 8
    spec = next(s for s in plan_videos(8, 4) if s.relpath == row["path"])
    clip = render_video(
        CLASSES[spec.class_index], np.random.default_rng([3, spec.class_index, spec.video_index]), 32, 8
    )
    # Lossy H.264 + yuv420p chroma, but the same picture: small mean error, no flips or shifts.
    assert np.abs(frames.astype(int) - clip.video).mean() < 12
    assert (
        np.abs(frames.astype(int) - clip.video[::-1]).mean() > np.abs(frames.astype(int) - clip.video).mean()
    )


def test_same_seed_gives_identical_bytes(tmp_path: Path, small: tuple[Path, dict]) -> None:
    # A different worker count must not change a byte either.
    generate(tmp_path / "a", seed=3, workers=1, **SMALL)
    assert _digests(tmp_path / "a") == _digests(small[0])
    generate(tmp_path / "b", seed=4, workers=2, **SMALL)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a if k.endswith(".mp4"))
    assert a["splits/trainlist01.txt"] == b["splits/trainlist01.txt"]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the controls need x86 SIMD levels")
def test_videos_do_not_depend_on_the_cpus_simd(tmp_path: Path) -> None:
    """data/raw must hash the same on every machine (a fresh AVX-512 machine rewrote dvc.lock's data/raw hash).

    `-cpuflags 0` stands in for a CPU without swscale's SIMD; x264 ignores it, so x264's own level is set
    through its `asm` param: the command pins C code, and the controls show both knobs change bytes by default.
    """
    clip = render_video(CLASSES[3], np.random.default_rng([5, 3, 0]), 64, 16).video
    frames = np.ascontiguousarray(clip).tobytes()

    def encode(args: list[str], *, cpuflags: bool = False, x264: str | None = None) -> bytes:
        out = tmp_path / "v.mp4"
        if x264 is not None:
            args = [x264 if a == synth.X264_PARAMS else a for a in args]
            if x264 not in args:
                at = args.index(str(out))
                args = [*args[:at], "-x264-params", x264, *args[at:]]
        cmd = [args[0], *(["-cpuflags", "0"] if cpuflags else []), *args[1:]]
        subprocess.run(cmd, input=frames, capture_output=True, check=True)
        return out.read_bytes()

    args = synth.encode_args(tmp_path / "v.mp4", width=64, height=64, fps=10)
    pinned = encode(args)
    assert encode(args, cpuflags=True) == pinned, "swscale's SIMD changed the video"
    # x264's SIMD stays off whatever the CPU offers: asking it to detect them changes the bytes
    assert encode(args, x264="asm=auto") != pinned
    # the control for swscale: without the bitexact scale filter its default path depends on the SIMD
    loose = synth.encode_args(tmp_path / "v.mp4", width=64, height=64, fps=10, bitexact=False)
    assert encode(loose, x264="asm=0") != encode(loose, cpuflags=True, x264="asm=0")


def test_rerun_with_fewer_videos_removes_stale_ones(tmp_path: Path) -> None:
    generate(tmp_path, **{**SMALL, "scale": 0.25, "n_classes": 10})  # 5 per class, 10 classes
    generate(tmp_path, **SMALL)  # 4 per class, 8 classes
    assert len(list((tmp_path / "videos").rglob("*.mp4"))) == 32
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == sorted(CLASSES[:8])


def test_background_bias_ties_train_backgrounds_to_classes(tmp_path: Path, small: tuple[Path, dict]) -> None:
    biased = generate(tmp_path, seed=3, background_bias=True, **SMALL)
    train = [r for r in biased["videos"] if r["split"] == "train"]
    test = [r for r in biased["videos"] if r["split"] == "test"]
    assert all(r["background"] == FAMILIES[r["label"] % len(FAMILIES)] for r in train)
    assert sum(r["background"] != FAMILIES[r["label"] % len(FAMILIES)] for r in test) >= len(test) // 2
    # Only the background changes: test videos are untouched, shapes are the same everywhere.
    unbiased = small[1]["videos"]
    assert [r["shape"] for r in biased["videos"]] == [r["shape"] for r in unbiased]
    assert [r for r in biased["videos"] if r["split"] == "test"] == [
        r for r in unbiased if r["split"] == "test"
    ]


def test_unknown_class_is_refused() -> None:
    with pytest.raises(ValueError, match="MoveSideways"):
        sample_track("MoveSideways", np.random.default_rng(0), 64, 8)
    assert synth.SHAPES["arrow"].shape[1] == 2


def test_a_pooled_look_is_the_same_picture_whatever_the_motion() -> None:
    look = appearance_pool(3, seed=5)[1]
    a = render_video("MoveLeft", np.random.default_rng(1), 48, 12, appearance=look)
    b = render_video("Grow", np.random.default_rng(2), 48, 12, appearance=look)
    assert a.shape == b.shape == look.shape and a.background == b.background == look.background
    # Wherever neither object is, the two backgrounds are identical pixels; the objects share one colour.
    free = ~(a.mask | b.mask)
    np.testing.assert_array_equal(a.video[free], b.video[free])
    assert (a.video[a.mask] == a.video[a.mask][0]).all()
    np.testing.assert_array_equal(a.video[a.mask][0], b.video[b.mask][0])
    # The pool is a function of its seed alone.
    assert appearance_pool(3, seed=5) == appearance_pool(3, seed=5) != appearance_pool(3, seed=6)
    with pytest.raises(ValueError, match="appearances=0"):
        appearance_pool(0, seed=5)


def test_pooled_looks_are_shared_across_classes_and_splits(tmp_path: Path, small: tuple[Path, dict]) -> None:
    pooled = generate(tmp_path / "p", seed=3, appearances=2, **SMALL)
    rows = pooled["videos"]
    assert pooled["appearances"] == 2 and {r["appearance"] for r in rows} == {0, 1}
    for look in (0, 1):  # each look is worn by several classes, in train and in test
        wearers = [r for r in rows if r["appearance"] == look]
        assert len({r["label"] for r in wearers}) >= 4 and {r["split"] for r in wearers} == {"train", "test"}
        assert len({(r["shape"], r["background"]) for r in wearers}) == 1
    assert all(r["appearance"] == -1 for r in small[1]["videos"])  # the default: a look per video
    # Under background bias the train family follows the class, the look's shape stays.
    biased = generate(tmp_path / "b", seed=3, appearances=2, background_bias=True, **SMALL)["videos"]
    assert [r["shape"] for r in biased] == [r["shape"] for r in rows]
    assert all(r["background"] == FAMILIES[r["label"] % len(FAMILIES)] for r in biased if r["split"] == "train")
    with pytest.raises(ValueError, match="appearances=-1"):
        generate(tmp_path / "x", appearances=-1, **SMALL)
