"""GPU checks (`pytest -m gpu`): skipped without CUDA; on a GPU, one bf16 training step of every method and a
bf16 pretraining epoch with its telemetry."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _cfg(method: str, **train: object) -> object:
    from vidssl.config import parse_params

    return parse_params({"seed": 0, "model": {"backbone": "tiny", "width": 8},
                         "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
                         "pretrain": {"method": method, "epochs": 1, "batch_size": 4, "workers": 0,
                                      "iic": {"nce_k": 4}},
                         "train": {"precision": "bf16", **train}})


def _methods() -> list[str]:
    from vidssl.methods.registry import METHODS

    return sorted(METHODS)


@pytest.mark.parametrize("method", _methods())
def test_one_bf16_step_of_every_method(method: str) -> None:
    from vidssl.engine.plan import measure

    dev = torch.device("cuda")
    model, static, per_sample, _ = measure(_cfg(method), dev, batch=4)
    assert static > 0 and per_sample > 0
    backbone = model.backbone
    assert backbone.autocast_dtype == torch.bfloat16
    out = backbone(torch.rand(2, 3, 8, 32, 32, device=dev))
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())


def test_a_bf16_pretraining_epoch_reports_gpu_telemetry(tiny_lists: Path, tmp_path: Path) -> None:
    from vidssl.engine.train import pretrain

    summary = pretrain(_cfg("iic"), tiny_lists, tmp_path / "state", tmp_path / "out")
    last = summary["history"][-1]
    assert summary["precision"] == "bf16" and math.isfinite(last["loss"])
    assert last["peak_gpu_mem_gib"] > 0 and last["clips_per_s"] > 0 and 0 <= last["data_wait"] <= 1


def test_fp16_keeps_its_gradient_scaler_state(tiny_lists: Path, tmp_path: Path) -> None:
    from vidssl.engine.checkpoint import latest_checkpoint, load_state_dict
    from vidssl.engine.train import pretrain

    pretrain(_cfg("moco", precision="fp16"), tiny_lists, tmp_path / "state", tmp_path / "out")
    assert load_state_dict(latest_checkpoint(tmp_path / "state"))["precision"]["scale"] > 0


def test_ranking_on_the_gpu_equals_the_cpu_ties_included() -> None:
    from vidssl.evaluation.retrieval import topk_neighbours

    g = torch.Generator().manual_seed(0)
    gallery = torch.randn(500, 64, generator=g)
    gallery[250:] = gallery[:250]  # every row twice: each query's neighbours come in tied pairs
    queries = torch.cat([gallery[:40] + 0.01 * torch.randn(40, 64, generator=g), gallery[:10]])
    for chunk in (2**12, 2**28):  # gallery blocks merged, and whole rows at once
        cpu = topk_neighbours(queries, gallery, 7, chunk_bytes=chunk, device="cpu")
        gpu = topk_neighbours(queries, gallery, 7, chunk_bytes=chunk, device="cuda")
        assert (gpu[1] == cpu[1]).all()
        assert abs(gpu[0] - cpu[0]).max() < 1e-5
    assert (cpu[1][:, 1] == cpu[1][:, 0] + 250).all()  # a tie goes to the lower gallery index first
