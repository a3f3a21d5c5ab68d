"""Fine-tune protocols: each seed's way to fine-tune and test, as one object the training loop reads.

``finetune.protocol`` names one (``plain``, ``iic``, ``dualvar``, ``be``, ``mlfo``); the ``finetune`` keys
(epochs, lr, momentum, weight decay, batch size, test clips) stay the user's, and the protocol fixes the rest:
the schedule's shape (milestones scale with ``finetune.epochs``), model selection, train-time augmentation,
dropout, clip geometry, test clips or dense windows, logit or softmax averaging and input normalisation.
docs/methods.md lists each setting with the line of the seed's code it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from vidssl.data.clips import ClipDataset, ClipSpec, MultiClipDataset, VideoRecord, center_crop

# Fine-tuning draws its augmentation from a generator of its own (pretraining methods use 0x5EED).
FINETUNE_AUGMENT_SEED_OFFSET = 0xF17E
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FinetuneProtocol:
    """How to fine-tune and test one backbone; see the module docstring."""

    name: str
    schedule: str = "cosine"  # cosine | plateau (on validation loss) | multistep
    milestones: tuple[float, ...] = ()  # multistep: fractions of the epochs at which the lr is multiplied
    gamma: float = 0.1
    patience: int = 50  # plateau: epochs without a better validation loss before the lr drops
    min_lr: float = 0.0
    select: str = "last"  # last | val_loss (the epoch with the lowest loss on val.csv is tested)
    flip: bool = False  # train-time horizontal flip, once per clip
    jitter: tuple[float, float, float, float] | None = None  # ColorJitter strengths, once per clip
    jitter_p: float = 0.8
    rotate: float = 0.0  # train-time rotation, at most this many degrees either way, once per clip
    scale: tuple[float, float] | None = None  # random resized crop's area range; None: a plain random crop
    dropout: float = 0.0  # before the linear head
    frames: int | None = None  # None: clip.frames
    stride: int | None = None  # None: clip.stride
    test: str = "clips"  # clips: finetune.test_clips evenly spaced | dense: every window ``dense_step`` apart
    dense_step: int = 10  # 0: CoCLR's half overlap, frames * stride // 2 - 1 frames apart
    dense_max: int = 0  # dense: at most this many windows per video (0: all)
    crops: int = 1  # dense: 1 (centre crop) | 10 (centre and four corners, each also flipped: CoCLR's --ten_crop)
    average: str = "logits"  # logits | softmax: what is averaged over a video's clips
    normalise: bool = False  # ImageNet mean and std on the [0, 1] input
    residual: bool = False  # the network sees x - roll(x, 1) over time, unscaled (IIC's --modality res)

    def clip_spec(self, base: ClipSpec) -> ClipSpec:
        """``base`` with this protocol's frames and stride, where it sets them."""
        from dataclasses import replace

        return replace(base, frames=self.frames or base.frames, stride=self.stride or base.stride)

    def milestone_epochs(self, epochs: int) -> list[int]:
        """The multistep milestones at ``epochs`` epochs (each at least 1, strictly rising)."""
        out: list[int] = []
        for m in self.milestones:
            e = max(1, round(m * epochs))
            if not out or e > out[-1]:
                out.append(e)
        return out


PROTOCOLS: dict[str, FinetuneProtocol] = {
    # The earlier single protocol: cosine to zero, last epoch, random crop, logits averaged.
    "plain": FinetuneProtocol("plain"),
    # ft_classify.py: ReduceLROnPlateau on val loss (x0.1, patience 50, min 1e-5), best val loss tested,
    # RandomCrop only, no normalisation, 10 linspace clips, mean of logits; by default (--modality res) it
    # trains, validates and tests on the residual clip x - roll(x, 1), without its pretraining's rescaling.
    "iic": FinetuneProtocol("iic", schedule="plateau", gamma=0.1, patience=50, min_lr=1e-5, select="val_loss",
                            residual=True),
    # paper_scripts finetune: 100 epochs x0.1 at 30/60/80, stride 2, flip + ColorJitter(.8,.8,.8,.2, p .8)
    # consistent within a clip, ImageNet normalisation, last epoch, 10 clips, softmax averaged.
    "dualvar": FinetuneProtocol("dualvar", schedule="multistep", milestones=(0.3, 0.6, 0.8), gamma=0.1, flip=True,
                                jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=0.8, stride=2, average="softmax",
                                normalise=True),
    # ft.py / scripts: 45 epochs, lr x0.3 at 10/20/25/30/35/40, dropout 0.5, 64 frames at stride 1, ImageNet
    # normalisation; its fine-tuning transform (data/config.py, ft_augmentation_config) rotates up to 10 degrees,
    # crops and jitters colour (.5, .5, .25, .5) on every clip, as its pretraining does; test.py: 64-frame
    # windows 10 frames apart, softmax averaged, and its loop stops after the second window (``if i > 1:
    # break``), which dense_max keeps.
    "be": FinetuneProtocol("be", schedule="multistep", milestones=tuple(e / 45 for e in (10, 20, 25, 30, 35, 40)),
                           gamma=0.3, rotate=10.0, jitter=(0.5, 0.5, 0.25, 0.5), jitter_p=1.0, dropout=0.5,
                           frames=64, stride=1, test="dense", dense_step=10, dense_max=2, average="softmax",
                           normalise=True),
    # MLFO releases no evaluation code and points to CoCLR's: eval/main_classifier.py's train transform
    # (random sized crop of 20-100% of the area, ColorJitter(.4, .4, .4, .1, p .3) consistent within a clip,
    # flip), dropout 0.9, ImageNet normalisation; its README's fine-tuning run: x0.1 at 400 and 450 of 500
    # epochs; its README's test (--ten_crop): every window of the video, half overlapping (lmdb_dataset.py's
    # test sampler), in ten crops, softmax averaged.
    "mlfo": FinetuneProtocol("mlfo", schedule="multistep", milestones=(0.8, 0.9), gamma=0.1, flip=True,
                             jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.3, scale=(0.2, 1.0), dropout=0.9,
                             test="dense", dense_step=0, crops=10, average="softmax", normalise=True),
}


def get_protocol(name: str) -> FinetuneProtocol:
    """The protocol called ``name``.

    Raises:
        ValueError: naming the key and the choices, for an unknown name.
    """
    if name == "linear":
        raise ValueError("finetune.protocol linear trains a head on frozen, cached features; it runs through "
                         "vidssl.evaluation.linear.linear_probe (the finetune stage dispatches it), not this loop")
    if name not in PROTOCOLS:
        raise ValueError(f"finetune.protocol: unknown protocol {name!r}; choose from {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


class Normalise(nn.Module):
    """ImageNet mean/std on B×3×T×H×W input in [0, 1] (DualVar, BE, MLFO normalise; IIC does not)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_scheduler(proto: FinetuneProtocol, opt: torch.optim.Optimizer, epochs: int) -> object:
    """The protocol's learning-rate schedule over ``epochs`` (plateau steps with the validation loss)."""
    if proto.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "min", factor=proto.gamma, patience=proto.patience,
                                                          min_lr=proto.min_lr)
    if proto.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, proto.milestone_epochs(epochs), gamma=proto.gamma)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)


def residual(x: torch.Tensor) -> torch.Tensor:
    """B×3×T×H×W clips -> each frame minus the one before it (the first minus the last, as torch.roll wraps).

    IIC's fine-tuning input (ft_classify.py ``diff``): unscaled, unlike the ((x - roll) + 1) / 2 view its
    pretraining contrasts.
    """
    return x - torch.roll(x, 1, dims=2)


class DeviceAugment(nn.Module):
    """The protocol's train-time augmentation (random crop; flip, rotation and colour jitter where the protocol asks),
    batched on the training device, parameters drawn once per clip from its own generator.

    A module so that the generator's state rides in the checkpoint (``get_extra_state``): a resumed run draws
    exactly what the uninterrupted run would have.
    """

    def __init__(self, crop: int, proto: FinetuneProtocol, seed: int) -> None:
        from vidssl.data.augment import AugmentSpec

        super().__init__()
        self.spec = AugmentSpec(crop=crop, scale=proto.scale, flip=proto.flip, jitter=proto.jitter,
                                jitter_p=proto.jitter_p, rotate=proto.rotate)
        self.generator = torch.Generator().manual_seed(seed + FINETUNE_AUGMENT_SEED_OFFSET)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 (or float) N×3×T×H×W clips at the loader's resize -> float N×3×T×S×S in [0, 1]."""
        from vidssl.data.batch_augment import augment_views

        return augment_views([clips], self.spec, self.generator)[0]

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])


def dense_starts(n_frames: int, span: int, step: int) -> list[int]:
    """Start frames of every ``span``-frame window ``step`` apart (one window at 0 for a shorter video)."""
    return list(range(0, max(n_frames - span, 0) + 1, step))


def ten_crops(clips: torch.Tensor, size: int) -> torch.Tensor:
    """N×3×T×H×W -> 10N×3×T×S×S: the centre and four corner crops, then the same five flipped left-right."""
    h, w = clips.shape[-2:]
    corners = [((h - size) // 2, (w - size) // 2), (0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]
    five = [clips[..., t:t + size, x:x + size] for t, x in corners]
    return torch.cat(five + [c.flip(-1) for c in five])


class DenseClipDataset(MultiClipDataset):
    """Every window ``step`` frames apart (BE's test; ``step`` 0: CoCLR's ``frames * stride // 2 - 1``), centre
    cropped or in ten crops: (N×3×T×S×S uint8, label, index); N varies with the video's length, so load it with
    batch size 1."""

    def __init__(self, records: Sequence[VideoRecord], spec: ClipSpec, step: int, max_windows: int = 0,
                 crops: int = 1) -> None:
        if crops not in (1, 10):
            raise ValueError(f"dense test crops: 1 (centre) or 10 (centre, corners, flipped), got {crops}")
        super().__init__(records, spec, n_clips=1)
        self.step, self.max_windows, self.crops = step, max_windows, crops

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        rec, s = self.records[index], self.spec
        step = self.step or max(1, s.frames * s.stride // 2 - 1)
        starts = dense_starts(rec.n_frames, s.span, step)
        starts = starts[: self.max_windows] if self.max_windows else starts
        clips = [[st + i * s.stride for i in range(s.frames)] for st in starts]
        wanted = sorted({i for c in clips for i in c})
        where = {f: k for k, f in enumerate(wanted)}
        video = self.load(index, wanted)
        stacked = torch.stack([video[:, [where[f] for f in c]] for c in clips])
        out = ten_crops(stacked, s.crop) if self.crops == 10 else center_crop(stacked, s.crop)
        return out.contiguous(), rec.label, index


def video_scores(logits: torch.Tensor, average: str) -> torch.Tensor:
    """N×C clip logits of one video -> its C scores: the mean of logits, or of softmax outputs."""
    return (logits.softmax(-1) if average == "softmax" else logits).mean(0)


def test_dataset(proto: FinetuneProtocol, records: Sequence[VideoRecord], spec: ClipSpec,
                 test_clips: int) -> MultiClipDataset:
    """The protocol's test views: ``test_clips`` evenly spaced clips, or dense windows."""
    if proto.test == "dense":
        return DenseClipDataset(records, spec, proto.dense_step, proto.dense_max, proto.crops)
    return MultiClipDataset(records, spec, test_clips)


def check_logits(logits: torch.Tensor | np.ndarray, what: str) -> None:
    """Stop with an error when logits hold NaN or Inf: a score computed from them would be meaningless.

    Raises:
        ValueError: naming ``what``.
    """
    t = torch.as_tensor(logits)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what}: the classifier output holds NaN or Inf (non-finite weights or features); "
                         "no accuracy is computed from it. Check the training loss and the pretrained weights")
