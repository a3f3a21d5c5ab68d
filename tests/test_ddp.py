"""Data-parallel pretraining (vidssl.engine.ddp): sharded batches, averaged gradients equal to one process's, banks kept
identical, divergence caught, and `vidssl pretrain` under torchrun (gloo, 2 CPU processes)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import yaml

from vidssl.engine import ddp
from vidssl.engine.checkpoint import latest_checkpoint, load_state_dict
from vidssl.methods.bank import MemoryBank
from vidssl.methods.distributed import gather_with_grad
from vidssl.methods.losses import nt_xent


@pytest.mark.parametrize("n, batch, world", [(10, 4, 2), (13, 6, 3), (8, 8, 4), (5, 2, 1)])
def test_rank_shares_make_up_the_single_process_batches(n: int, batch: int, world: int) -> None:
    shares = [list(ddp.ShardedBatches(n, batch, r, world, seed=3)) for r in range(world)]
    single = list(ddp.ShardedBatches(n, batch, 0, 1, seed=3))
    assert len(single) == n // batch and all(len(s) == len(single) for s in shares)
    for step, whole in enumerate(single):
        together = [i for r in range(world) for i in shares[r][step]]
        assert together == whole and len(whole) == batch  # rank order = the single-process batch
    used = [i for s in single for i in s]
    assert len(set(used)) == len(used) and set(used) <= set(range(n))  # each video at most once an epoch
    assert list(ddp.ShardedBatches(n, batch, 0, world, seed=4)) != shares[0] or n // batch == 0


def test_global_batch_must_split_over_the_processes() -> None:
    par = ddp.Parallel(rank=0, world=3)
    assert ddp.per_rank_batch(12, par) == 4
    with pytest.raises(ValueError, match=r"pretrain.batch_size=16 .* 3 processes .* multiple of 3"):
        ddp.per_rank_batch(16, par)


def test_only_pretraining_is_data_parallel(tiny_lists: Path, tmp_path: Path, monkeypatch) -> None:
    from vidssl.config import parse_params
    from vidssl.pipeline.stages import retrieval_scores
    from vidssl.engine.train import finetune

    cfg = parse_params({"model": {"backbone": "tiny", "width": 4}})
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"finetune runs in one process.*WORLD_SIZE=2.*without torchrun"):
        finetune(cfg, tiny_lists, None, tmp_path / "s", tmp_path / "o")
    with pytest.raises(ValueError, match=r"retrieve runs in one process"):
        retrieval_scores(cfg, tiny_lists, None, tmp_path / "f")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match=r"WORLD_SIZE=2 but RANK.*not set.*torchrun"):
        ddp.setup()


def test_single_process_helpers_change_nothing() -> None:
    par = ddp.Parallel()
    w = torch.nn.Linear(3, 2)
    before = w.weight.detach().clone()
    ddp.sync_state(w, par, 0)
    assert torch.equal(w.weight, before) and ddp.wrap(w, par) is w
    assert ddp.merge_epoch_sums({"loss": 2.0}, {"loss": 1}, par) == ({"loss": 2.0}, {"loss": 1})
    assert ddp.prepare(w, par) is w
    state = torch.get_rng_state()
    ddp.seed_epoch(5, par)
    assert torch.equal(torch.get_rng_state(), state)


def test_cuda_ranks_synchronise_batch_norm_and_the_backbone_still_loads_plainly() -> None:
    from vidssl.config import parse_params
    from vidssl.methods.registry import build_method
    from vidssl.models import build_backbone

    cfg = parse_params({"pretrain": {"method": "mlfo", "mlfo": {"cluster": 4}}})
    method = build_method("mlfo", build_backbone("tiny", width=4), cfg, n_samples=8)
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in method.modules())
    # Conversion needs no GPU (only SyncBatchNorm's forward does), so a CUDA rank is described, not used.
    cuda_rank = ddp.Parallel(rank=0, world=2, device=torch.device("cuda", 0))
    synced = ddp.prepare(method, cuda_rank)
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules()) == n_bn > 0
    build_backbone("tiny", width=4).load_state_dict(synced.backbone.state_dict(), strict=True)
    cpu_rank = ddp.Parallel(rank=0, world=2)
    plain = build_method("mlfo", build_backbone("tiny", width=4), cfg, n_samples=8)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in ddp.prepare(plain, cpu_rank).modules())


def _data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)


class _Contrast(torch.nn.Module):
    """A small 'method': NT-Xent with gathered negatives over a BN'd MLP, called as forward(batch, epoch)."""

    unused_parameters = True  # as a vidssl Method declares it: `self.unused` takes no gradient

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 4))
        self.unused = torch.nn.Linear(2, 2)  # takes no gradient, as MLFO's graph heads before `split`

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor], epoch: int) -> tuple[torch.Tensor, dict]:
        z1, z2 = (F.normalize(self.net(x), dim=1) for x in batch)
        return nt_xent(z1, z2, 0.2, gather=gather_with_grad), {"epoch": float(epoch)}


def _worker(rank: int, world: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    par = ddp.Parallel(rank=rank, world=world)
    out: dict[str, object] = {}
    # 1. Each rank on its half of the batch, through DDP: the gradients are averaged during backward.
    x1, x2 = _data(1)
    half = slice(4 * rank, 4 * rank + 4)
    method = _Contrast()
    model = ddp.wrap(method, par)
    assert model is not method
    loss, _ = model((x1[half], x2[half]), 0)
    loss.backward()
    out["grads"] = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    # 2. Memory bank: each rank writes its own rows, every rank ends with all of them.
    bank = MemoryBank(8, 3, momentum=0.5, seed=0)
    bank.update(torch.arange(4 * rank, 4 * rank + 4), torch.randn(4, 3, generator=torch.Generator().manual_seed(rank)))
    out["bank"] = bank.memory.clone()
    # 3. End of epoch: BN running statistics averaged; identical weights pass the check.
    ddp.sync_state(method, par, 0)
    out["running_mean"] = method.net[1].running_mean.clone()
    # 4. A rank that updated a weight on its own is caught, on every rank.
    with torch.no_grad():
        method.net[2].bias[0] += rank
    try:
        ddp.sync_state(method, par, 4)
    except RuntimeError as err:
        out["diverged"] = str(err)
    out["sums"] = ddp.merge_epoch_sums({"loss": 1.0 + rank, "acc": 0.5}, {"loss": 1, "acc": 1 + rank}, par)
    torch.save(out, f"{folder}/r{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_train_like_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    out = [torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in range(2)]

    # Reference: one process, the whole batch, one loss. BatchNorm normalises each rank's half on its own
    # (no SyncBatchNorm on CPU), so the reference passes the two halves through the model separately.
    method = _Contrast()
    x1, x2 = _data(1)
    z1 = torch.cat([F.normalize(method.net(x1[i : i + 4]), dim=1) for i in (0, 4)])
    z2 = torch.cat([F.normalize(method.net(x2[i : i + 4]), dim=1) for i in (0, 4)])
    nt_xent(z1, z2, 0.2).backward()
    ref = {n: p.grad for n, p in method.named_parameters() if p.grad is not None}
    for o in out:
        assert o["grads"].keys() == ref.keys() and not any("unused" in n for n in ref)
        for name, grad in ref.items():
            torch.testing.assert_close(o["grads"][name], grad)

    bank = MemoryBank(8, 3, momentum=0.5, seed=0)
    feats = torch.cat([torch.randn(4, 3, generator=torch.Generator().manual_seed(r)) for r in range(2)])
    bank.update(torch.arange(8), feats)
    for o in out:
        torch.testing.assert_close(o["bank"], bank.memory)

    torch.testing.assert_close(out[0]["running_mean"], out[1]["running_mean"])
    assert not torch.equal(out[0]["running_mean"], torch.zeros(6))
    for o in out:
        assert "after epoch 5" in o["diverged"] and "'net.2.bias'" in o["diverged"]
        assert o["sums"] == ({"loss": 3.0, "acc": 1.0}, {"loss": 2, "acc": 3})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun_pretrain(tmp_path: Path, lists: Path, method: str, epochs: int) -> subprocess.CompletedProcess:
    params = {
        "seed": 7,
        "model": {"backbone": "tiny", "width": 4},
        "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
        "pretrain": {"method": method, "epochs": epochs, "batch_size": 4, "workers": 0, "lr": 0.01,
                     "iic": {"nce_k": 4}, "mlfo": {"cluster": 4, "queue_size": 8}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "vidssl.cli", "--defaults", "pretrain", str(lists), str(tmp_path / "out"), "--state", str(tmp_path / "state"),
           "--metrics", str(tmp_path / "metrics.json"), "--plots", str(tmp_path / "plots"),
           "--params", str(tmp_path / "params.yaml")]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["iic", "mlfo"])
def test_vidssl_pretrain_under_torchrun_trains_resumes_and_writes_once(
    tiny_lists: Path, tmp_path: Path, method: str
) -> None:
    first = _torchrun_pretrain(tmp_path, tiny_lists, method, epochs=2)
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stderr
    assert log.count("epoch 1/2") == 1 and log.count("epoch 2/2") == 1  # rank 0 logs; rank 1 trains quietly
    state = load_state_dict(latest_checkpoint(tmp_path / "state"))
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in state["history"])
    backbone = load_state_dict(tmp_path / "out" / "backbone.pt")
    assert backbone["name"] == "tiny" and all(torch.isfinite(v.float()).all() for v in backbone["backbone"].values())
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "plots" / "pretrain_loss.png").is_file()
    # The same command again: every rank resumes from rank 0's checkpoint, and nothing is trained twice.
    second = _torchrun_pretrain(tmp_path, tiny_lists, method, epochs=2)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("resuming from") == 1 and "epoch 2/2" not in second.stderr
    again = load_state_dict(tmp_path / "out" / "backbone.pt")["backbone"]
    assert all(torch.equal(again[k], v) for k, v in backbone["backbone"].items())
