"""params.yaml -> one typed, frozen config object.

Parsed once at the edge (stage entry points, CLI). An unknown key, a missing section or a value of the wrong
type stops with an error naming the dotted key, before any work is done.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from vidssl.methods.params_be import BEParams
from vidssl.methods.params_contrastive import ContrastiveParams
from vidssl.methods.params_dualvar import DualVarParams
from vidssl.methods.params_mlfo import MLFOParams
from vidssl.methods.params_vcop import VCOPParams
from vidssl.params_base import Section as _Section


class DataParams(_Section):
    dataset: Literal["synthetic", "ucf101", "hmdb51", "kinetics400", "diving48", "folders"] = "synthetic"
    raw_dir: str = "data/raw/videos"
    split_dir: str = "data/raw/splits"
    split: int = Field(1, ge=1, le=3)


class SynthParams(_Section):
    seed: int = 0
    scale: float = Field(1.0, gt=0)
    n_classes: int = Field(10, ge=8)
    videos_per_class: int = Field(20, ge=4)
    size: int = Field(96, ge=32)
    frames: int = Field(40, ge=8)
    fps: int = Field(25, ge=1)
    background_bias: bool = False
    appearances: int = Field(0, ge=0)  # 0: every video draws its own look; N: a pool of N shared looks


class ExtractParams(_Section):
    short_side: int = Field(64, ge=0)
    fps: float = Field(0.0, ge=0)
    workers: int = Field(2, ge=1)
    quality: int = Field(90, ge=1, le=100)
    min_frames: int = Field(2, ge=1)  # a video decoding to fewer frames is quarantined
    max_pixels: int = Field(3840 * 2160, ge=0)  # a larger picture is quarantined before decoding (0: no limit)
    min_bytes: int = Field(1024, ge=0)  # a smaller file is quarantined
    exact: bool = True  # bit-exact frames (same bytes on every CPU); false: ffmpeg's faster SIMD paths
    fail_on_bad_input: bool = False  # quarantined videos stop the run with exit code 3 (after the store is written)


class ListsParams(_Section):
    val_videos: int = Field(0, ge=0)
    max_missing: float = Field(0.05, ge=0, le=1)  # fraction of split entries allowed without a pack
    test_fraction: float = Field(0.3, gt=0, lt=1)  # folders datasets without split files: held-out share


class ModelParams(_Section):
    backbone: str = "tiny"
    width: int = Field(16, ge=4)


class ClipParams(_Section):
    frames: int = Field(16, ge=2)
    stride: int = Field(1, ge=1)
    resize: int = Field(64, ge=8)
    crop: int = Field(56, ge=8)
    short_videos: Literal["loop", "drop"] = "loop"  # a video shorter than the clip span: looped, or left out

    @model_validator(mode="after")
    def _crop_fits(self) -> "ClipParams":
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) must not exceed resize ({self.resize})")
        return self

    @property
    def span(self) -> int:
        """Frames a clip covers in the source video."""
        return (self.frames - 1) * self.stride + 1


class IICParams(_Section):
    intra_neg: Literal["repeat", "shuffle", "none"] = "repeat"
    view2: Literal["res", "rgb"] = "res"
    nce_k: int = Field(1024, ge=1)
    nce_t: float = Field(0.07, gt=0)
    nce_m: float = Field(0.5, ge=0, le=1)
    normalize: bool = False


class PretrainParams(_Section):
    method: str = "iic"
    optimizer: Literal["sgd", "adam"] = "sgd"
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(16, ge=2)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    milestones: list[int] = [45, 90, 125, 160]
    gamma: float = Field(0.2, gt=0)
    workers: int = Field(2, ge=0)
    iic: IICParams = IICParams()
    mlfo: MLFOParams = MLFOParams()
    dualvar: DualVarParams = DualVarParams()
    vcop: VCOPParams = VCOPParams()
    simclr: ContrastiveParams = ContrastiveParams()
    moco: ContrastiveParams = ContrastiveParams()
    cmc: ContrastiveParams = ContrastiveParams()
    be: BEParams = BEParams()
    be_moco: BEParams = BEParams()  # BE's MoCo baseline: BE's pipeline without the blend, negative from another video

    def used(self) -> dict[str, Any]:
        """What ``method`` reads: the shared fields, its own section and the section its ``pretext`` names (BE's
        consistency form). Checkpoint and report keys hash this, so editing one method's section reruns that
        method only. A method without a section of its own keys on every section."""
        sections = [n for n in type(self).model_fields if isinstance(getattr(self, n), BaseModel)]
        own = getattr(self, self.method, None)
        if not isinstance(own, BaseModel):
            return self.model_dump()
        pretext = getattr(own, "pretext", None)
        read = {self.method} | ({pretext} & set(sections) if isinstance(pretext, str) else set())
        return self.model_dump(exclude=set(sections) - read)


class FinetuneParams(_Section):
    protocol: Literal["plain", "iic", "dualvar", "be", "mlfo", "linear"] = "plain"  # vidssl.engine.protocols
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(5e-4, ge=0)
    test_clips: int = Field(10, ge=1)
    workers: int = Field(2, ge=0)
    baseline: bool = True


class RetrieveParams(_Section):
    clips: int = Field(10, ge=1)
    topk: list[int] = [1, 5, 10, 20, 50]
    feature: Literal["pool", "gap"] = "pool"
    merged: bool = False
    center: bool = False  # the older spelling of protocol: centred
    protocol: Literal["vcop", "centred"] = "vcop"  # vcop: cosine of raw features; centred: CoCLR/DualVar
    view: Literal["rgb", "second"] = "rgb"  # with merged false: the clip, or the second view alone (IIC res)
    index: Literal["exact", "faiss"] = "exact"  # faiss: a flat inner-product index (exact too; needs faiss-cpu)
    chunk_mb: int = Field(256, ge=1)  # the largest block of query x gallery similarities held at once
    workers: int = Field(2, ge=0)

    @field_validator("topk")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 1:
            raise ValueError(f"retrieve.topk {v}: give one or more k >= 1, e.g. [1, 5, 10, 20, 50]")
        return v


class ReportVariant(_Section):
    """One more report entry: registered ``method`` with ``overrides`` merged over that method's own."""

    method: str
    overrides: dict[str, Any] = {}


class ReportParams(_Section):
    """`vidssl methods-report`: the methods compared on one dataset, and each one's demo-scale overrides.

    ``overrides`` maps a method name to a nested mapping merged over these params for that method only (e.g.
    ``{mlfo: {pretrain: {optimizer: adam}}}``); every merged result is validated like params.yaml itself.
    ``variants`` names further entries, each a registered method at settings other than its report row's (a
    param its paper does not use); ``methods`` lists them like methods, and the report judges each against
    random init and against its method's own row.
    """

    methods: list[str] = ["iic", "dualvar", "be", "mlfo", "cmc", "moco", "simclr", "vcop"]
    overrides: dict[str, dict[str, Any]] = {}
    variants: dict[str, ReportVariant] = {}
    seeds: list[int] = []  # empty: the pipeline's ``seed`` only; several: mean ± sd and per-seed paired gains

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"report.seeds {v} repeats a seed; list each seed once")
        return v


class RegistryParams(_Section):
    """MLflow model registry: the evaluate stage registers the pretrained backbone and moves ``champion``."""

    model: str = "vidssl-{backbone}-{dataset}"  # registered model name; {method} {backbone} {dataset} filled in
    metric: str = "retrieval.pretrained.top1"  # dotted key of metrics/summary.json that picks the champion
    higher_is_better: bool = True


class Params(_Section):
    """The whole params.yaml."""

    preset: str = "none"
    seed: int = 632
    data: DataParams = DataParams()
    synth: SynthParams = SynthParams()
    extract: ExtractParams = ExtractParams()
    lists: ListsParams = ListsParams()
    model: ModelParams = ModelParams()
    clip: ClipParams = ClipParams()
    pretrain: PretrainParams = PretrainParams()
    finetune: FinetuneParams = FinetuneParams()
    retrieve: RetrieveParams = RetrieveParams()
    report: ReportParams = ReportParams()
    registry: RegistryParams = RegistryParams()


class ConfigError(ValueError):
    """A params file that does not match the schema; the message names every bad key."""


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key; remove it or check its spelling")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {key}: {e['msg']}{shown}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params mapping; raise ConfigError naming each offending dotted key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err)) from None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, recursing into mappings both sides have (presets, report overrides)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_overrides(cfg: Params, over: dict[str, Any], source: str) -> Params:
    """``cfg`` with ``over`` merged in and validated again; ``source`` names the change in any error."""
    return parse_params(deep_merge(cfg.model_dump(), over), source)


def apply_preset(raw: dict[str, Any], presets_dir: Path) -> dict[str, Any]:
    """Overlay ``presets/<raw['preset']>.yaml`` on the params: a preset fixes a published protocol.

    The preset wins over params.yaml for the keys it sets (so selecting it is one line); keys it leaves out, such
    as dataset paths, come from params.yaml.
    """
    import yaml

    name = raw.get("preset", "none")
    if name == "none":
        return raw
    path = presets_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in presets_dir.glob("*.yaml"))
        raise ConfigError(f"preset: unknown preset {name!r} (no {path}); choose from {['none', *known]}")
    return deep_merge(raw, yaml.safe_load(path.read_text(encoding="utf-8")) or {})


def load_params(path: str | os.PathLike[str] = "params.yaml") -> Params:
    """Read and validate ``params.yaml`` (with its preset, if it names one, from ``presets/`` beside it)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: params file not found; run from the repository root or pass --params PATH")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if isinstance(raw, dict):
        raw = apply_preset(raw, p.parent / "presets")
    return parse_params(raw, str(p))


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a (section of a) config into dotted keys, for tracking."""
    data = obj.model_dump() if isinstance(obj, BaseModel) else obj
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
