"""`vidssl plan` and gradient accumulation rules: measured memory, what fits, what is refused."""

from __future__ import annotations

import pytest
import torch

from vidssl.config import parse_params
from vidssl.engine.plan import GIB, HEADROOM, accumulation_allowed, check_accumulation, fit, plan


def _cfg(**pretrain: object) -> object:
    return parse_params({"model": {"backbone": "tiny", "width": 4},
                         "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
                         "pretrain": {"batch_size": 8, "epochs": 3, "iic": {"nce_k": 4}, **pretrain}})


def test_fit_picks_the_least_accumulation_whose_micro_batch_fits() -> None:
    budget = 10 * GIB * (1 - HEADROOM)
    static, per = int(1 * GIB), int(1 * GIB)  # 1 GiB static, 1 GiB per sample: 8 samples fit in 10 GiB
    assert fit(static, per, 8, 1, 10, True) == (1, 8)
    assert fit(static, per, 16, 1, 10, True) == (2, 8)
    assert fit(static, per, 16, 2, 10, True) == (1, 8)  # two GPUs take 8 each
    assert fit(static, per, 16, 1, 10, False) == (None, None)  # in-batch negatives: no accumulation
    assert fit(static, int(budget), 4, 1, 10, True) == (None, None)  # not even one sample
    assert fit(static, per, 12, 1, 10, True) == (2, 6)  # 12 does not split into 8s: the next divisor


def test_accumulation_only_where_the_loss_allows_it() -> None:
    assert accumulation_allowed(_cfg(method="iic")) and accumulation_allowed(_cfg(method="moco"))
    assert not accumulation_allowed(_cfg(method="simclr")) and not accumulation_allowed(_cfg(method="mlfo"))
    check_accumulation(parse_params({**_cfg().model_dump(), "train": {"accumulate": 2}}))
    with pytest.raises(ValueError, match=r"train.accumulate=2: simclr's negatives are the other clips"):
        check_accumulation(parse_params({**_cfg(method="simclr").model_dump(), "train": {"accumulate": 2}}))
    with pytest.raises(ValueError, match=r"pretrain.batch_size=8 does not split into 1 GPU\(s\) x 3"):
        check_accumulation(parse_params({**_cfg().model_dump(), "train": {"accumulate": 3}}))


def test_plan_measures_a_step_on_this_device() -> None:
    p = plan(_cfg(), gpu_mem_gib=80, n_videos=40, dev=torch.device("cpu"))
    assert p.params > 0 and p.trainable <= p.params
    # IIC encodes 2 views (+1 intra-negative) of a 3x8x32x32 clip: the saved activations are at least the
    # two clip inputs themselves in fp32, and far below a gigabyte for the tiny backbone.
    assert 2 * 3 * 8 * 32 * 32 * 4 <= p.activation_bytes_per_sample < GIB
    assert (p.accumulate, p.micro_batch) == (1, 8) and p.optimizer_steps == 3 * (40 // 8)
    text = "\n".join(p.lines())
    assert "parameters:" in text and "train.accumulate: 1" in text and "memory banks" in text
    tiny = plan(_cfg(), gpu_mem_gib=(p.static_bytes + 3 * p.activation_bytes_per_sample) / GIB / (1 - HEADROOM),
                dev=torch.device("cpu"))
    assert (tiny.accumulate, tiny.micro_batch) == (4, 2)  # 3 samples' room: micro-batches of 2


def test_a_batch_that_does_not_fit_stops_with_the_numbers() -> None:
    from vidssl.engine.plan import refuse_if_over

    cfg = _cfg(method="iic")  # batch 8
    refuse_if_over(cfg, 1, GIB, GIB, 10)  # 1 + 8 GiB within 10 GiB less headroom
    with pytest.raises(ValueError, match=r"micro-batch 8 needs 17.0 GiB .* 10 GiB; set train.accumulate: 2 "
                                         r"\(micro-batch 4\)"):
        refuse_if_over(cfg, 1, GIB, 2 * GIB, 10)
    with pytest.raises(ValueError, match=r"more GPUs"):
        refuse_if_over(_cfg(method="simclr"), 1, GIB, 2 * GIB, 10)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["iic", "dualvar", "be", "mlfo", "cmc", "moco", "simclr", "vcop", "be_moco"])
def test_every_method_takes_a_bf16_step_on_the_cpu(method: str) -> None:
    """The path the GPU tests take (tests/test_gpu.py), on the CPU: bf16 backbone, fp32 everything after it."""
    from vidssl.engine.plan import measure

    cfg = parse_params({**_cfg(method=method).model_dump(), "train": {"precision": "bf16"}})
    model, static, per_sample, _ = measure(cfg, torch.device("cpu"), batch=4)
    assert static > 0 and per_sample > 0 and model.backbone.autocast_dtype == torch.bfloat16
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
