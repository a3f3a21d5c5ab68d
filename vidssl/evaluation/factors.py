"""What a feature space encodes on MotionShapes: nearest-neighbour agreement on each generative factor.

MotionShapes records, per video, its class, shape, background family and, when looks are pooled, which shared
look it wears (``synth.json``). For every test video we take its nearest train video (cosine, the retrieval
features) and count how often the two share each factor.
Class and motion pair (a class and its time-reversed partner) are what a motion encoder should share; shape,
background and look are nuisance, so agreement on them well above chance means the features encode appearance.
Chance is the agreement a uniformly random train neighbour would give, from the factor's frequencies.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from vidssl.data.synth import CLASSES

FACTORS: tuple[str, ...] = ("class", "motion_pair", "look", "background", "shape")  # "look": pooled only


def video_key(video_id: str) -> str:
    """The file stem of a video id (``MoveLeft/v_MoveLeft_g01_c01`` -> ``v_MoveLeft_g01_c01``).

    UCF-style names are unique without their class folder, so lists with or without it match ``synth.json``.
    """
    return video_id.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def load_factors(synth_json: Path) -> dict[str, dict[str, str]]:
    """:func:`video_key` -> {factor: value} from a MotionShapes ``synth.json``.

    Raises:
        ValueError: if the file is not a MotionShapes summary with per-video records.
    """
    summary = json.loads(Path(synth_json).read_text(encoding="utf-8"))
    videos = summary.get("videos") if isinstance(summary, dict) else None
    if not isinstance(videos, list):
        raise ValueError(
            f"{synth_json}: no 'videos' list; regenerate it with `vidssl synth` (or `dvc repro synth`)"
        )
    out = {}
    for v in videos:
        name = v["path"].split("/")[0]
        # Partners are adjacent in CLASSES, so index // 2 names the pair (reversal maps one to the other).
        pair = CLASSES.index(name) // 2 if name in CLASSES else name
        record = {"class": name, "motion_pair": str(pair), "background": v["background"], "shape": v["shape"]}
        if v.get("appearance", -1) >= 0:  # a look of its own per video would never match: no factor then
            record["look"] = str(v["appearance"])
        out[video_key(v["path"])] = record
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbour_agreement(
    train: np.ndarray, train_ids: list[str], test: np.ndarray, test_ids: list[str],
    factors: dict[str, dict[str, str]],
) -> dict[str, dict[str, float]]:
    """{factor: {"agree": fraction of test videos whose nearest train video shares it, "chance": ...}}.

    ``factors`` is :func:`load_factors`' mapping; ids are matched by :func:`video_key`.

    Raises:
        KeyError: naming the first video id that ``factors`` does not describe.
    """
    for vid in [*train_ids, *test_ids]:
        if video_key(vid) not in factors:
            raise KeyError(
                f"video {vid!r} is not in synth.json; the features and the dataset are out of step (rerun the "
                "pipeline from synth, or the report after it)"
            )
    nearest = (_unit(test) @ _unit(train).T).argmax(axis=1)
    out = {}
    for f in (f for f in FACTORS if all(f in factors[video_key(v)] for v in [*train_ids, *test_ids])):
        tr = [factors[video_key(v)][f] for v in train_ids]
        te = [factors[video_key(v)][f] for v in test_ids]
        agree = float(np.mean([te[i] == tr[j] for i, j in enumerate(nearest)]))
        p_tr, p_te = Counter(tr), Counter(te)
        chance = sum(p_te[k] * p_tr.get(k, 0) for k in p_te) / (len(te) * len(tr))
        out[f] = {"agree": agree, "chance": float(chance)}
    return out


def features_agreement(features_dir: Path, synth_json: Path) -> dict[str, dict[str, float]]:
    """:func:`neighbour_agreement` of the ``train.npz``/``test.npz`` saved by retrieval in ``features_dir``."""
    sets = {}
    for split in ("train", "test"):
        with np.load(Path(features_dir) / f"{split}.npz") as z:
            sets[split] = (z["features"], [str(v) for v in z["video_ids"]])
    (tr, tr_ids), (te, te_ids) = sets["train"], sets["test"]
    return neighbour_agreement(tr, tr_ids, te, te_ids, load_factors(synth_json))
