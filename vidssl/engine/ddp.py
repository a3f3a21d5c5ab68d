"""Data-parallel pretraining under torchrun: process group, sharded batches, averaged gradients, one writer.

``torchrun --nproc-per-node N -m vidssl.cli pretrain ...`` (or ``torchrun ... stages/pretrain.py``) starts N
processes; each builds the same model from the same seed and trains it, wrapped in DistributedDataParallel, on
its share of every batch, so gradients are averaged and the weights stay identical on every rank.
``pretrain.batch_size`` stays the global batch: each rank takes batch_size / N clips, and the N shares of step s
make up the s-th global batch of one seeded permutation. The methods gather embeddings across ranks themselves
(``methods.distributed``), so in-batch negatives, MoCo queues and memory banks cover the global batch. On CUDA,
batch norm is synchronised (``SyncBatchNorm``) so its statistics too cover the global batch; torch has no CPU
SyncBatchNorm, so on CPU (gloo) each rank normalises its own share and the running statistics are averaged
after every epoch.

Only rank 0 logs, tracks and writes checkpoints; every function here is a no-op in a single process.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from vidssl.data.pool import PooledLoader

log = logging.getLogger(__name__)

_joined = False  # whether setup() initialised the process group (and so teardown() may end it)


@dataclasses.dataclass(frozen=True)
class Parallel:
    """Where this process stands: its rank, the number of processes and the device it trains on."""

    rank: int = 0
    world: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs, tracks and writes files."""
        return self.rank == 0


def default_device() -> torch.device:
    """The device one process trains on: CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _launched_world() -> int:
    """How many processes torchrun started (WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup() -> Parallel:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT), once.

    Without torchrun (WORLD_SIZE unset or 1) nothing is initialised and training runs in this one process.
    NCCL on CUDA (one GPU per process, by LOCAL_RANK), gloo on CPU.

    Raises:
        ValueError: if WORLD_SIZE > 1 but the variables torchrun sets are missing.
    """
    world = _launched_world()
    if world == 1 and not dist.is_initialized():
        return Parallel(device=default_device())
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} GPU(s); "
                             "start at most that many processes per node (torchrun --nproc-per-node)")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: start data-parallel "
                             "training with torchrun, e.g. `torchrun --nproc-per-node 4 -m vidssl.cli pretrain`")
        dist.init_process_group("nccl" if cuda else "gloo")
        global _joined
        _joined = True
    par = Parallel(dist.get_rank(), dist.get_world_size(), torch.device("cuda", local) if cuda else
                   torch.device("cpu"))
    if not par.main:  # one progress log, rank 0's; the other ranks still report warnings and errors
        logging.getLogger("vidssl").setLevel(logging.WARNING)
    return par


def require_single_process(stage: str) -> None:
    """Refuse to run ``stage`` in several processes: only pretraining is data-parallel.

    Raises:
        ValueError: if torchrun started this process as one of several.
    """
    world = _launched_world()
    if world > 1:
        raise ValueError(f"{stage} runs in one process, but torchrun started {world} (WORLD_SIZE={world}); "
                         f"only pretrain is data-parallel: run `vidssl {stage}` without torchrun")


def teardown() -> None:
    """Leave the process group if :func:`setup` joined it, so the process exits cleanly."""
    global _joined
    if _joined and dist.is_initialized():
        dist.destroy_process_group()
    _joined = False


def per_rank_batch(batch_size: int, par: Parallel) -> int:
    """The clips each rank takes from a global batch.

    Raises:
        ValueError: if the global batch does not split evenly over the processes.
    """
    if batch_size % par.world:
        raise ValueError(f"pretrain.batch_size={batch_size} does not split over the {par.world} processes "
                         f"torchrun started; use a multiple of {par.world} (it is the global batch)")
    return batch_size // par.world


class ShardedBatches(Sampler[list[int]]):
    """Rank ``rank``'s share of each global batch of one seeded permutation (incomplete last batch dropped).

    Together the ranks' step-s shares are exactly the s-th global batch of the permutation, in rank order.
    ``drop_last=False`` (one process only) keeps the incomplete last batch.
    """

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, *,
                 drop_last: bool = True) -> None:
        if global_batch % world or not 0 <= rank < world or (not drop_last and world > 1):
            raise ValueError(f"ShardedBatches: global batch {global_batch} over {world} ranks (rank {rank})")
        self.n, self.global_batch, self.rank, self.world, self.seed = n, global_batch, rank, world, seed
        self.drop_last = drop_last

    def __len__(self) -> int:
        return self.n // self.global_batch if self.drop_last else -(-self.n // self.global_batch)

    def positions(self) -> Iterator[list[tuple[int, int]]]:
        """Each step's share as (video index, position in the epoch's permutation) pairs."""
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        share = self.global_batch // self.world
        for step in range(len(self)):
            start = step * self.global_batch + self.rank * share
            yield [(perm[i], i) for i in range(start, min(start + share, self.n))]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.positions():
            yield [i for i, _ in batch]


def sample_seed(epoch_seed: int, position: int) -> int:
    """The seed of the random draws (clip start, crop) of the sample at ``position`` of an epoch."""
    return (epoch_seed * 6364136223846793005 + position * 1442695040888963407 + 1) % 2**63


class MicroBatches(Sampler[list[tuple[int, int]]]):
    """A resumable batch sampler: ``ShardedBatches`` split into ``accumulate`` micro-batches per step, each
    sample paired with its own seed, starting at micro-batch ``start``.

    Every sample's random draws depend on the epoch seed and its position in the epoch only (see
    :class:`PositionSeeded`), not on the loader worker that reads it or on what that worker read before: an
    epoch resumed at any micro-batch, with any number of workers, reads exactly what it would have.
    """

    def __init__(self, batches: ShardedBatches, *, accumulate: int = 1, start: int = 0) -> None:
        self.batches, self.accumulate, self.start = batches, accumulate, start

    def __len__(self) -> int:
        return len(self.batches) * self.accumulate - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        seed, k = self.batches.seed, self.accumulate
        i = 0
        for batch in self.batches.positions():
            size = -(-len(batch) // k)
            for j in range(k):
                if i >= self.start:
                    yield [(idx, sample_seed(seed, pos)) for idx, pos in batch[j * size : (j + 1) * size]]
                i += 1


class PositionSeeded(Dataset):
    """``ds`` indexed by (index, seed): torch's RNG is seeded with ``seed`` for that one item.

    In the training process itself (no loader workers) the global RNG is forked around the read, so the
    training step's own draws are untouched.
    """

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> object:
        index, seed = item
        if torch.utils.data.get_worker_info() is not None:
            torch.manual_seed(seed)
            return self.ds[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.ds[index]


def epoch_loader(ds: Dataset, *, batch_size: int, workers: int, seed: int, par: Parallel, accumulate: int = 1,
                 start: int = 0, drop_last: bool = True,
                 worker_init_fn: Callable[[int], None] | None = None) -> DataLoader:
    """This rank's loader for one epoch, from micro-batch ``start`` on: its share of every global batch of
    ``batch_size``, split into ``accumulate`` micro-batches.

    The batch order depends on ``seed`` only (the same on every rank); each sample's draws depend on ``seed``
    and its position in the epoch, so the ranks (which read other positions) do not crop their clips alike.
    """
    batches = ShardedBatches(len(ds), batch_size, par.rank, par.world, seed,  # type: ignore[arg-type]
                             drop_last=drop_last)
    return PooledLoader(
        PositionSeeded(ds), batch_sampler=MicroBatches(batches, accumulate=accumulate, start=start),
        num_workers=workers, pin_memory=par.device.type == "cuda", worker_init_fn=worker_init_fn,
        # Its own generator: the loader's base seed is then not drawn from the training process's global RNG.
        generator=torch.Generator().manual_seed(seed), collate_fn=getattr(ds, "collate", None),
    )


def sharded_loader(ds: Dataset, *, batch_size: int, workers: int, seed: int, par: Parallel,
                   worker_init_fn: Callable[[int], None] | None = None) -> DataLoader:
    """This rank's loader for one whole epoch (:func:`epoch_loader` from its start, no accumulation)."""
    return epoch_loader(ds, batch_size=batch_size, workers=workers, seed=seed, par=par,
                        worker_init_fn=worker_init_fn)


def prepare(method: nn.Module, par: Parallel) -> nn.Module:
    """Make a freshly built method ready for data parallelism (no-op in one process): batch norm becomes
    SyncBatchNorm on CUDA."""
    if par.world == 1:
        return method
    if par.device.type == "cuda":
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    elif par.main:
        log.info("data-parallel on CPU: batch norm normalises each rank's share (torch has no CPU "
                 "SyncBatchNorm); running statistics are averaged after every epoch")
    return method


def seed_epoch(seed: int, par: Parallel) -> None:
    """Seed torch's global RNG from the epoch's seed and the rank (no-op in one process).

    Under data parallelism the in-process draws (augmentation with ``workers: 0``) then differ across ranks,
    which all started from one seed for identical weights, and an epoch repeats exactly on resume.
    """
    if par.world > 1:
        torch.manual_seed(seed * 1009 + par.rank)


def wrap(method: nn.Module, par: Parallel) -> nn.Module:
    """The module to call for each training step: ``method`` itself in one process, else wrapped in
    DistributedDataParallel, which averages gradients over the ranks during backward.

    Methods train through ``forward(batch, epoch)`` (= ``training_step``). A method whose parameters take no
    gradient in some steps (MLFO's prototypes in epoch 0, its graph heads before ``split``) says so with
    ``unused_parameters``, which turns on DDP's per-step search for them; the others skip that search. Buffers are not broadcast: the methods keep queues and banks identical by
    gathering, batch-norm statistics are averaged by :func:`sync_state`, which also checks the rest.
    With the methods' gathers (whose backward sums over ranks) the averaged gradient is that of the
    single-process loss on the global batch.
    """
    if par.world == 1:
        return method
    from torch.nn.parallel import DistributedDataParallel

    ids = [par.device.index] if par.device.type == "cuda" else None
    # The backbones run channels-last (vidssl.models.base), so conv weight gradients come out channels-last:
    # weights in the same layout let DDP reduce them in place instead of copying every gradient every step.
    method.to(memory_format=torch.channels_last_3d)
    # Newer torch names "no buffer sync in forward" forward_sync_buffers; the install keeps an older CUDA torch.
    no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else "broadcast_buffers")
    unused = getattr(method, "unused_parameters", False)
    return DistributedDataParallel(method, device_ids=ids, find_unused_parameters=unused, **{no_sync: False})


def merge_epoch_sums(sums: dict[str, float], counts: dict[str, int], par: Parallel
                     ) -> tuple[dict[str, float], dict[str, int]]:
    """Per-term sums and counts of this epoch's logged values, added up over the ranks."""
    if par.world == 1:
        return sums, counts
    parts: list[tuple[dict[str, float], dict[str, int]] | None] = [None] * par.world
    dist.all_gather_object(parts, (sums, counts))
    total: dict[str, float] = {}
    seen: dict[str, int] = {}
    for part in parts:
        assert part is not None
        for k, v in part[0].items():
            total[k] = total.get(k, 0.0) + v
        for k, c in part[1].items():
            seen[k] = seen.get(k, 0) + c
    return total, seen


def sync_state(module: nn.Module, par: Parallel, epoch: int) -> None:
    """End of an epoch: average batch-norm running statistics over the ranks, then check that every other
    parameter and buffer is the same on every rank.

    Raises:
        RuntimeError: naming the first tensor that differs (the ranks would otherwise train apart silently).
    """
    if par.world == 1:
        return
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            for buf in (m.running_mean, m.running_var):
                dist.all_reduce(buf)
                buf /= par.world
    named = [*module.named_parameters(), *module.named_buffers()]
    named = [(n, t) for n, t in named if t.is_floating_point()]
    # One float64 fingerprint per tensor (its sum and its sum of squares): cheap to compare across ranks.
    mine = torch.stack([torch.stack([t.detach().double().sum(), t.detach().double().square().sum()])
                        for _, t in named]).cpu()
    everyone = _gather_cpu(mine)
    differ = (everyone != mine.unsqueeze(0)).any(dim=0).any(dim=1)
    if bool(differ.any()):
        name = named[int(differ.nonzero()[0])][0]
        raise RuntimeError(f"data-parallel: after epoch {epoch + 1} rank {par.rank} holds a different {name!r} "
                           "than another rank; every rank must apply the same update to every tensor")


def _gather_cpu(x: torch.Tensor) -> torch.Tensor:
    """Stack ``x`` from every rank (W × ...), moved through the device the backend needs and back to CPU."""
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else x.device
    out = [torch.empty_like(x, device=dev) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.to(dev))
    return torch.stack(out).cpu()
