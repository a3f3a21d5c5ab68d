"""Tests for vidssl.methods.vcop: permutation classes, tuple sampling, shuffled clips vs label, learning."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vidssl.config import Params
from vidssl.data.clips import ClipSpec, VideoRecord
from vidssl.data.store import write_pack
from vidssl.methods.params_vcop import VCOPParams
from vidssl.data.augment import AugmentSpec
from vidssl.methods.base import sample_views
from vidssl.methods.vcop import (
    VCOP, OrderHead, VCOPDataset, order_label, permutations, tuple_augment, tuple_indices,
)
from vidssl.models import build_backbone


@pytest.mark.parametrize("n", [2, 3, 4])
def test_permutation_labels_are_a_bijection_in_itertools_order(n: int) -> None:
    perms = list(itertools.permutations(range(n)))
    assert list(permutations(n)) == perms
    assert [order_label(p) for p in perms] == list(range(math.factorial(n)))
    assert order_label(np.array(perms[-1])) == len(perms) - 1  # numpy orders (the dataset's) work too
    with pytest.raises(ValueError, match="not a permutation"):
        order_label([0, 0, 1])


def test_tuple_indices_spacing_and_short_video_clamp() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        clips = tuple_indices(100, 4, 2, 5, 3, rng)  # span 7, then 5 skipped: clip starts s, s+12, s+24
        s = clips[0][0]
        assert 0 <= s <= 100 - (3 * 7 + 2 * 5)
        assert clips == [[s + 12 * i + 2 * k for k in range(4)] for i in range(3)]
    assert tuple_indices(10, 4, 1, 2, 3, rng) == [[0, 1, 2, 3], [6, 7, 8, 9], [9, 9, 9, 9]]


def test_dataset_shuffled_clips_match_label(tmp_path: Path) -> None:
    # Frame i is a flat grey of value 8·i, so each clip's frames can be read back from its pixels.
    frames = [np.full((40, 40, 3), 8 * i, dtype=np.uint8) for i in range(30)]
    write_pack(tmp_path / "v.zip", frames)
    spec = ClipSpec(frames=4, stride=1, resize=40, crop=32)
    ds = VCOPDataset([VideoRecord("v", str(tmp_path / "v.zip"), 30, 7)], spec, tuple_len=3, interval=2)
    torch.manual_seed(0)
    seen, g = set(), torch.Generator()
    for _ in range(40):
        sample = ds[0]
        assert sample[0].shape == (3, 3, 4, 40, 40) and sample[0].dtype == torch.uint8  # frames only, uncropped
        clips, perm_label, label, index = sample_views(tuple_augment(AugmentSpec(crop=32)), sample, g)
        assert clips.shape == (3, 3, 4, 32, 32) and clips.dtype == torch.uint8 and (label, index) == (7, 0)
        ids = [[round(v / 8) for v in c[1].float().mean(dim=(1, 2)).tolist()] for c in clips]
        order = permutations(3)[perm_label]
        start = min(i[0] for i in ids)
        for pos, original in enumerate(order):  # shuffled position pos holds original clip `original`
            assert ids[pos] == [start + 6 * original + k for k in range(4)]
        seen.add(perm_label)
    assert seen == set(range(6))


def test_order_head_shapes_and_pairs() -> None:
    head = OrderHead(8, 4, hidden=5, dropout=0.0)
    assert head.pairs == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert head.fc8.in_features == 30 and head(torch.randn(2, 4, 8)).shape == (2, 24)


def _batch(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    clips = torch.rand(n, 3, 3, 8, 32, 32, generator=g)
    return clips, torch.randint(0, 6, (n,), generator=g), torch.zeros(n), torch.arange(n)


def test_training_step_finite_grads_and_terms() -> None:
    torch.manual_seed(0)
    method = VCOP(build_backbone("tiny", width=4))
    loss, terms = method.training_step(_batch(), epoch=0)
    assert torch.isfinite(loss) and set(terms) == {"loss", "acc_order"} and 0 <= terms["acc_order"] <= 1
    loss.backward()
    assert all(p.grad is not None for p in method.backbone.parameters())
    assert sum(float(p.grad.abs().sum()) for p in method.backbone.parameters()) > 0
    with pytest.raises(ValueError, match="tuples of 3 clips"):
        method.logits(torch.rand(2, 4, 3, 8, 32, 32))


def test_sgd_steps_reduce_loss_on_fixed_batch() -> None:
    torch.manual_seed(0)
    method, batch = VCOP(build_backbone("tiny", width=4), dropout=0.0), _batch()
    opt = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(5):
        loss, _ = method.training_step(batch, epoch=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses


def _ramp_tuples(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    # Toy videos whose brightness rises with time: a clip's mean intensity tells where it came from, so a
    # backbone can see the order of the clips in a tuple.
    base = torch.rand(n, 1, generator=g) * 0.3
    times = base + 0.2 * torch.arange(3.0)  # clip i of each tuple
    perms = torch.tensor(permutations(3))
    labels = torch.randint(0, 6, (n,), generator=g)
    shuffled = times.gather(1, perms[labels])
    clips = shuffled.view(n, 3, 1, 1, 1, 1) + 0.05 * torch.rand(n, 3, 3, 4, 16, 16, generator=g)
    return clips, labels


def test_vcop_learns_order_on_toy_data_above_chance() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    method = VCOP(build_backbone("tiny", width=4), hidden=32)
    opt = torch.optim.Adam(method.parameters(), lr=3e-3)
    for _ in range(30):  # ≥ 0.85 held-out accuracy after 30 steps for seeds 0-2
        clips, labels = _ramp_tuples(16, g)
        loss, _ = method.training_step((clips, labels), epoch=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    method.eval()
    clips, labels = _ramp_tuples(120, g)
    with torch.no_grad():
        acc = (method.logits(clips).argmax(dim=1) == labels).float().mean().item()
    assert acc > 0.5  # chance is 1/6


def test_from_config_and_make_dataset(tmp_path: Path) -> None:
    backbone = build_backbone("tiny", width=4)
    assert VCOP.from_config(backbone, Params(), n_samples=1).head.fc8.out_features == 6
    cfg = SimpleNamespace(seed=0, pretrain=SimpleNamespace(vcop=VCOPParams(tuple_len=4, interval=3)))
    assert VCOP.from_config(backbone, cfg, n_samples=1).head.fc8.out_features == 24
    ds = VCOP.make_dataset([], ClipSpec(stride=4), cfg)
    assert (ds.tuple_len, ds.interval) == (4, 3)
    assert ds.spec.stride == 1  # VCOP pretrains on consecutive frames whatever the shared eval stride
