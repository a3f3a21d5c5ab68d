"""The validation report for people: each failed check with the rows it names, and how to fix them."""

from __future__ import annotations

SHOWN = 20  # offending rows named per check


def _show(o: dict) -> str:
    """One offending row, e.g. ``v_X_g01_c01 (n_frames=9)``; rows without a video id go by CSV line."""
    who = o["video_id"] if o["video_id"] is not None else f"line {o['line']}"
    if o["value"] is None:
        detail = f"{o['column']} empty"
    else:
        detail = f"line {o['line']}" if o["column"] == "video_id" else f"{o['column']}={o['value']}"
    return f"{who} ({detail}{'; ' + o['note'] if o.get('note') else ''})"


def problems(report: dict) -> tuple[list[str], list[str]]:
    """Readable lines for each failed check, and the distinct fixes they call for."""
    lines, fixes = [], []
    for file, section in report["lists"].items():
        for e in section["expectations"]:
            if e["success"]:
                continue
            n = e["n_offending"]
            if "error" in e:
                lines.append(f"{file}: check {e['check']} could not run: {e['error']}")
            elif n == 0:
                lines.append(f"{file}: {e['description']}")
            else:
                shown = ", ".join(_show(o) for o in e["offending"][:SHOWN])
                more = f", ... and {n - SHOWN} more" if n > SHOWN else ""
                lines.append(f"{file}: {n} row{'s' if n != 1 else ''} {e['description']}: {shown}{more}")
            if e["fix"] not in fixes:
                fixes.append(e["fix"])
    return lines, fixes


def render_markdown(report: dict) -> str:
    """The human-readable report: a per-file table, each problem with its rows, and how to fix them."""
    status = "PASSED" if report["success"] else "FAILED"
    facts = (f"lists: `{report['lists_dir']}` · min_frames: {report['min_frames']} · "
             f"classes: {report['n_classes']} · great_expectations {report['great_expectations']}")
    out = [f"# Data validation: {status}", "", facts, "",
           "| file | rows | checks | failed |", "|---|---:|---:|---:|"]
    for file, s in report["lists"].items():
        failed = sum(not e["success"] for e in s["expectations"])
        out.append(f"| {file} | {s['rows']} | {len(s['expectations'])} | {failed} |")
    short = report.get("short_videos")
    if short and short["policy"] != "fail":
        n = {f: c["count"] for f, c in short["lists"].items() if c["count"]}
        what = "looped from their first frame" if short["policy"] == "loop" else "dropped"
        counts = ", ".join(f"{f} {c}" for f, c in n.items()) or "none"
        out += ["", f"Videos shorter than the clip span ({short['span']} frames), {what} "
                f"(clip.short_videos: {short['policy']}): {counts}."]
    bare = report.get("without_source_facts")
    if bare:
        n = {f: c["count"] for f, c in bare["lists"].items() if c["count"]}
        if n:
            counts = ", ".join(f"{f} {c}" for f, c in n.items())
            out += ["", f"Videos without recorded source facts ({counts}): {bare['note']}."]
    absent = report.get("classes_without_videos")
    if absent and absent["count"]:
        names = ", ".join(absent["first"]) + (", ..." if absent["count"] > len(absent["first"]) else "")
        out += ["", f"Classes without a video in any list ({absent['count']}; not checked, lists.json names "
                f"the missing videos): {names}."]
    lines, fixes = problems(report)
    if lines:
        out += ["", "## Problems", ""] + [f"- {line}" for line in lines]
        out += ["", "## How to fix", ""] + [f"- {fix}" for fix in fixes]
    return "\n".join(out) + "\n"
