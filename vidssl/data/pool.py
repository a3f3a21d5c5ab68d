"""Batch buffers that loader workers reuse instead of allocating shared memory for every batch.

A PyTorch loader worker builds each batch in a fresh shared-memory segment, and the main process maps it again.
For clip batches (8 uncropped 16×128×171 clips are 8.4 MB) creating and first touching that segment costs about
as much as a fifth of the JPEG decoding itself (bench/RESULTS.md, bench_loader.py). Here each worker keeps a
few shared slots, sends a slot's memory to the main process once, and afterwards only its number; the main
process hands the slot back when nothing of its own still uses it (its storage's use count says so), so a batch
the training loop holds on to is never overwritten, and a consumer that keeps every batch just makes the
workers fall back to fresh segments.

Only the tensors a collate builds through :func:`batch_buffer` travel this way; everything else in a batch
(labels, indices) goes as PyTorch sends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate, get_worker_info

MAX_SLOTS = 16  # per worker: enough for prefetching and a batch in use, with several clip tensors a batch

_active: "_WorkerPool | None" = None  # the pool of the collate running now, in a pooled loader's worker
_pool: "_WorkerPool | None" = None  # this worker process's pool (one per process: loader workers are processes)


def map_batch(batch: Any, fn: Callable[[Any], Any]) -> Any:
    """``batch`` with ``fn`` applied to every leaf under its tuples, lists and dicts (structure kept)."""
    if isinstance(batch, (list, tuple)):
        return type(batch)(map_batch(b, fn) for b in batch)
    if isinstance(batch, dict):
        return {k: map_batch(v, fn) for k, v in batch.items()}
    return fn(batch)


@dataclass
class PooledTensor:
    """A tensor that lies in slot ``slot`` of worker ``worker``'s pool, as it crosses to the main process.

    ``memory`` is the slot's memory (a uint8 tensor) when the main process has not seen this ``generation`` of
    the slot yet; ``flags`` is the worker's shared in-use flags with the worker's first batch."""

    worker: int
    slot: int
    generation: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    memory: torch.Tensor | None = None
    flags: torch.Tensor | None = None


class _WorkerPool:
    """One worker's slots: shared uint8 buffers and a shared flag per slot (1 while the main process has it)."""

    def __init__(self, worker: int, max_slots: int = MAX_SLOTS) -> None:
        self.worker, self.max_slots = worker, max_slots
        self.flags = torch.zeros(max_slots, dtype=torch.int32).share_memory_()
        self.in_use = self.flags.numpy()  # the same memory: cheap to poll
        self.slots: list[torch.Tensor] = []
        self.generation: list[int] = []
        self.announced: list[int] = []  # the generation of each slot the main process has
        self.flags_sent = False
        self.taken: dict[int, int] = {}  # storage address -> slot, for the batch being built
        self.shipped: set[int] = set()  # the slots of that batch that go to the main process

    def settle(self) -> None:
        """End a batch: a slot taken for it but not shipped (the collate dropped it, or failed) is free again."""
        for slot in set(self.taken.values()) - self.shipped:
            self.in_use[slot] = 0
        self.taken, self.shipped = {}, set()

    def take(self, nbytes: int) -> torch.Tensor | None:
        """A free slot of at least ``nbytes`` (the smallest that fits; a new or regrown one if none does), or
        None when every slot is in use."""
        free = [s for s in range(len(self.slots)) if not self.in_use[s]]
        fits = [s for s in free if self.slots[s].numel() >= nbytes]
        if fits:
            slot = min(fits, key=lambda s: self.slots[s].numel())
        elif len(self.slots) < self.max_slots:
            slot = len(self.slots)
            self.slots.append(torch.empty(nbytes, dtype=torch.uint8).share_memory_())
            self.generation.append(0)
            self.announced.append(-1)
        elif free:  # every free slot is too small: grow one
            slot = free[0]
            self.slots[slot] = torch.empty(nbytes, dtype=torch.uint8).share_memory_()
            self.generation[slot] += 1
        else:
            return None
        self.in_use[slot] = 1
        self.taken[self.slots[slot].data_ptr()] = slot
        return self.slots[slot]

    def export(self, batch: Any) -> Any:
        """``batch`` with every tensor that lies in a slot taken for it replaced by its :class:`PooledTensor`."""
        return map_batch(batch, self._export)

    def _export(self, x: Any) -> Any:
        slot = self.taken.get(x.untyped_storage().data_ptr()) if torch.is_tensor(x) else None
        if slot is None:
            return x
        out = PooledTensor(self.worker, slot, self.generation[slot], x.dtype, tuple(x.shape), x.stride(),
                           x.storage_offset())
        self.shipped.add(slot)
        if self.announced[slot] != self.generation[slot]:
            out.memory, self.announced[slot] = self.slots[slot], self.generation[slot]
        if not self.flags_sent:
            out.flags, self.flags_sent = self.flags, True
        return out


def batch_buffer(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A 1-D tensor of ``numel`` elements for a collate to build a batch in: a reused slot in a pooled loader's
    worker, fresh shared memory in any other worker (as ``default_collate`` allocates it, so the batch crosses
    without a copy), ordinary memory in the main process."""
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    if _active is not None:
        slot = _active.take(nbytes)
        if slot is not None:
            return torch.empty(0, dtype=dtype).set_(slot.untyped_storage(), 0, (numel,))
    if get_worker_info() is not None:
        storage = torch.UntypedStorage._new_shared(nbytes)
        return torch.empty(0, dtype=dtype).set_(storage, 0, (numel,))
    return torch.empty(numel, dtype=dtype)


class PoolingCollate:
    """Runs ``collate`` so that, in a loader worker, the buffers it asks :func:`batch_buffer` for are pool slots,
    and ships those as :class:`PooledTensor`."""

    def __init__(self, collate: Callable[[list], Any] | None, slots: int = MAX_SLOTS) -> None:
        self.collate, self.slots = collate or default_collate, slots

    def __call__(self, samples: list) -> Any:
        global _active, _pool
        info = get_worker_info()
        if info is None:
            return self.collate(samples)
        if _pool is None or _pool.worker != info.id:
            _pool = _WorkerPool(info.id, self.slots)
        _active = _pool
        try:
            return _pool.export(self.collate(samples))
        finally:
            _active = None
            _pool.settle()


def _users(t: torch.Tensor) -> int:
    """How many references the tensor's storage has (tensors, views and storage objects alike)."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


class _Unpooling:
    """The main process's side: turns :class:`PooledTensor` back into tensors over the slots' memory and hands
    each slot back to its worker once no tensor here still uses it."""

    def __init__(self, batches: Any, *, keep: bool = False) -> None:
        self.batches, self.keep = batches, keep  # keep: the workers outlive this pass (persistent_workers)
        self.memory: dict[tuple[int, int], tuple[int, torch.Tensor, int]] = {}  # (w, slot) -> (gen, u8, users)
        self.flags: dict[int, np.ndarray] = {}
        self.out: list[tuple[int, int]] = []  # slots the consumer may still hold

    def __iter__(self) -> "_Unpooling":
        return self

    def __len__(self) -> int:
        return len(self.batches)

    def __next__(self) -> Any:
        self.hand_back()
        try:
            return self.restore(next(self.batches))
        except StopIteration:
            if not self.keep:  # the workers are gone: so is every slot
                self.memory.clear()
                self.out.clear()
            raise

    def hand_back(self) -> None:
        still = []
        for key in self.out:
            _, u8, idle = self.memory[key]
            if _users(u8) > idle:  # some tensor here still uses the slot: it stays out
                still.append(key)
            else:
                self.flags[key[0]][key[1]] = 0
        self.out = still

    def restore(self, batch: Any) -> Any:
        return map_batch(batch, lambda x: self._tensor(x) if isinstance(x, PooledTensor) else x)

    def _tensor(self, p: PooledTensor) -> torch.Tensor:
        key = (p.worker, p.slot)
        if p.flags is not None:
            self.flags[p.worker] = p.flags.numpy()
        if p.memory is not None:
            self.memory[key] = (p.generation, p.memory, _users(p.memory))
        generation, u8, _ = self.memory[key]
        if generation != p.generation:
            raise RuntimeError(f"loader worker {p.worker}: slot {p.slot} is at generation {p.generation}, the main "
                               f"process has {generation}; a batch went missing")
        self.out.append(key)
        return torch.empty(0, dtype=p.dtype).set_(u8.untyped_storage(), p.offset, p.shape, p.stride)


class PooledLoader(DataLoader):
    """A DataLoader whose workers reuse their batch buffers (:mod:`vidssl.data.pool`), at most ``slots`` each;
    with no workers, or for tensors a collate does not build through :func:`batch_buffer`, it is a plain
    DataLoader."""

    _main: _Unpooling | None = None  # with persistent workers: the main side's slot table, kept across passes

    def __init__(self, dataset: Any, *args: Any, collate_fn: Callable[[list], Any] | None = None,
                 slots: int = MAX_SLOTS, **kwargs: Any) -> None:
        super().__init__(dataset, *args, collate_fn=PoolingCollate(collate_fn, slots), **kwargs)

    def __iter__(self) -> Any:
        batches = super().__iter__()
        if self.num_workers == 0:
            return batches
        if not self.persistent_workers:
            return _Unpooling(batches)
        if self._main is None:  # the same workers serve every pass: so does the main side's slot table
            self._main = _Unpooling(batches, keep=True)
        self._main.batches = batches
        return self._main
