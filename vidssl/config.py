"""params.yaml -> one typed, frozen config object.

Parsed once at the edge (stage entry points, CLI), in one validation pass before any work is done: every key a
params file must hold is there (method sections may leave out what they do not change), each value has its type
and range (numbers finite), cross-key rules hold, names exist in the registries, and no YAML key is written twice.
Each problem is one line naming file, line or dotted key, and what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from vidssl.methods.params_be import BEParams
from vidssl.methods.params_contrastive import ContrastiveParams
from vidssl.methods.params_dualvar import DualVarParams
from vidssl.methods.params_mlfo import MLFOParams
from vidssl.methods.params_vcop import VCOPParams
from vidssl.params_base import FieldError, LearningRate, Momentum
from vidssl.params_base import Section as _Section

# The registered backbones (vidssl/models; a test keeps the two lists equal). Spelled out here because the
# registry imports torch and the config is parsed where torch must not load (`vidssl --help`, check-params).
BACKBONE_NAMES = ("tiny", "c3d", "r3d10", "r21d10", "r3d18", "i3d")
# Datasets whose official split files come in three train/test splits (``data.split: all`` runs all three).
SPLIT_DATASETS = ("ucf101", "hmdb51")


class DataParams(_Section):
    dataset: Literal["synthetic", "ucf101", "hmdb51", "kinetics400", "diving48", "folders"] = "synthetic"
    raw_dir: str = "data/raw/videos"
    split_dir: str = "data/raw/splits"
    split: int | Literal["all"] = 1  # official split 1-3; "all": the three, as DVC experiments (`vidssl pipeline`)

    @model_validator(mode="after")
    def _split(self) -> "DataParams":
        if self.split == "all":
            if self.dataset not in SPLIT_DATASETS:
                raise FieldError("split", f"'all' but dataset {self.dataset!r} has one official split; 'all' is for "
                                          f"{' and '.join(SPLIT_DATASETS)} (three splits each); set data.split: 1",
                                 depends=("dataset",))
        elif not 1 <= self.split <= 3:
            raise FieldError("split", f"{self.split}: give an official split number 1, 2 or 3, or 'all' (the three "
                                      "as DVC experiments, through `vidssl pipeline`)")
        return self


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
    # true: bit-exact frames (same bytes on every CPU); false: ffmpeg's faster SIMD paths; auto: true for the
    # embedded dataset (its store's DVC hash is committed), false for real datasets (Params.extract_exact)
    exact: bool | Literal["auto"] = "auto"
    fail_on_bad_input: bool = False  # quarantined videos stop the run with exit code 3 (after the store is written)

    @field_validator("exact", mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Any:
        if v is True or v is False or v == "auto":
            return v
        raise ValueError("give true (bit-exact frames), false (ffmpeg's SIMD paths) or auto (true for the embedded "
                         "dataset only)")


class ListsParams(_Section):
    val_videos: int = Field(0, ge=0)
    # fraction of split entries allowed without a pack: 1 skips any number (each is named in lists.json), 0 asks
    # for a complete dataset
    max_missing: float = Field(1.0, ge=0, le=1)
    test_fraction: float = Field(0.3, gt=0, lt=1)  # folders datasets without split files: held-out share


class ChecksParams(_Section):
    """Per-video limits the data gate (the validate stage) checks against each pack's recorded source facts."""

    min_fps: float = Field(5.0, ge=0)  # source frame rate below this fails the gate
    max_fps: float = Field(120.0, gt=0)  # source frame rate above this fails the gate
    min_seconds: float = Field(0.25, ge=0)  # shorter source video fails the gate (8 frames at 25 fps: 0.32 s)
    max_seconds: float = Field(0.0, ge=0)  # longer source video fails the gate; 0: no limit
    min_bytes: int = Field(1024, ge=0)  # smaller source file fails the gate

    @model_validator(mode="after")
    def _ranges(self) -> "ChecksParams":
        if self.min_fps > self.max_fps:
            raise FieldError("min_fps", f"{self.min_fps} is above checks.max_fps ({self.max_fps}); give "
                                        "min_fps <= max_fps", depends=("max_fps",))
        if self.max_seconds and self.min_seconds > self.max_seconds:
            raise FieldError("min_seconds", f"{self.min_seconds} is above checks.max_seconds "
                                            f"({self.max_seconds}); lower it, or set max_seconds: 0 (no limit)",
                             depends=("max_seconds",))
        return self


class ModelParams(_Section):
    backbone: Literal[BACKBONE_NAMES] = "tiny"  # type: ignore[valid-type]
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


# The registered methods (vidssl/methods/registry.py; a test keeps the two equal): each has a section of its own
# under ``pretrain``, which a params file may leave out or write in part (the rest: the typed defaults).
METHOD_NAMES = ("iic", "dualvar", "be", "mlfo", "cmc", "moco", "simclr", "vcop", "be_moco")


class PretrainParams(_Section):
    file_optional = frozenset(METHOD_NAMES)

    method: str = "iic"
    optimizer: Literal["sgd", "adam"] = "sgd"
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(16, ge=2)
    lr: LearningRate = 0.01
    momentum: Momentum = 0.9
    weight_decay: float = Field(1e-4, ge=0)
    milestones: list[int] = []  # none: a constant learning rate
    gamma: float = Field(0.2, gt=0, le=1)
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

    @model_validator(mode="after")
    def _rules(self) -> "PretrainParams":
        if self.method not in METHOD_NAMES:
            raise FieldError("method", f"{self.method!r} is not a registered method; choose from {list(METHOD_NAMES)}")
        m = self.milestones
        if any(not 1 <= e <= self.epochs for e in m) or any(a >= b for a, b in zip(m, m[1:])):
            raise FieldError("milestones", f"{m}: give epochs from 1 to pretrain.epochs ({self.epochs}), strictly "
                                           "ascending ([] for a constant learning rate)", depends=("epochs",))
        for name in ("be", "be_moco"):
            pretext = getattr(self, name).pretext
            if pretext not in METHOD_NAMES or pretext in ("be", "be_moco"):
                allowed = [n for n in METHOD_NAMES if n not in ("be", "be_moco")]
                raise FieldError(f"{name}.pretext", f"{pretext!r} is not a method BE can wrap; choose from {allowed}")
        for name in ("simclr", "moco", "cmc"):
            core = getattr(self, name).core
            if core not in (None, name):
                raise FieldError(f"{name}.core", f"{core!r} but method {name!r} uses core {name!r}; remove the key")
        return self

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
    lr: LearningRate = 0.01
    momentum: Momentum = 0.9
    weight_decay: float = Field(5e-4, ge=0)
    test_clips: int = Field(10, ge=1)
    workers: int = Field(2, ge=0)
    baseline: bool = True


class TrainParams(_Section):
    """How the training loops run, not what they learn (pretrain and finetune read it)."""

    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the backbone stages
    checkpoint_minutes: float = Field(10.0, ge=0)  # mid-epoch checkpoint interval; 0: only at epoch ends
    threads: int = Field(0, ge=0)  # trainer threads; 0: the CPUs this process may use, minus loader workers
    accumulate: int = Field(1, ge=1)  # micro-batches per optimiser step (pretraining; bank/queue methods)


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
        if len(set(v)) != len(v):
            raise ValueError(f"retrieve.topk {v} repeats a rank; list each k once")
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
    file_optional = frozenset({"overrides", "variants"})

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"report.seeds {v} repeats a seed; list each seed once")
        return v

    @model_validator(mode="after")
    def _registered(self) -> "ReportParams":
        variants = self.variants
        clash = sorted(set(variants) & set(METHOD_NAMES))
        if clash:
            raise FieldError("variants", f"{clash} are registered method names; give each variant its own name")
        checks = (("methods", self.methods, [*METHOD_NAMES, *variants]),
                  ("overrides", list(self.overrides), list(METHOD_NAMES)),
                  ("variants.*.method", [v.method for v in variants.values()], list(METHOD_NAMES)))
        for field, names, allowed in checks:
            unknown = [n for n in names if n not in allowed]
            if unknown:
                also = " or report.variants" if field == "methods" else ""
                raise FieldError(field, f"{unknown} are not registered methods{also}; choose from {sorted(allowed)}")
        return self


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
    checks: ChecksParams = ChecksParams()
    model: ModelParams = ModelParams()
    clip: ClipParams = ClipParams()
    pretrain: PretrainParams = PretrainParams()
    finetune: FinetuneParams = FinetuneParams()
    train: TrainParams = TrainParams()
    retrieve: RetrieveParams = RetrieveParams()
    report: ReportParams = ReportParams()
    registry: RegistryParams = RegistryParams()

    @property
    def extract_exact(self) -> bool:
        """``extract.exact`` resolved: ``auto`` is bit-exact for the embedded dataset and ffmpeg's fast paths for
        real ones, whose stores no committed DVC hash has to match."""
        exact = self.extract.exact
        return self.data.dataset == "synthetic" if exact == "auto" else bool(exact)


class ConfigError(ValueError):
    """Params that do not match the schema; the message holds one line per problem, each naming the file (and
    line) or the dotted key, and what to do."""

    one_problem_per_line = True  # vidssl.entry prints each line as an error of its own


@dataclass(frozen=True)
class Layer:
    """One source of params values, in the order they are merged: the params file, its preset, overrides."""

    label: str  # what `vidssl params --show` prints as the source: "params.yaml", "preset X", "-S", ...
    data: dict[str, Any]
    lines: dict[str, int] = field(default_factory=dict)  # dotted key -> line in ``path``
    path: str | None = None

    def describe(self, key: str) -> str:
        """Where ``key`` comes from, for `vidssl params --show`: ``params.yaml:12``, ``preset X (file:line)``, ``-S``."""
        where = self.where(key) or self.label
        if self.path is None or Path(self.path).name == self.label:
            return where
        return f"{self.label} ({where})"

    def where(self, key: str) -> str | None:
        """``file:line`` (or the label) where this layer writes dotted ``key`` (or the list or value holding it,
        for a key such as ``retrieve.topk.1``), or None if it does not."""
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            k = ".".join(parts[:n])
            found, value = _lookup(self.data, k)
            if found and (n == len(parts) or not isinstance(value, dict)):
                if self.path is not None:
                    return f"{self.path}:{self.lines[k]}" if k in self.lines else self.path
                return self.label
        return None


@dataclass(frozen=True)
class Resolved:
    """The validated params, and for every dotted leaf the layer it came from (``default`` if none)."""

    params: "Params"
    sources: dict[str, str]


def _lookup(data: Any, dotted: str) -> tuple[bool, Any]:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return False, None
        data = data[part]
    return True, data


def _leaf_keys(data: Any, prefix: str = "") -> list[str]:
    """Dotted keys of the leaves of a nested mapping (a list is a leaf; an empty mapping too)."""
    if not isinstance(data, dict) or not data:
        return [prefix[:-1]] if prefix else []
    out: list[str] = []
    for key, value in data.items():
        out += _leaf_keys(value, f"{prefix}{key}.")
    return out


def _section_type(annotation: Any) -> type[_Section] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, _Section) else None


def missing_keys(raw: dict[str, Any], model: type[_Section] | None = None, prefix: str = "") -> list[str]:
    """Dotted keys a params file must write and ``raw`` does not (``file_optional`` fields may be left out)."""
    model = model or Params
    out: list[str] = []
    for name, info in model.model_fields.items():
        if name in model.file_optional:
            continue
        sub = _section_type(info.annotation)
        if name not in raw:
            out.append(f"{prefix}{name}")
        elif sub is not None and isinstance(raw[name], dict):
            out += missing_keys(raw[name], sub, f"{prefix}{name}.")
    return out


_HINTS = {
    "extra_forbidden": "unknown key; remove it or check its spelling (`vidssl params --show` lists every key)",
}


def _fields_at(loc: Sequence[str]) -> list[str]:
    """Field names of the section at ``loc`` (e.g. ``["pretrain"]``), [] where it is not a section."""
    model: type[_Section] | None = Params
    for part in loc:
        info = model.model_fields.get(part) if model is not None else None
        model = _section_type(info.annotation) if info is not None else None
    return list(model.model_fields) if model is not None else []


def _unknown_key(loc: list[str], missing: list[str]) -> str:
    """The message for an unknown key: the written key it most likely meant (and drop that from ``missing``)."""
    import difflib

    parent = ".".join(loc[:-1])
    near = difflib.get_close_matches(loc[-1], _fields_at(loc[:-1]), n=1, cutoff=0.6)
    if not near:
        return _HINTS["extra_forbidden"]
    meant = f"{parent}.{near[0]}" if parent else near[0]
    if meant in missing:
        missing.remove(meant)
        return f"unknown key; did you mean {near[0]!r}? (that key is missing)"
    return f"unknown key; did you mean {near[0]!r}? remove it or fix its spelling"


def _format_errors(source: str, err: ValidationError, layers: Sequence[Layer] = (),
                   missing: list[str] | None = None) -> list[str]:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            if any(".".join([*loc, d]) in (missing or ()) for d in cause.depends):
                continue  # judged against a default the file should have written; the missing key is reported
            loc += cause.field.split(".")
            msg = cause.message
        elif e["type"] == "extra_forbidden":
            msg = _unknown_key(loc, missing if missing is not None else [])
        else:
            got = e.get("input")
            msg = e["msg"].removeprefix("Value error, ") + ("" if isinstance(got, dict) else f" (got {got!r})")
        key = ".".join(loc) or "(top level)"
        where = next((w for layer in reversed(layers) if (w := layer.where(key))), source)
        lines.append(f"{where}: {key}: {msg}")
    return lines


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params mapping; keys it leaves out take their typed defaults (see :func:`resolve_params` for
    files, where they must be written). Raise ConfigError naming each offending dotted key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("\n".join(_format_errors(source, err))) from None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, recursing into mappings both sides have (presets, report overrides)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_overrides(cfg: Params, over: dict[str, Any], source: str) -> Params:
    """``cfg`` with ``over`` merged in and validated again; ``source`` names the change in any error."""
    return parse_params(deep_merge(cfg.model_dump(), over), source)


def _read_layer(path: Path, label: str) -> Layer:
    from vidssl.params_yaml import ParamsYAMLError, read_params_yaml

    try:
        data, lines = read_params_yaml(path)
    except ParamsYAMLError as err:
        raise ConfigError(str(err)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err}); check the path and its permissions") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of keys at the top level, got {type(data).__name__}")
    return Layer(label, data, lines, str(path))


def _preset_layer(name: Any, presets_dir: Path) -> Layer | None:
    if name == "none":
        return None
    path = presets_dir / f"{name}.yaml"
    if not isinstance(name, str) or not path.is_file():
        known = sorted(p.stem for p in presets_dir.glob("*.yaml"))
        raise ConfigError(f"preset: unknown preset {name!r} (no {path}); choose from {['none', *known]}")
    return _read_layer(path, f"preset {name}")


def apply_preset(raw: dict[str, Any], presets_dir: Path) -> dict[str, Any]:
    """Overlay ``presets/<raw['preset']>.yaml`` on the params: a preset fixes a published protocol.

    The preset wins over params.yaml for the keys it sets (so selecting it is one line); keys it leaves out, such
    as dataset paths, come from params.yaml.
    """
    layer = _preset_layer(raw.get("preset", "none"), presets_dir)
    return raw if layer is None else deep_merge(raw, layer.data)


def parse_sets(sets: Sequence[str]) -> dict[str, Any]:
    """``["pretrain.lr=0.1", ...]`` (values in YAML syntax) -> a nested mapping; ConfigError on a malformed one."""
    import yaml

    from vidssl.params_yaml import load_value

    out: dict[str, Any] = {}
    for item in sets:
        key, eq, text = item.partition("=")
        key = key.strip().lstrip("+")
        if not eq or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"-S {item!r}: write KEY=VALUE with a dotted key, e.g. -S pretrain.lr=0.01")
        try:
            value = load_value(text) if text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"-S {item!r}: the value is not valid YAML; quote it or fix it") from None
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"-S {item!r}: {p} is set to a value above; give each key once")
        node[last] = value
    return out


def resolve_params(path: str | os.PathLike[str] = "params.yaml", *, defaults: bool = False,
                   overrides: Sequence[tuple[str, dict[str, Any]]] = ()) -> Resolved:
    """Read, merge and validate params in one pass: the file, its preset (from ``presets/`` beside it), then each
    ``(label, mapping)`` of ``overrides``; say where each value came from.

    Every key the schema holds must be written (a method section may write only what it changes), unless
    ``defaults`` is set: then keys left out, or the whole file if it does not exist, take the typed defaults.

    Raises:
        ConfigError: one line per problem, naming file and line or the dotted key, and what to do.
    """
    p = Path(path)
    layers: list[Layer] = []
    if p.is_file():
        layers.append(_read_layer(p, p.name))
    elif not defaults:
        raise ConfigError(f"{p}: params file not found; run from the repository root, pass --params PATH, or pass "
                          "--defaults for the built-in defaults")
    over = [Layer(label, data) for label, data in overrides if data]
    preset = next((lay.data["preset"] for lay in reversed([*layers, *over]) if "preset" in lay.data), "none")
    preset_layer = _preset_layer(preset, p.parent / "presets")
    if preset_layer is not None:
        layers.append(preset_layer)
    layers += over
    raw: dict[str, Any] = {}
    for layer in layers:
        raw = deep_merge(raw, layer.data)
    source = str(p) if p.is_file() else "defaults"
    problems: list[str] = []
    missing = [] if defaults else missing_keys(raw)
    try:
        cfg = Params.model_validate(raw)
    except ValidationError as err:
        problems += _format_errors(source, err, layers, missing)  # a misspelt key and its missing one: one line
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        problems.append(f"{source}: missing {'key' if len(missing) == 1 else 'keys'} {shown}; write "
                        f"{'it' if len(missing) == 1 else 'them'} (the shipped params.yaml has every key) or "
                        "pass --defaults to take the built-in defaults")
    if not problems:
        problems += _report_entry_problems(cfg, layers, source)
    if problems:
        raise ConfigError("\n".join(problems))
    sources = {}
    for key in _leaf_keys(cfg.model_dump()):
        sources[key] = next((lay.describe(key) for lay in reversed(layers) if lay.where(key)), "default")
    return Resolved(cfg, sources)


def _report_entry_problems(cfg: Params, layers: Sequence[Layer], source: str) -> list[str]:
    """Each `vidssl methods-report` entry's params (``report.overrides`` and ``report.variants`` merged over the
    rest) validated like the file itself, so a bad override is named when the file is read, not hours later."""
    base = cfg.model_dump()
    problems = []
    for name in cfg.report.methods:
        variant = cfg.report.variants.get(name)
        method = variant.method if variant is not None else name
        over = deep_merge({"pretrain": {"method": method}}, cfg.report.overrides.get(method, {}))
        keys = [f"report.overrides.{method}"] if method in cfg.report.overrides else []
        if variant is not None:
            over = deep_merge(over, variant.overrides)
            keys.append(f"report.variants.{name}.overrides")
        try:
            Params.model_validate(deep_merge(base, over))
        except ValidationError as err:
            where = next((w for key in reversed(keys) for lay in reversed(layers) if (w := lay.where(key))), source)
            entry = " + ".join(keys) or "the params above"
            for line in _format_errors(source, err):
                problems.append(f"{where}: report entry {name!r} ({entry}): {line.split(': ', 1)[1]}")
    return problems


def one_split(cfg: Params, source: str = "params.yaml") -> Params:
    """``cfg`` itself when it names one official split; ConfigError when ``data.split`` is ``all``, which only
    `vidssl pipeline` runs (as one DVC experiment per split): a stage, `dvc repro` or a command reading one
    split's lists refuses it before any work."""
    if cfg.data.split == "all":
        raise ConfigError(f"{source}: data.split: 'all' runs the three official splits as DVC experiments, which "
                          "only `vidssl pipeline` does; run `vidssl pipeline`, or set data.split to 1, 2 or 3 "
                          "for `dvc repro` and single commands")
    return cfg


def load_params(path: str | os.PathLike[str] = "params.yaml", *, defaults: bool = False,
                any_split: bool = False) -> Params:
    """Read and validate ``params.yaml`` (with its preset, if it names one); see :func:`resolve_params`.

    What a stage reads: one official split, so ``data.split: all`` is refused (:func:`one_split`) unless
    ``any_split``."""
    cfg = resolve_params(path, defaults=defaults).params
    return cfg if any_split else one_split(cfg, str(path))


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
