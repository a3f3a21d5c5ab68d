"""MotionShapes: the embedded dataset, real H.264 videos whose classes differ only by motion.

Classes come in time-reversed pairs (``CLASSES[2k]`` and ``CLASSES[2k+1]``). Every track is drawn as a
centre value plus a signed rate over *centred* time, so reversing a clip of one class flips only the
sign and gives a sample of its partner class with exactly the same distribution of positions, sizes
and angles. A single frame, or any orderless set of frames, therefore cannot tell partners apart;
only frame order can. Shape, colours and a static textured background are nuisance. With
``background_bias`` the train split ties each class to one background family (the static bias BE
targets) while the test split does not.

An *appearance* (shape, colours, background texture) is either drawn for each video or, with
``appearances = N``, drawn from a pool of N shared by every class and both splits. Shared looks keep
appearance uncorrelated with the class but stop it from naming the video: with a look of its own,
every video is told apart from the others by appearance alone, so a contrastive method that
discriminates instances can learn appearance and leave motion out (docs/motionshapes-study.md measures this;
``appearances = 1`` is the control without appearance nuisance).

The layout mirrors UCF101 (``videos/<Class>/v_<Class>_gGG_cCC.mp4`` and ``splits/`` in the official
format), so the same extract and lists stages serve both.
"""

from __future__ import annotations

import logging
import math
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vidssl.io import atomic_path, write_json, write_text

log = logging.getLogger(__name__)

# Partners are adjacent: reversing CLASSES[i] gives CLASSES[i ^ 1].
CLASSES: list[str] = [
    "MoveLeft", "MoveRight", "MoveUp", "MoveDown", "Grow", "Shrink", "RotateCW", "RotateCCW",
    "MoveUpRight", "MoveDownLeft", "MoveUpLeft", "MoveDownRight",
]  # fmt: skip
# kind and sign: image coordinates (y down), so a positive angular rate turns clockwise on screen.
_MOTIONS: dict[str, tuple[str, tuple[float, float]]] = {
    "MoveLeft": ("move", (-1, 0)), "MoveRight": ("move", (1, 0)),
    "MoveUp": ("move", (0, -1)), "MoveDown": ("move", (0, 1)),
    "Grow": ("scale", (1, 0)), "Shrink": ("scale", (-1, 0)),
    "RotateCW": ("rotate", (1, 0)), "RotateCCW": ("rotate", (-1, 0)),
    "MoveUpRight": ("move", (1, -1)), "MoveDownLeft": ("move", (-1, 1)),
    "MoveUpLeft": ("move", (-1, -1)), "MoveDownRight": ("move", (1, 1)),
}  # fmt: skip
FAMILIES: tuple[str, ...] = ("noise", "stripes", "checker", "blobs")
# Polygons without rotational symmetry, so the direction of a rotation is visible.
_SHAPE_POINTS = {
    "arrow": [(-1, -0.3), (0.2, -0.3), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.3), (-1, 0.3)],
    "ell": [(0, 0), (1, 0), (1, 0.4), (0.4, 0.4), (0.4, 1.4), (0, 1.4)],
    "tee": [(0, 0), (1.2, 0), (1.2, 0.4), (0.8, 0.4), (0.8, 1.3), (0.4, 1.3), (0.4, 0.4), (0, 0.4)],
    "triangle": [(0, 0), (1.4, 0.3), (0.2, 1)],
    "notched": [(0, 0), (1, 0), (1, 1), (0.65, 1), (0.5, 0.55), (0.35, 1), (0, 1)],
}
TEST_GROUPS = 7  # UCF101 split 1 puts groups 1-7 of 25 in the test set
N_GROUPS = 25
_CRF, _PRESET = 18, "veryfast"
_POOL_STREAM = 2**31 - 1  # second seed word of the shared-look stream; video streams use [seed, class, video]


def _normalise(points: list[tuple[float, float]]) -> np.ndarray:
    """Centre a polygon on its area centroid and scale its farthest vertex to radius 1."""
    p = np.asarray(points, dtype=np.float64)
    q = np.roll(p, -1, axis=0)
    cross = p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]
    area = cross.sum() / 2
    centroid = ((p + q) * cross[:, None]).sum(axis=0) / (6 * area)
    p = p - centroid
    return p / np.linalg.norm(p, axis=1).max()


SHAPES: dict[str, np.ndarray] = {name: _normalise(pts) for name, pts in _SHAPE_POINTS.items()}


@dataclass(frozen=True)
class Track:
    """Per-frame object pose: centre ``x``, ``y`` (pixels), ``radius`` (pixels), ``angle`` (radians)."""

    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    angle: np.ndarray

    def reversed(self) -> Track:
        """The same track played backwards."""
        return Track(self.x[::-1], self.y[::-1], self.radius[::-1], self.angle[::-1])


@dataclass(frozen=True)
class Appearance:
    """What a video looks like apart from its motion.

    A shared look draws its texture from ``texture_seed``, so it renders the same in every video (and with
    another family under ``background_bias``); a video's own look (``None``) draws it from the video's stream.
    """

    shape: str
    background: str
    c1: tuple[float, float, float]  # the background blends c1 -> c2 by its texture
    c2: tuple[float, float, float]
    colour: tuple[float, float, float]  # the object's, far from both background colours
    texture_seed: int | None = None


class Clip(NamedTuple):
    """A rendered video: ``video`` (T,H,W,3) uint8, object ``mask`` (T,H,W) bool, and what made it."""

    video: np.ndarray
    mask: np.ndarray
    track: Track
    shape: str
    background: str


def partner(class_name: str) -> str:
    """The class whose videos are this class's videos played backwards."""
    return CLASSES[CLASSES.index(class_name) ^ 1]


def sample_track(class_name: str, rng: np.random.Generator, size: int, frames: int) -> Track:
    """Draw the object's pose over time for one video of ``class_name``.

    Every quantity is ``centre + sign * rate * (t - mid)``; partners differ only in ``sign``.
    """
    if class_name not in _MOTIONS:
        raise ValueError(f"unknown MotionShapes class {class_name!r}; choose from {CLASSES}")
    kind, sign = _MOTIONS[class_name]
    t = np.arange(frames, dtype=np.float64) - (frames - 1) / 2
    steps = max(frames - 1, 1)
    angle = np.full(frames, rng.uniform(0, 2 * math.pi))
    if kind == "scale":
        span = rng.uniform(0.7, 1.2)  # log of the size ratio between first and last frame
        lo, hi = math.log(0.08 * size), math.log(0.36 * size)
        radius = np.exp(rng.uniform(lo + span / 2, hi - span / 2) + sign[0] * span * t / steps)
    else:
        radius = np.full(frames, rng.uniform(0.15, 0.21) * size)
    if kind == "rotate":
        angle = angle + sign[0] * math.radians(rng.uniform(3.0, 6.0)) * t
    direction = np.array(sign if kind == "move" else (0.0, 0.0), dtype=np.float64)
    direction /= max(float(np.linalg.norm(direction)), 1.0)  # diagonals move at the same speed
    margin = radius.max() + 1
    # Cap the speed so the whole path fits inside the frame with the object fully visible.
    cap = (size - 2 * margin) / steps / max(np.abs(direction).max(), 1e-9) * (1 - 1e-9)
    velocity = direction * min(rng.uniform(0.8, 1.6) * size / 96, cap)
    half = np.abs(velocity) * steps / 2
    cx = rng.uniform(margin + half[0], size - margin - half[0])
    cy = rng.uniform(margin + half[1], size - margin - half[1])
    return Track(cx + velocity[0] * t, cy + velocity[1] * t, radius, angle)


def polygon_mask(vertices: np.ndarray, size: int) -> np.ndarray:
    """Fill a polygon (K,2 pixel coordinates) into a (size,size) bool mask, even-odd rule on pixel centres."""
    x0, y0 = np.clip(np.floor(vertices.min(axis=0)).astype(int), 0, size)
    x1, y1 = np.clip(np.ceil(vertices.max(axis=0)).astype(int) + 1, 0, size)
    ys = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
    inside = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for (xa, ya), (xb, yb) in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        if ya == yb:
            continue
        crosses = (ya > ys) != (yb > ys)
        x_at = xa + (ys - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (xs < x_at)
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = inside
    return mask


def background_texture(family: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size,size) texture in [0,1] from one background family."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    phi = rng.uniform(0, math.pi)
    period = rng.uniform(6, 20) * size / 96
    u, v = xx * math.cos(phi) + yy * math.sin(phi), -xx * math.sin(phi) + yy * math.cos(phi)
    if family == "noise":
        k = int(rng.integers(3, 9))  # bilinear upsampling of a coarse k x k grid, as a matrix product
        a = np.maximum(0.0, 1 - np.abs(np.linspace(0, k - 1, size)[:, None] - np.arange(k)[None, :]))
        m = a @ rng.random((k, k)) @ a.T
    elif family == "stripes":
        m = 0.5 + 0.5 * np.sin(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi))
    elif family == "checker":
        m = (np.floor(u / period) + np.floor(v / period)) % 2
    elif family == "blobs":
        n = int(rng.integers(4, 10))
        cx, cy = rng.uniform(0, size, n), rng.uniform(0, size, n)
        sigma = rng.uniform(0.05, 0.2, n) * size
        d2 = (xx[..., None] - cx) ** 2 + (yy[..., None] - cy) ** 2
        m = np.exp(-d2 / (2 * sigma**2)).sum(axis=-1)
    else:
        raise ValueError(f"unknown background family {family!r}; choose from {FAMILIES}")
    return (m - m.min()) / max(m.max() - m.min(), 1e-9)


def _object_colour(rng: np.random.Generator, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """A random colour far from both background colours, so the object is always visible."""
    for _ in range(64):
        c = rng.uniform(0, 255, 3)
        if min(np.linalg.norm(c - c1), np.linalg.norm(c - c2)) > 100:
            return c
    return 255 - (c1 + c2) / 2


def draw_appearance(rng: np.random.Generator, *, shared: bool = False) -> Appearance:
    """Draw a random look: shape, background family and colours, object colour (and, ``shared``, a texture
    seed; a video's own look leaves its texture to the video's stream)."""
    names = sorted(SHAPES)
    shape = names[int(rng.integers(len(names)))]
    family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    colour = _object_colour(rng, c1, c2)
    seed = int(rng.integers(2**32)) if shared else None
    return Appearance(shape, family, tuple(c1), tuple(c2), tuple(colour), seed)  # type: ignore[arg-type]


def appearance_pool(n: int, seed: int) -> list[Appearance]:
    """The ``n`` looks shared by a dataset drawn from ``seed`` (a stream apart from every video's own)."""
    if n < 1:
        raise ValueError(f"appearances={n}: a shared pool needs at least 1 look (0 = one look per video)")
    rng = np.random.default_rng([seed, _POOL_STREAM])
    return [draw_appearance(rng, shared=True) for _ in range(n)]


def render_video(
    class_name: str,
    rng: np.random.Generator,
    size: int = 96,
    frames: int = 40,
    *,
    background: str | None = None,
    shape: str | None = None,
    appearance: Appearance | None = None,
) -> Clip:
    """Render one video of ``class_name`` with ``appearance`` (default: drawn from ``rng`` first).

    ``background``/``shape`` override the look's family/shape and change nothing else about the video: the
    random draws happen in the same order either way (look, texture, then track).
    """
    look = appearance or draw_appearance(rng)
    shape, background = shape or look.shape, background or look.background
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose from {sorted(SHAPES)}")
    c1, c2, colour = (np.asarray(c, dtype=np.float64) for c in (look.c1, look.c2, look.colour))
    own = look.texture_seed is None
    texture = background_texture(background, rng if own else np.random.default_rng(look.texture_seed), size)
    track = sample_track(class_name, rng, size, frames)
    bg = c1 + texture[..., None] * (c2 - c1)
    video = np.broadcast_to(np.round(bg).astype(np.uint8), (frames, size, size, 3)).copy()
    mask = np.zeros((frames, size, size), dtype=bool)
    for i in range(frames):
        cos, sin = math.cos(track.angle[i]), math.sin(track.angle[i])
        pts = SHAPES[shape] @ np.array([[cos, sin], [-sin, cos]]) * track.radius[i]
        mask[i] = polygon_mask(pts + (track.x[i], track.y[i]), size)
    video[mask] = np.round(colour).astype(np.uint8)
    return Clip(video, mask, track, shape, background)


class _Spec(NamedTuple):
    """Where one video goes: its class, index within the class, UCF101-style group/clip and split."""

    class_index: int
    video_index: int
    group: int
    clip: int
    split: str

    @property
    def relpath(self) -> str:
        name = CLASSES[self.class_index]
        return f"{name}/v_{name}_g{self.group:02d}_c{self.clip:02d}.mp4"


def plan_videos(n_classes: int, per_class: int) -> list[_Spec]:
    """Assign every video a group and clip number: about 28% to test groups 1-7, the rest to 8-25.

    At least two videos of each class land on each side, so both lists cover every class at any scale.
    """
    specs = []
    for c in range(n_classes):
        n_test = min(max(2, round(per_class * TEST_GROUPS / N_GROUPS)), per_class - 2)
        for v in range(per_class):
            if v < n_test:
                specs.append(_Spec(c, v, 1 + v % TEST_GROUPS, 1 + v // TEST_GROUPS, "test"))
            else:
                k, n_train_groups = v - n_test, N_GROUPS - TEST_GROUPS
                specs.append(
                    _Spec(c, v, TEST_GROUPS + 1 + k % n_train_groups, 1 + k // n_train_groups, "train")
                )
    return specs


# Bytes that are the same on every machine (dvc.lock holds data/raw's hash): swscale's RGB->YUV SIMD paths and
# x264's assembly round differently from their C code (measured: the same frames gave four different files with
# x264 at C / SSE4 / AVX-512 levels and swscale at its default flags), so the conversion runs in a bitexact scale
# filter and x264 runs its C code. Costs little here: the clips are tiny.
X264_PARAMS = "asm=0"


def encode_args(path: Path, *, width: int, height: int, fps: int, bitexact: bool = True) -> list[str]:
    """Build the ffmpeg command that encodes raw RGB frames from stdin to H.264 mp4 at ``path``.

    ``bitexact=False`` lets swscale and x264 pick their SIMD code (bytes then depend on the CPU); only the
    test that shows why the flags are needed uses it.
    """
    import ffmpeg
    import imageio_ffmpeg

    from vidssl.data.decode import SWS_FLAGS

    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps)
    if bitexact:
        # the conversion happens here, not in a scaler ffmpeg inserts itself with default flags
        stream = stream.filter("scale", flags=SWS_FLAGS).filter("format", "yuv420p")
    out = stream.output(
        str(path),
        format="mp4",
        vcodec="libx264",
        pix_fmt="yuv420p",
        preset=_PRESET,
        crf=_CRF,
        threads=1,
        movflags="+faststart",
        fflags="+bitexact",
        map_metadata=-1,
        **{"flags:v": "+bitexact"},
        **({"x264-params": X264_PARAMS} if bitexact else {}),
    ).overwrite_output()
    out = out.global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-filter_threads", "1")
    return out.compile(cmd=imageio_ffmpeg.get_ffmpeg_exe())


def encode_mp4(video: np.ndarray, path: Path, fps: int) -> None:
    """Encode (T,H,W,3) uint8 RGB frames to H.264 mp4 at ``path`` atomically and bit-exactly.

    One x264 thread, C code in x264 and swscale, and the bitexact flags make the bytes a function of the frames
    and the ffmpeg build alone.
    """
    _, h, w, _ = video.shape
    with atomic_path(path) as tmp:
        args = encode_args(tmp, width=w, height=h, fps=fps)
        done = subprocess.run(args, input=np.ascontiguousarray(video).tobytes(), capture_output=True)
        if done.returncode != 0:
            cmd = shlex.join(args)
            raise RuntimeError(f"ffmpeg failed writing {path}: {cmd}\n{done.stderr.decode()[-2000:]}")


def _make_video(
    spec: _Spec, videos: Path, seed: int, size: int, frames: int, fps: int, bias: bool, pool: list[Appearance]
) -> dict:
    """Render and encode one video; return its metadata."""
    rng = np.random.default_rng([seed, spec.class_index, spec.video_index])
    # A pooled look is picked with the video's own stream, independently of its class and split.
    look = int(rng.integers(len(pool))) if pool else -1
    # Tie the train background to the class only under bias; test videos always keep their own.
    family = FAMILIES[spec.class_index % len(FAMILIES)] if bias and spec.split == "train" else None
    clip = render_video(CLASSES[spec.class_index], rng, size, frames, background=family,
                        appearance=pool[look] if pool else None)
    encode_mp4(clip.video, videos / spec.relpath, fps)
    return {
        "path": spec.relpath,
        "label": spec.class_index,
        "split": spec.split,
        "shape": clip.shape,
        "background": clip.background,
        "appearance": look,
    }


def _check_args(
    n_classes: int, size: int, frames: int, fps: int, seed: int, per_class: int, workers: int,
    appearances: int = 0,
) -> None:
    if n_classes % 2 or not 8 <= n_classes <= len(CLASSES):
        raise ValueError(f"n_classes={n_classes}: must be even and between 8 and {len(CLASSES)}")
    if size % 2 or size < 32:
        raise ValueError(f"size={size}: must be even (yuv420p) and at least 32")
    for name, value, low in (
        ("frames", frames, 4),
        ("fps", fps, 1),
        ("seed", seed, 0),
        ("workers", workers, 1),
        ("appearances", appearances, 0),
    ):
        if value < low:
            raise ValueError(f"{name}={value}: must be at least {low}")
    if per_class < 4:
        raise ValueError(f"videos per class = {per_class}: must be at least 4 (scale and videos_per_class)")


def _remove_stale(videos: Path, keep: set[str]) -> None:
    """Delete MotionShapes videos left by an earlier run with other parameters (only our own names)."""
    for name in CLASSES:
        for p in sorted((videos / name).glob(f"v_{name}_g*_c*.mp4")):
            if f"{name}/{p.name}" not in keep:
                p.unlink()
                log.info("removed stale %s", p)
        if (videos / name).is_dir() and not any((videos / name).iterdir()):
            (videos / name).rmdir()  # a class dropped by a smaller n_classes


def _write_splits(splits: Path, classes: list[str], rows: list[dict]) -> None:
    """classInd.txt, trainlist01.txt and testlist01.txt in the official UCF101 format (CRLF, 1-based)."""
    write_text(splits / "classInd.txt", "".join(f"{i + 1} {c}\r\n" for i, c in enumerate(classes)))
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    write_text(splits / "trainlist01.txt", "".join(f"{r['path']} {r['label'] + 1}\r\n" for r in train))
    write_text(splits / "testlist01.txt", "".join(f"{r['path']}\r\n" for r in test))


def generate(
    out: Path,
    *,
    seed: int = 0,
    scale: float = 1.0,
    videos_per_class: int = 20,
    n_classes: int = 10,
    size: int = 96,
    frames: int = 40,
    fps: int = 25,
    background_bias: bool = False,
    appearances: int = 0,
    workers: int = 2,
) -> dict:
    """Write MotionShapes under ``out`` (``videos/``, ``splits/``, ``synth.json``) and return its summary.

    Each video's content depends only on ``(seed, class, video index)`` and, with ``appearances = N > 0``,
    the pool of N shared looks drawn from ``seed``; so the files are byte-identical across runs and
    worker counts.

    Raises:
        ValueError: a parameter out of range (the message names it).
        RuntimeError: ffmpeg failed (the message holds the command and its stderr).
    """
    import imageio_ffmpeg  # light; only for the version recorded in synth.json

    out = Path(out)
    per_class = max(4, round(videos_per_class * scale))
    _check_args(n_classes, size, frames, fps, seed, per_class, workers, appearances)
    looks = appearance_pool(appearances, seed) if appearances else []
    classes = CLASSES[:n_classes]
    specs = plan_videos(n_classes, per_class)
    videos = out / "videos"
    _remove_stale(videos, {s.relpath for s in specs})
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as threads:
        rows = list(
            threads.map(lambda s: _make_video(s, videos, seed, size, frames, fps, background_bias, looks), specs)
        )
    _write_splits(out / "splits", classes, rows)
    summary = {
        "dataset": "MotionShapes",
        "seed": seed,
        "scale": scale,
        "n_classes": n_classes,
        "classes": classes,
        "videos_per_class": per_class,
        "size": size,
        "frames": frames,
        "fps": fps,
        "background_bias": background_bias,
        "appearances": appearances,
        "background_families": list(FAMILIES),
        "encoder": {"codec": "libx264", "preset": _PRESET, "crf": _CRF, "pix_fmt": "yuv420p",
                    "x264_params": X264_PARAMS, "ffmpeg": imageio_ffmpeg.get_ffmpeg_version()},
        "n_videos": len(rows),
        "n_train": sum(r["split"] == "train" for r in rows),
        "n_test": sum(r["split"] == "test" for r in rows),
        "videos": rows,
    }
    write_json(out / "synth.json", summary)
    log.info("MotionShapes: %d videos in %.1f s -> %s", len(rows), time.perf_counter() - start, out)
    return summary
