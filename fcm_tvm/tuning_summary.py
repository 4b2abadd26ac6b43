"""What a tuning run did, read back from its work directory: ``tuning_summary.json``.

MetaSchedule reports candidates only in its logs (one line per trial: GFLOPs or the builder's or
runner's error) and in its JSON database. ``summarize`` reads both, counting only lines newer
than the run's start, and writes the summary beside the database; ``fcm-tvm tune`` calls it when
it ends, and ``python -m fcm_tvm.tuning_summary WORK_DIR...`` rewrites summaries (after a kill,
say) and prints them as a table.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .records import DATABASE as RECORDS
from .records import WORKLOADS, measured_records

SUMMARY = "tuning_summary.json"
MAX_ERRORS = 5

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \[(\w+)\] (.*)$")
TRIAL = re.compile(r"\[Task #(\d+): ([^\]]*)\] Trial #(\d+): (GFLOPs|Error in (building|running))")
SCRIPT_START = ("# from tvm.script", "@I.ir_module", "@T.prim_func", "# fmt: off")


@dataclass
class TuningSummary:
    """What one tuning run did, read back from its work directory."""

    folder: Path
    data: dict = field(default_factory=dict)

    def line(self) -> str:
        d, c = self.data, self.data.get("candidates", {})
        tuned = f"{d.get('tasks_tuned', 0)}/{d.get('tasks', '?')} tasks tuned"
        if d.get("adopted"):
            tuned += f" ({d['adopted']} more adopted from the starting database)"
        text = (
            f"{self.folder.name}: {d.get('status', '?')}, {tuned}, {c.get('measured', 0)} candidates: "
            f"{c.get('ok', 0)} ok, {c.get('build_failed', 0)} failed to build, "
            f"{c.get('run_failed', 0)} failed to run"
        )
        if d.get("elapsed_s") is not None:
            text += f", {d['elapsed_s']:.0f} s"
        if d.get("errors"):
            text += f"; first error: {d['errors'][0]['message'].splitlines()[0][:160]}"
        return text

    def to_json(self) -> dict:
        return self.data


def summarize(folder: str | os.PathLike, *, status: str | None = None, elapsed_s: float | None = None):
    """Read ``folder``'s logs and database, (re)write ``tuning_summary.json`` and return it.

    The plan (tasks, trials, builder and runner settings) comes from the summary that ``tune``
    wrote when it started; log lines older than that start are not counted (a work directory
    tuned twice appends to the same logs). Without a status, a run that never reported its end
    counts as interrupted.
    """
    folder = Path(folder)
    previous = read_json(folder / SUMMARY) or {}
    since = previous.get("started")
    data = {**previous}
    data["status"] = status or (
        previous["status"] if previous.get("status", "running") != "running" else "interrupted"
    )
    if elapsed_s is not None:
        data["elapsed_s"] = round(elapsed_s, 1)
    _repair_records(folder / RECORDS)
    offsets = previous.get("log_offsets")
    trials, errors = _read_trials(folder / "logs", since, offsets)
    data["candidates"] = {
        "measured": len(trials),
        "ok": sum(1 for t in trials if t["result"] == "ok"),
        "build_failed": sum(1 for t in trials if t["result"] == "build"),
        "run_failed": sum(1 for t in trials if t["result"] == "run"),
    }
    data["tasks_tuned"] = len({t["task"] for t in trials if t["result"] == "ok"})
    data["errors"] = errors
    data["batches"] = _read_batches(folder / "logs", since, offsets)
    data["database"] = _read_database(folder)
    summary = TuningSummary(folder, data)
    write_json(folder / SUMMARY, data)
    return summary


def log_offsets(log_dir: Path) -> dict[str, int]:
    """The size of each log file now: a run that starts here reads its logs from these offsets on
    (timestamps have whole seconds, so a run resumed within a second would count the last run's)."""
    return {path.name: path.stat().st_size for path in log_dir.glob("*.log")} if log_dir.is_dir() else {}


def _log_records(log_dir: Path, since: str | None, offsets: dict[str, int] | None = None):
    """(file, time, text) of every log record in ``log_dir`` files from ``since`` on (all if None),
    multi-line messages joined; with ``offsets``, only what each file gained after its offset."""
    for path in sorted(log_dir.glob("*.log")) if log_dir.is_dir() else []:
        records: list[tuple[str, list[str]]] = []
        text = path.read_bytes()[(offsets or {}).get(path.name, 0) :].decode(errors="replace")
        for raw in text.splitlines():
            match = LOG_LINE.match(raw)
            if match:
                records.append((match.group(1), [match.group(3)]))
            elif records:
                records[-1][1].append(raw)
        for stamp, lines in records:
            if offsets is not None or since is None or stamp >= since:  # string order is time order
                yield path.name, stamp, "\n".join(lines)


def _read_trials(log_dir: Path, since: str | None, offsets: dict | None) -> tuple[list[dict], list[dict]]:
    trials, errors = [], {}
    for name, _stamp, text in _log_records(log_dir, since, offsets):
        if "task_scheduler" in name:
            continue
        match = TRIAL.search(text)
        if match is None:
            continue
        task, stage = match.group(2), {"building": "build", "running": "run"}.get(match.group(5))
        trials.append({"task": task, "result": stage or "ok"})
        if stage:
            message = _error_message(text[match.end() :])
            key = (stage, re.sub(r"\d+", "N", message.splitlines()[-1] if message else ""))
            first = {"stage": stage, "count": 0, "message": message, "first_task": task}
            entry = errors.setdefault(key, first)
            entry["count"] += 1
    return trials, list(errors.values())[:MAX_ERRORS]


def _error_message(text: str) -> str:
    """The error part of a failed trial's log record: before the TIR script and the trace."""
    lines = []
    for line in text.lstrip(":").strip("\n").splitlines():
        if line.lstrip().startswith(SCRIPT_START):
            break
        lines.append(line.rstrip())
    lines = [line for line in lines if line.strip()]
    if len(lines) > 12:  # a traceback: its head and the lines that name the error
        lines = [*lines[:3], "...", *lines[-8:]]
    return "\n".join(lines)[:1500]


def _read_batches(log_dir: Path, since: str | None, offsets: dict | None) -> dict:
    """Seconds spent building and measuring, from the task scheduler's timestamps."""
    build_s, run_s, count = 0.0, 0.0, 0
    build_start = run_start = None
    for name, stamp, text in _log_records(log_dir, since, offsets):
        if "task_scheduler" not in name:
            continue
        moment = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp()
        if "to builder" in text:
            build_start, count = moment, count + 1
        elif "to runner" in text and build_start is not None:
            build_s += moment - build_start
            build_start, run_start = None, moment
        elif "[Updated]" in text and run_start is not None:
            run_s += moment - run_start
            run_start = None
    return {
        "count": count,
        "build_s": build_s,
        "measure_s": run_s,
        "build_s_per_batch": round(build_s / count, 1) if count else None,
    }


def _read_database(folder: Path) -> dict:
    measured = list(measured_records(folder / RECORDS))
    valid = [index for index, _record, mean in measured if mean is not None]
    workloads = folder / WORKLOADS
    return {
        "records": len(measured),
        "valid_records": len(valid),
        "workloads": len(workloads.read_text().splitlines()) if workloads.is_file() else 0,
        "workloads_with_valid_records": len(set(valid)),
    }


def _repair_records(path: Path) -> None:
    """Drop a half-written last line (a run killed while MetaSchedule appended to the database)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if _parses(line)]
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept))


def _parses(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds)).strftime("%Y-%m-%d %H:%M:%S")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def table(summaries: list[TuningSummary]) -> str:
    """A short Markdown table of several runs, then each run's first error."""
    header = ["work dir", "status", "tasks tuned", "candidates", "ok", "build failed", "run failed"]
    rows = ["| " + " | ".join([*header, "build s/batch", "s"]) + " |", "|---" * (len(header) + 2) + "|"]
    notes = []
    for summary in summaries:
        d, c = summary.data, summary.data.get("candidates", {})
        cells = [
            summary.folder.name,
            d.get("status", "?")[:40],
            f"{d.get('tasks_tuned', 0)}/{d.get('tasks', '?')}",
            *(c.get(key, 0) for key in ("measured", "ok", "build_failed", "run_failed")),
            d.get("batches", {}).get("build_s_per_batch") or "-",
            d.get("elapsed_s") or "-",
        ]
        rows.append("| " + " | ".join(str(cell) for cell in cells) + " |")
        for error in d.get("errors", [])[:2]:
            first = error["message"].splitlines()[0][:200] if error["message"] else "?"
            notes.append(f"{summary.folder.name}: {error['count']} x {error['stage']}: {first}")
    return "\n".join(rows + notes)


def main(argv: list[str] | None = None) -> int:
    """``python -m fcm_tvm.tuning_summary WORK_DIR...``: rewrite each summary; print a table."""
    folders = [Path(folder) for folder in (sys.argv[1:] if argv is None else argv)]
    if not folders:
        print("usage: python -m fcm_tvm.tuning_summary WORK_DIR...", file=sys.stderr)
        return 2
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    for folder in missing:
        print(f"{folder}: no such work directory", file=sys.stderr)
    print(table([summarize(folder) for folder in folders if folder.is_dir()]))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
