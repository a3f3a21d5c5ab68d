"""Held-out objective: what a method's own time and motion terms score on videos it never trained on.

Retrieval says whether a method's features group videos by class; it cannot say whether the method learned what
its add-ons ask for. Each method names, in ``Method.probes``, the accuracies it logs for those add-ons (DualVar:
shuffled halves ranked right; BE: the anchor nearer its positive than its own video's other-time clip; MLFO: a
clip nearer its video's other clip than the time-reversed copies; VCOP: clip order). The probe runs the method's
own ``training_step`` without gradient over the test list, once with the pretrained weights and once at random
init (the same seed, so the same starting weights), and averages those accuracies. A rise means the objective
was learned and carries over to unseen videos, whatever retrieval then shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidssl.config import Params

PASSES = 3  # passes over the test list, each with fresh clips, views and shuffles (60 demo videos are few)


def heldout_probes(cfg: Params, lists_dir: Path, state: Path | None, *, passes: int = PASSES) -> dict[str, float]:
    """Mean of ``cfg.pretrain.method``'s probe accuracies over ``passes`` passes of the test list.

    Args:
        cfg: params; ``pretrain.method`` names the method, ``seed`` its initial weights and the clip draws.
        lists_dir: folder with ``pretrain.csv`` (sizes a memory bank, if any) and ``test.csv``.
        state: a pretraining ``last.pt`` (its ``method`` entry is loaded), or None for random init.
        passes: passes over the test list.

    Returns:
        {probe term: mean over the batches that measured it}; empty for a method without probes.

    Raises:
        ValueError: if the test list has fewer videos than a batch needs (2).
    """
    import torch

    from vidssl.engine.checkpoint import load_state_dict
    from vidssl.data.clips import read_list
    from vidssl.methods.registry import build_method
    from vidssl.engine.train import build_model_backbone, clip_spec, device, make_loader, move_batch, seed_all

    seed_all(cfg.seed)  # as pretrain() does before building, so random init here is its starting point
    n_pretrain = len(read_list(Path(lists_dir) / "pretrain.csv"))
    method = build_method(cfg.pretrain.method, build_model_backbone(cfg), cfg, n_samples=n_pretrain)
    if not method.probes:
        return {}
    if state is not None:
        # The weights, not the generator states (`_extra_state`): random init and the trained method are then
        # probed with the same draws, a paired comparison.
        weights = {k: v for k, v in load_state_dict(state)["method"].items() if not k.endswith("_extra_state")}
        missing, unexpected = method.load_state_dict(weights, strict=False)
        if [k for k in missing if not k.endswith("_extra_state")] or unexpected:
            raise ValueError(f"{state}: not a checkpoint of this method's settings (missing {missing}, "
                             f"unexpected {unexpected}); pretrain it again")
    test = read_list(Path(lists_dir) / "test.csv")
    batch_size = min(cfg.pretrain.batch_size, len(test))
    if batch_size < 2:
        raise ValueError(f"{Path(lists_dir) / 'test.csv'}: {len(test)} video(s); the probe needs at least 2")
    dev = device()
    # Training mode: the objective as it was optimised (batch statistics, training-time views); no_grad and a
    # method built for this call only, so nothing it updates on the way (BN stats, queues) is kept.
    method.to(dev).train()
    ds = method.make_dataset(test, clip_spec(cfg), cfg)
    augment = method.make_augment(clip_spec(cfg), cfg)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    with torch.no_grad():
        for k in range(passes):
            loader = make_loader(ds, batch_size=batch_size, workers=0, shuffle=True, seed=cfg.seed * 1000 + k,
                                 drop_last=True)
            for batch in loader:
                batch = augment(move_batch(batch, dev, floats=False), method.augment_generator)
                _, terms = method.training_step(batch, cfg.pretrain.epochs - 1)
                for name in method.probes:
                    if name in terms:
                        sums[name] = sums.get(name, 0.0) + terms[name]
                        counts[name] = counts.get(name, 0) + 1
    return {name: sums[name] / counts[name] for name in sums}
