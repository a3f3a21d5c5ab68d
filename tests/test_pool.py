"""Loader workers reuse their batch buffers (vidssl.data.pool): batches equal a plain DataLoader's, slots come
back and are reused, and a slot the consumer still holds is never written again."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vidssl.data import pool
from vidssl.data.clips import collate_clips, to_tensor
from vidssl.data.pool import PooledLoader

T, H, W = 4, 6, 8


class Numbered(Dataset):
    """Sample i: a decoded-layout clip filled with i, a contiguous clip filled with 2i, and i. ``grow`` makes
    later samples' frames taller, so slots must grow."""

    def __init__(self, n: int, grow: int = 0) -> None:
        self.n, self.grow = n, grow

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        h = H + (i // 8) * self.grow
        decoded = to_tensor(np.full((T, h, W, 3), i % 251, np.uint8))  # a view, as the datasets return
        other = torch.full((2, T, h, W), 2 * i % 251, dtype=torch.uint8)
        return decoded, other, i


def check(batch: tuple, where: str) -> None:
    decoded, other, index = batch
    for clip, two, i in zip(decoded, other, index.tolist()):
        assert torch.all(clip == i % 251), f"{where}: sample {i} was overwritten"
        assert torch.all(two == 2 * i % 251), f"{where}: sample {i}'s second clip was overwritten"


def loader(ds: Dataset, cls: type = PooledLoader, **kw) -> DataLoader:
    # Workers from a fresh interpreter (forkserver), not forked from this one: a test process that has run
    # Prefect flows in-process (tests/test_flows.py) forks children that exit with code 1, pool or not.
    return cls(ds, batch_size=4, num_workers=2, collate_fn=collate_clips, multiprocessing_context="forkserver",
               **kw)


def in_a_slot(batches, t: torch.Tensor) -> bool:
    """Whether ``t`` lies in one of the worker slots the main process has mapped (not in fresh memory)."""
    return t.untyped_storage().data_ptr() in {u8.data_ptr() for _, u8, _ in batches.memory.values()}


def test_batches_equal_a_plain_loaders() -> None:
    ds = Numbered(40)
    for ours, plain in zip(loader(ds), loader(ds, DataLoader), strict=True):
        for a, b in zip(ours, plain, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
            assert torch.equal(a, b)


def test_slots_are_reused_and_a_batch_in_use_is_never_written() -> None:
    batches = iter(loader(Numbered(96)))
    n = 0
    for batch in batches:
        check(batch, "on arrival")
        time.sleep(0.02)  # the workers fill their other slots meanwhile
        check(batch, "after the workers ran on")
        assert in_a_slot(batches, batch[0]) and in_a_slot(batches, batch[1]), f"batch {n} is not in a slot"
        n += 1
    assert n == 24


def test_batches_the_consumer_keeps_stay_intact() -> None:
    """A consumer that keeps every batch (or a view of one) holds every slot: the workers take fresh memory
    rather than write over it."""
    kept = []
    for k, batch in enumerate(loader(Numbered(64), slots=3)):
        decoded, other, index = batch
        kept.append(batch if k % 2 else (decoded[1:], other[1:], index[1:]))
    assert len(kept) == 16
    for k, batch in enumerate(kept):
        check(batch, f"batch {k} at the end")


def test_slots_grow_for_larger_batches() -> None:
    for batch in loader(Numbered(64, grow=2), slots=2):  # few slots: growing a free one is the only way to fit
        check(batch, "growing")


def test_persistent_workers_serve_several_passes() -> None:
    batches = loader(Numbered(32), persistent_workers=True)
    for _ in range(3):
        seen = []
        for batch in batches:
            check(batch, "persistent")
            seen += batch[2].tolist()
        assert seen == list(range(32))


def test_without_workers_it_is_a_plain_loader() -> None:
    batches = PooledLoader(Numbered(8), batch_size=4, num_workers=0, collate_fn=collate_clips)
    out = list(batches)
    assert len(out) == 2 and not out[0][0].is_shared()
    for batch in out:
        check(batch, "no workers")


def _offset_collate(samples: list) -> tuple:
    """Ships a view that starts inside its slot, and takes a buffer it then drops."""
    decoded, other, index = collate_clips(samples)
    pool.batch_buffer(4096, torch.uint8)  # taken, never shipped: its slot must come free again
    return decoded[1:], other[1:], index[1:]


def test_views_inside_a_slot_and_dropped_buffers() -> None:
    # 25 batches a worker, more than its MAX_SLOTS: slots that never came free would run out.
    batches = iter(PooledLoader(Numbered(200), batch_size=4, num_workers=2, collate_fn=_offset_collate,
                                multiprocessing_context="forkserver"))
    n = 0
    for batch in batches:
        assert batch[0].storage_offset() > 0
        check(batch, "a view at an offset")
        assert in_a_slot(batches, batch[0]), f"batch {n} is in fresh memory: a dropped buffer kept its slot"
        n += 1
    assert n == 50
