"""The data gate: a great-expectations suite over the CSV lists and the frame store.

Every row must point to a readable frame pack holding at least one clip span, carry a label and class name
that agree with ``classes.csv`` and appear once; test videos must be in no training list; the source video each
pack records (frame rate, duration, file size: written by extract) must lie within ``checks.*``. Offending rows
are named by video id in ``validation.json`` (machines) and ``validation.md`` (people). Facts GX has no
expectation for (pack exists, video in another list) become pandas helper columns checked by plain GX
expectations.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidssl.config import ChecksParams
from vidssl.data.checks_report import problems, render_markdown
from vidssl.io import write_json, write_text

if TYPE_CHECKING:
    import pandas as pd

Probe = tuple[str | None, float, dict[str, Any] | None]  # pack status, frame count, recorded source facts

LISTS = ("pretrain", "train", "val", "test")
COLUMNS = ("video_id", "frames_path", "n_frames", "label", "class_name", "split")
CLASS_COLUMNS = ("label", "class_name")
LINE = "csv_line"  # helper column: 1-based line in the CSV, so rows with an empty video_id can be named
KEPT = 1000  # offending rows kept per check in validation.json
INT_RE = r"^-?\d+$"
FIX_LISTS = "re-run `vidssl lists` to rewrite the lists and classes.csv from the split files"
FIX_PACKS = "re-run `vidssl extract` so every listed video has a complete pack, or drop these videos"
FIX_SHORT = (
    "re-run `vidssl extract`, lower clip_len (clip.frames x clip.stride in params.yaml), "
    "or drop these videos from the split"
)
FIX_ROOT = ("every frames_path must lie inside the frame store; re-run `vidssl lists` over the store instead of "
            "editing paths by hand")
FIX_DROP = "set clip.short_videos: loop, lower the clip span (clip.frames x clip.stride), or add longer videos"
FIX_CLASSES = ("extract videos of the absent classes (lists.json names the missing ones), or remove those classes "
               "from the split files")
FIX_LEAK = "fix the split files (a test video must not be in pretrain/train/val), then re-run `vidssl lists`"
FIX_FPS = ("re-encode or remove these videos; if their frame rate is genuine, widen checks.min_fps / checks.max_fps "
           "in params.yaml")
FIX_SECONDS = ("remove these videos (or trim the long ones); if they are usable, lower checks.min_seconds or raise "
               "checks.max_seconds (0: no limit) in params.yaml")
FIX_BYTES = ("replace these files (a file this small is rarely a whole video); if they are fine, lower "
             "checks.min_bytes in params.yaml")
NO_FACTS = ("packs written before extract recorded each source video's frame rate, duration and size: these are "
            "not checked; run `vidssl extract` (or the extract stage) again to record them, nothing is decoded again")


class DataValidationError(Exception):
    """The lists or the frame store failed the data gate; the message is the readable report."""

    exit_code = 2  # bad input (vidssl.entry.EXIT_BAD_INPUT)


@dataclass(frozen=True)
class _Check:
    key: str  # stable id in validation.json, e.g. "n_frames_min"
    column: str  # source column the report names
    text: str  # what is wrong with the rows, e.g. "with n_frames < 16 (min clip span)"
    fix: str  # one line of advice, listed once under "How to fix"
    expectation: Any  # the GX expectation (column names refer to the derived dataframe)
    note: str | None = None  # helper column that explains a bad value (e.g. "pack has 9 frames")


def _gx() -> tuple[Any, Any]:
    """Import GX (slow: done only when validating) with analytics off; return (gx, gx.expectations)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx, gxe


def _context(gx: Any) -> Any:
    """An in-memory GX context: no stores or docs on disk, no progress bars, no analytics."""
    from great_expectations.data_context.types import base

    config = base.DataContextConfig(
        store_backend_defaults=base.InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=base.ProgressBarsConfig(globally=False), analytics_enabled=False)
    ctx = gx.get_context(project_config=config, mode="ephemeral")
    ctx.data_sources.add_pandas("vidssl")
    return ctx


def _read_csv(path: Path) -> pd.DataFrame | None:
    """Read a CSV as strings (only empty cells are null); None when the file is missing."""
    import pandas as pd

    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    except pd.errors.ParserError as exc:
        raise DataValidationError(f"{path}: not a readable CSV ({exc}); {FIX_LISTS}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    df[LINE] = range(2, len(df) + 2)  # line 1 is the header
    return df


def _probe_pack(path: Any, cache: dict[str, Probe]) -> Probe:
    """(status, frame count, source facts) of one frame pack; the ZIP directory is read, no frame is decoded."""
    from vidssl.data.store import pack_info

    if not isinstance(path, str):
        return None, math.nan, None  # empty frames_path: reported by the not-null check
    if path not in cache:
        p = Path(path)
        if not p.exists():
            cache[path] = (f"missing (cwd {Path.cwd()})" if not p.is_absolute() else "missing", math.nan, None)
        elif not p.is_file():
            cache[path] = ("not a file", math.nan, None)
        else:
            try:
                n, meta = pack_info(p)
                cache[path] = ("ok", float(n), meta)
            except Exception as exc:  # a truncated or foreign file: say so instead of crashing the gate
                cache[path] = (f"unreadable pack ({type(exc).__name__})", math.nan, None)
    return cache[path]


def _fact(meta: dict[str, Any] | None, key: str) -> float:
    """One recorded source fact as a float; NaN (not checked) where the pack records none."""
    value = (meta or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _fact_note(meta: dict[str, Any] | None, key: str, limits: ChecksParams) -> str | None:
    """Names the source file, its value and the params key that bounds it, e.g.
    ``source Archery/v_x.avi: 12 fps; limits checks.min_fps=25, checks.max_fps=120``."""
    value = _fact(meta, key)
    if value != value:
        return None
    video = (meta or {}).get("video", "?")
    if key == "fps":
        return f"source {video}: {value:g} fps; limits checks.min_fps={limits.min_fps:g}, " \
               f"checks.max_fps={limits.max_fps:g}"
    if key == "seconds":
        top = f", checks.max_seconds={limits.max_seconds:g}" if limits.max_seconds else ""
        return f"source {video}: {value:g} s; limits checks.min_seconds={limits.min_seconds:g}{top}"
    return f"source {video}: {value:.0f} bytes; limit checks.min_bytes={limits.min_bytes}"


def _numeric(col: pd.Series) -> pd.Series:
    import pandas as pd

    return pd.to_numeric(col, errors="coerce").astype(float)


def _inside(path: Any, root: Path | None) -> bool | None:
    """Whether ``path`` resolves (symlinks and ``..`` followed) to a place inside ``root``; None if no path."""
    if not isinstance(path, str):
        return None
    return root is None or Path(path).resolve().is_relative_to(root)


def _derive(df: pd.DataFrame, classes: dict[int, str] | None, others: list[tuple[str, set]],
            cache: dict[str, Probe], root: Path | None = None,
            limits: ChecksParams | None = None) -> pd.DataFrame:
    """Add the helper columns the suite checks, each only when its source columns exist."""
    out = df.copy()
    if "frames_path" in out:
        out["in_root"] = [_inside(p, root) for p in out["frames_path"]]
        out["root_note"] = [None if ok is not False else f"outside {root}" for ok in out["in_root"]]
        probes = [_probe_pack(p, cache) for p in out["frames_path"]]
        out["pack_status"] = [s for s, _, _ in probes]
        out["pack_frames"] = [n for _, n, _ in probes]
        out["pack_note"] = [f"pack has {n:.0f} frames" if n == n else None for _, n, _ in probes]
        # facts about each source video, as its pack recorded them; NaN (skipped by GX) where none are recorded
        out["has_facts"] = [s != "ok" or m is not None for s, _, m in probes]
        limits = limits or ChecksParams()
        for key in ("fps", "seconds", "bytes"):
            out[f"source_{key}"] = [_fact(m, key) for _, _, m in probes]
            out[f"source_{key}_note"] = [_fact_note(m, key, limits) for _, _, m in probes]
    if "n_frames" in out:
        out["n_frames_num"] = _numeric(out["n_frames"])
    if "label" in out:
        out["label_num"] = _numeric(out["label"])
    if "label" in out and "class_name" in out and classes is not None:
        expected = [classes.get(int(x)) if float(x).is_integer() else None for x in out["label_num"]]
        out["expected_class"] = expected
        out["class_note"] = [f"classes.csv says {e!r}" if e is not None else None for e in expected]
    if "video_id" in out and others:
        out["also_in"] = [", ".join(f for f, ids in others if v in ids) or None for v in out["video_id"]]
        out["leak_note"] = [f"also in {a}" if a else None for a in out["also_in"]]
    return out


def _runnable(checks: list[_Check], df: pd.DataFrame) -> list[_Check]:
    """Drop checks on absent columns: the missing column is reported once, not as a GX traceback."""
    def needs(c: _Check) -> list[str]:
        return [getattr(c.expectation, a) for a in ("column", "column_A", "column_B")
                if hasattr(c.expectation, a)]

    return [c for c in checks if all(col in df for col in needs(c))]


def _column_checks(gxe: Any, df: pd.DataFrame, required: tuple[str, ...]) -> list[_Check]:
    """Required columns exist (one table-level check naming each missing one), and are never empty."""
    missing = ", ".join(repr(c) for c in required if c not in df)
    header = ", ".join(c for c in df.columns if c != LINE) or "empty"
    text = f"is missing required column(s) {missing} (header: {header})"
    checks = [_Check("columns_present", "", text, FIX_LISTS,
                     gxe.ExpectTableColumnsToMatchSet(column_set=list(required), exact_match=False))]
    return checks + [_Check(f"not_null:{c}", c, f"with an empty {c}", FIX_LISTS,
                            gxe.ExpectColumnValuesToNotBeNull(column=c)) for c in required]


def _source_checks(gxe: Any, limits: ChecksParams) -> list[_Check]:
    """Per-video limits on the source each pack records: frame rate, duration and file size (``checks.*``)."""
    top = f" or above {limits.max_seconds:g} s (checks.max_seconds)" if limits.max_seconds else ""
    return [
        _Check("source_fps_range", "source_fps", f"whose source frame rate is outside {limits.min_fps:g}.."
               f"{limits.max_fps:g} fps (checks.min_fps, checks.max_fps)", FIX_FPS,
               gxe.ExpectColumnValuesToBeBetween(column="source_fps", min_value=limits.min_fps,
                                                 max_value=limits.max_fps), "source_fps_note"),
        _Check("source_seconds_range", "source_seconds", f"whose source video is shorter than "
               f"{limits.min_seconds:g} s (checks.min_seconds){top}", FIX_SECONDS,
               gxe.ExpectColumnValuesToBeBetween(column="source_seconds", min_value=limits.min_seconds,
                                                 max_value=limits.max_seconds or None), "source_seconds_note"),
        _Check("source_bytes_min", "source_bytes", f"whose source file is smaller than {limits.min_bytes} bytes "
               "(checks.min_bytes)", FIX_BYTES,
               gxe.ExpectColumnValuesToBeBetween(column="source_bytes", min_value=limits.min_bytes),
               "source_bytes_note"),
    ]


def _list_checks(gxe: Any, df: pd.DataFrame, name: str, min_frames: int,
                 n_classes: int | None, short_videos: str | None = None,
                 limits: ChecksParams | None = None, evaluated: set[int] | None = None) -> list[_Check]:
    """The suite for one list. With a ``short_videos`` policy, a video shorter than ``min_frames`` is not an
    error (it is looped or dropped, and counted apart); every video still needs one frame. ``evaluated``: the
    labels the train list must hold (those fine-tuning is tested on); None: every label of classes.csv."""
    bound, fix_short = (min_frames, FIX_SHORT) if short_videos is None else (1, FIX_PACKS)
    what = "min clip span" if short_videos is None else "an empty video"
    leak = ("also in a training list (test videos must be unseen)" if name == "test"
            else "also in train.csv (val is held out of train)")
    checks = _column_checks(gxe, df, COLUMNS) + [
        _Check("video_id_unique", "video_id", "with a duplicate video_id", FIX_LISTS,
               gxe.ExpectColumnValuesToBeUnique(column="video_id")),
        _Check("frames_path_unique", "frames_path", "sharing a frames_path with another row", FIX_LISTS,
               gxe.ExpectColumnValuesToBeUnique(column="frames_path")),
        _Check("split_is_list", "split", f"whose split is not '{name}'", FIX_LISTS,
               gxe.ExpectColumnValuesToBeInSet(column="split", value_set=[name])),
        _Check("pack_exists", "frames_path", "whose frame pack is missing or unreadable", FIX_PACKS,
               gxe.ExpectColumnValuesToBeInSet(column="pack_status", value_set=["ok"]), "pack_status"),
        _Check("n_frames_int", "n_frames", "whose n_frames is not an integer", FIX_LISTS,
               gxe.ExpectColumnValuesToMatchRegex(column="n_frames", regex=INT_RE)),
        _Check("n_frames_match_pack", "n_frames", "whose n_frames disagrees with the frame pack", FIX_PACKS,
               gxe.ExpectColumnPairValuesToBeEqual(column_A="n_frames_num", column_B="pack_frames",
                                                   ignore_row_if="either_value_is_missing"), "pack_note"),
        _Check("n_frames_min", "n_frames", f"with n_frames < {bound} ({what})", fix_short,
               gxe.ExpectColumnValuesToBeBetween(column="n_frames_num", min_value=bound)),
        _Check("frames_path_in_root", "frames_path", "whose frames_path leaves the frame store", FIX_ROOT,
               gxe.ExpectColumnValuesToNotBeInSet(column="in_root", value_set=[False]), "root_note"),
        _Check("label_int", "label", "whose label is not an integer", FIX_LISTS,
               gxe.ExpectColumnValuesToMatchRegex(column="label", regex=INT_RE)),
        _Check("class_name_match", "class_name", "whose class_name differs from classes.csv for their label",
               FIX_LISTS, gxe.ExpectColumnPairValuesToBeEqual(
                   column_A="class_name", column_B="expected_class", ignore_row_if="either_value_is_missing"),
               "class_note"),
        _Check("no_leak", "video_id", leak, FIX_LEAK, gxe.ExpectColumnValuesToBeNull(column="also_in"),
               "leak_note"),
    ] + _source_checks(gxe, limits or ChecksParams())
    if n_classes is not None and name == "train" and "label" in df:  # fine-tuning must see each class it is tested on
        required = set(range(n_classes)) if evaluated is None else evaluated & set(range(n_classes))
        absent = sorted(required - {int(x) for x in df["label_num"].dropna() if float(x).is_integer()})
        shown = ", ".join(map(str, absent[:20])) + (f", ... ({len(absent)} in all)" if len(absent) > 20 else "")
        checks.append(_Check("every_class_present", "label", f"has no video of label(s) {shown}", FIX_CLASSES,
                             gxe.ExpectColumnDistinctValuesToContainSet(
                                 column="label_num", value_set=[float(i) for i in sorted(required)])))
    if n_classes is not None:  # unknown without a readable classes.csv, which then fails on its own
        text = f"with label outside [0, {n_classes}) ({n_classes} classes)"
        checks.append(_Check("label_range", "label", text, FIX_LISTS, gxe.ExpectColumnValuesToBeBetween(
            column="label_num", min_value=0, max_value=n_classes - 1)))
    return _runnable(checks, df)


def _class_checks(gxe: Any, df: pd.DataFrame) -> list[_Check]:
    """classes.csv: labels are exactly 0..n-1 (integer, unique, in range) and names are unique."""
    return _runnable(_column_checks(gxe, df, CLASS_COLUMNS) + [
        _Check("label_int", "label", "whose label is not an integer", FIX_LISTS,
               gxe.ExpectColumnValuesToMatchRegex(column="label", regex=INT_RE)),
        _Check("label_unique", "label", "with a duplicate label", FIX_LISTS,
               gxe.ExpectColumnValuesToBeUnique(column="label")),
        _Check("label_range", "label", f"with label outside [0, {len(df)})", FIX_LISTS,
               gxe.ExpectColumnValuesToBeBetween(column="label_num", min_value=0, max_value=len(df) - 1)),
        _Check("class_name_unique", "class_name", "with a duplicate class_name", FIX_LISTS,
               gxe.ExpectColumnValuesToBeUnique(column="class_name")),
    ], df)


def _offending(row: dict, check: _Check) -> dict:
    out = {"video_id": row.get("video_id"), "line": row[LINE], "column": check.column,
           "value": row.get(check.column)}
    note = row.get(check.note) if check.note else None
    return out | ({"note": note} if note else {})


def _run_suite(ctx: Any, gx: Any, table: str, df: pd.DataFrame, checks: list[_Check]) -> list[dict]:
    """Validate ``df`` against ``checks`` in one GX suite; one report entry per check, in check order."""
    for check in checks:
        check.expectation.meta = {"check": check.key}  # results come back reordered; match them by key
    asset = ctx.data_sources.get("vidssl").add_dataframe_asset(table)
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df})
    suite = gx.ExpectationSuite(name=f"vidssl_{table}", expectations=[c.expectation for c in checks])
    ids = [c for c in ("video_id", LINE) if c in df]
    fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": ids}
    validated = batch.validate(suite, result_format=fmt)
    results = {r.expectation_config.meta["check"]: r for r in validated.results}
    records = df.astype(object).where(df.notna(), None).to_dict("records")  # NaN -> None for JSON
    entries = []
    for check in checks:
        res = results[check.key]
        lines = [int(i[LINE]) for i in res.result.get("unexpected_index_list") or []]
        offending = [_offending(records[line - 2], check) for line in lines]
        entry = {"check": check.key, "expectation": res.expectation_config.type, "column": check.column,
                 "success": bool(res.success), "description": check.text, "fix": check.fix,
                 "n_offending": len(offending), "offending": offending[:KEPT]}
        if (res.exception_info or {}).get("raised_exception"):
            entry["error"] = res.exception_info.get("exception_message")
        entries.append(entry)
    return entries


def _section(ctx: Any, gx: Any, path: Path, df: pd.DataFrame | None, make: Callable) -> dict:
    """Validate one CSV (``make(df)`` builds its checks); a missing file is one failed entry."""
    if df is None:
        entries = [{"check": "file_exists", "expectation": None, "column": None, "success": False,
                    "description": f"is missing (expected at {path})", "fix": FIX_LISTS, "n_offending": 0,
                    "offending": []}]
    else:
        entries = _run_suite(ctx, gx, path.stem, df, make(df))
    return {"file": str(path), "rows": 0 if df is None else len(df),
            "success": all(e["success"] for e in entries), "expectations": entries}


def _classes(df: pd.DataFrame | None) -> dict[int, str] | None:
    """label -> class_name from classes.csv (rows with a non-integer label are left out), or None."""
    if df is None or not all(c in df for c in CLASS_COLUMNS):
        return None
    pairs = zip(df["label_num"], df["class_name"], strict=True)
    return {int(x): str(n) for x, n in pairs if float(x).is_integer()}


def _others(frames: dict[str, pd.DataFrame | None]) -> dict[str, list[tuple[str, set]]]:
    """Lists each list must be disjoint from, with their video ids.

    Pretraining sees the train split only (train + val), so test must be disjoint from all three; val is held
    out of the fine-tune train list. val inside pretrain is expected.
    """
    ids = {n: set(df["video_id"].dropna()) if df is not None and "video_id" in df else set()
           for n, df in frames.items()}
    return {"val": [("train.csv", ids["train"])],
            "test": [(f"{n}.csv", ids[n]) for n in ("pretrain", "train", "val")]}


def _short_counts(df: pd.DataFrame | None, min_frames: int) -> dict[str, Any]:
    """How many rows of a list are shorter than one clip span, with the first few named."""
    if df is None or "n_frames_num" not in df:
        return {"count": 0, "rows": 0, "first": []}
    short = df[df["n_frames_num"] < min_frames]
    ids = short["video_id"].tolist() if "video_id" in short else []
    return {"count": int(len(short)), "rows": int(len(df)), "first": [str(v) for v in ids[:20]]}


def _drop_entry(name: str, counts: dict[str, Any]) -> dict[str, Any]:
    """A failed report entry: dropping the short videos leaves a list that training needs with no video."""
    return {"check": "videos_left_after_drop", "expectation": None, "column": "n_frames", "success": False,
            "description": f"has no video left once its {counts['count']} short videos are dropped",
            "fix": FIX_DROP, "n_offending": 0, "offending": []}


def _labels(df: pd.DataFrame | None) -> set[int]:
    """The integer labels a list holds (none for a missing list or column)."""
    if df is None or "label" not in df:
        return set()
    return {int(x) for x in _numeric(df["label"]).dropna() if float(x).is_integer()}


def _facts_counts(df: pd.DataFrame | None) -> dict[str, Any]:
    """How many readable packs of a list record no source facts (so their fps, duration and size go unchecked)."""
    if df is None or "has_facts" not in df:
        return {"count": 0, "first": []}
    bare = df[~df["has_facts"].astype(bool)]
    ids = bare["video_id"].tolist() if "video_id" in bare else []
    return {"count": int(len(bare)), "first": [str(v) for v in ids[:20]]}


def validate_lists(lists_dir: Path, *, min_frames: int, report_dir: Path, short_videos: str | None = None,
                   data_root: Path | None = None, limits: ChecksParams | None = None) -> dict:
    """Run the data suite over ``lists_dir`` and write ``validation.json`` and ``validation.md``.

    Args:
        lists_dir: folder with pretrain/train/val/test.csv and classes.csv (the lists stage output).
        min_frames: frames one clip spans (clip frames x stride).
        report_dir: where the two reports go (each written atomically).
        short_videos: what training does with a video shorter than ``min_frames`` (``loop`` or ``drop``,
            as ``clip.short_videos``): such videos are counted in the report, not failed; with ``drop``, a
            pretrain, train or test list left without any video fails. None: a short video fails.
        data_root: the frame store; a row whose ``frames_path`` resolves outside it fails. None: no check.
        limits: per-video limits on each pack's recorded source frame rate, duration and file size
            (``checks`` in params.yaml); None: the typed defaults. Packs that record no facts (written before
            extract recorded them) are counted in the report, not failed.

    Returns:
        The JSON report: ``success`` plus, per file, each expectation's result and offending rows.

    Raises:
        DataValidationError: only when a CSV cannot be parsed at all (everything else goes in the report).
    """
    gx, gxe = _gx()
    limits = limits or ChecksParams()
    lists_dir, report_dir = Path(lists_dir), Path(report_dir)
    root = None if data_root is None else Path(data_root).resolve()
    ctx = _context(gx)
    classes_df = _read_csv(lists_dir / "classes.csv")
    if classes_df is not None and "label" in classes_df:
        classes_df["label_num"] = _numeric(classes_df["label"])
    sections = {"classes.csv": _section(ctx, gx, lists_dir / "classes.csv", classes_df,
                                        lambda df: _class_checks(gxe, df))}
    classes = _classes(classes_df)
    n_classes = None if classes is None else len(classes_df)
    frames = {name: _read_csv(lists_dir / f"{name}.csv") for name in LISTS}
    others, cache, short, per_class, bare = _others(frames), {}, {}, {}, {}
    # A class no list holds a video of is absent from the dataset (a partial download; lists.json names the
    # missing videos): counted, not failed. The train list must hold every class the test and val lists hold.
    evaluated = None if frames["test"] is None else _labels(frames["test"]) | _labels(frames["val"])
    listed = set().union(*(_labels(df) for df in frames.values()))
    without = [classes[i] for i in sorted(set(classes or {}) - listed)]
    for name, df in frames.items():
        df = None if df is None else _derive(df, classes, others.get(name, []), cache, root, limits)
        section = _section(ctx, gx, lists_dir / f"{name}.csv", df,
                           lambda d, n=name: _list_checks(gxe, d, n, min_frames, n_classes, short_videos, limits,
                                                          evaluated))
        short[f"{name}.csv"] = counts = _short_counts(df, min_frames)
        bare[f"{name}.csv"] = _facts_counts(df)
        if df is not None and "class_name" in df:
            per_class[f"{name}.csv"] = {str(k): int(v) for k, v in df["class_name"].value_counts().sort_index().items()}
        if short_videos == "drop" and name != "val" and counts["rows"] and counts["count"] == counts["rows"]:
            section["expectations"].append(_drop_entry(name, counts))
            section["success"] = False
        sections[f"{name}.csv"] = section
    report = {"success": all(s["success"] for s in sections.values()), "lists_dir": str(lists_dir),
              "min_frames": min_frames, "n_classes": n_classes, "great_expectations": gx.__version__,
              "short_videos": {"policy": short_videos or "fail", "span": min_frames, "lists": short},
              "source_limits": limits.model_dump(), "without_source_facts": {"note": NO_FACTS, "lists": bare},
              "data_root": None if root is None else str(root), "class_counts": per_class,
              "classes_without_videos": {"count": len(without), "first": without[:20]}, "lists": sections}
    write_json(report_dir / "validation.json", report)
    write_text(report_dir / "validation.md", render_markdown(report))
    return report


def check_lists(lists_dir: Path, *, min_frames: int, report_dir: Path, short_videos: str | None = None,
                data_root: Path | None = None, limits: ChecksParams | None = None) -> dict:
    """Validate the lists (see ``validate_lists``) and stop the pipeline if anything failed.

    Raises:
        DataValidationError: with the readable list of offending rows and how to fix them.
    """
    report = validate_lists(lists_dir, min_frames=min_frames, report_dir=report_dir, short_videos=short_videos,
                            data_root=data_root, limits=limits)
    if not report["success"]:
        lines, fixes = problems(report)
        raise DataValidationError(
            f"data validation failed for {lists_dir} (full report: {Path(report_dir) / 'validation.md'}):\n"
            + "\n".join(lines) + "\nHow to fix:\n" + "\n".join(f"- {fix}" for fix in fixes))
    return report
