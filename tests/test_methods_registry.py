"""Every registered method, through its own dataset and device augmentation: finite loss, gradients reach the
backbone, terms by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidssl.config import parse_params
from vidssl.data.clips import ClipSpec, read_list
from vidssl.methods.registry import METHODS, build_method
from vidssl.models import build_backbone
from vidssl.engine.train import make_loader, move_batch


# The CUDA case runs where a GPU is (the lent device machine); CI has none and skips it.
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _tiny_step(name: str, lists: Path, device: str = "cpu", epoch: int = 0):
    """A freshly built ``name`` (tiny backbone, seed 0) and its loss and terms on one batch of its own dataset."""
    torch.manual_seed(0)
    cfg = parse_params({"pretrain": {"method": name, "batch_size": 4, "workers": 0}})
    records = read_list(lists / "pretrain.csv")
    method = build_method(name, build_backbone("tiny", width=4), cfg, n_samples=len(records)).to(device)
    spec = ClipSpec(frames=8, stride=1, resize=40, crop=32)
    ds = method.make_dataset(records, spec, cfg)
    batch = move_batch(next(iter(make_loader(ds, batch_size=4, workers=0, shuffle=True, seed=0, drop_last=True))),
                       torch.device(device), floats=False)
    batch = method.make_augment(spec, cfg)(batch, method.augment_generator)
    clips = [b for b in batch if torch.is_tensor(b) and b.dim() >= 5]
    assert clips and all(c.shape[-2:] == (32, 32) and c.device.type == device for c in clips)
    method.train()
    loss, terms = method.training_step(batch, epoch=epoch)
    return method, loss, terms


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_trains_on_a_tiny_batch(name: str, device: str, tiny_lists: Path) -> None:
    method, loss, terms = _tiny_step(name, tiny_lists, device)
    assert loss.device.type == device
    assert torch.isfinite(loss)
    assert "loss" in terms and all(isinstance(k, str) and k for k in terms)
    assert terms["loss"] == pytest.approx(loss.item(), rel=1e-4)
    loss.backward()
    grads = [p.grad for p in method.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "no gradient reached the backbone"
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    method.on_step_end()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_unused_parameters_flag_matches_the_gradients(name: str, tiny_lists: Path) -> None:
    """``Method.unused_parameters`` switches DDP's per-step search for parameters without a gradient: a method
    that leaves some out but does not say so would fail under DDP, one that says so needlessly is slower."""
    missing = set()
    for epoch in (0, 10**6):  # before and after every epoch switch (MLFO: prototypes frozen, graph from `split`)
        method, loss, _ = _tiny_step(name, tiny_lists, epoch=epoch)
        loss.backward()
        missing |= {n for n, p in method.named_parameters() if p.requires_grad and p.grad is None}
    assert bool(missing) == METHODS[name].unused_parameters, sorted(missing)


def test_unknown_method_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose from"):
        build_method("byol", build_backbone("tiny", width=4), parse_params({}), n_samples=4)
