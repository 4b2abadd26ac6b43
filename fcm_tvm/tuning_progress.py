"""What a tuning work directory holds so far, per task: ``tasks.json``.

``fcm-tvm tune`` measures every task's default schedule once, tunes the tasks where the time
goes, and records each step here as it completes, so that a run cut short (a device call's time
limit) is continued by running the same command again. The file is also the report of what
tuning bought per kernel: the default time against the best in the database.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from .default_schedules import commit_default, measure_defaults

PROGRESS = "tasks.json"


class TaskProgress:
    """Per task name: occurrences, the default schedule's time and rule, trials spent, best time."""

    def __init__(self, path: Path, entries: dict[str, dict]) -> None:
        self.path = path
        self.entries = entries

    @classmethod
    def load(cls, folder: Path) -> TaskProgress:
        path = folder / PROGRESS
        entries = json.loads(path.read_text())["tasks"] if path.is_file() else {}
        return cls(path, entries)

    def save(self) -> None:
        data = {"format": "fcm-tvm-tasks/1", "tasks": self.entries}
        self.path.write_text(json.dumps(data, indent=1) + "\n")

    def measure_defaults(self, tasks: list, target, builder, runner) -> None:
        """Time the default schedule of every task not measured yet."""
        missing = [task for task in tasks if task.task_name not in self.entries]
        for task, default in zip(missing, measure_defaults(missing, target, builder, runner)):
            self.entries[task.task_name] = {
                "weight": int(task.weight),
                "rule": default.rule,
                "default_s": default.seconds,
                "default_error": default.error,
                "default_committed": False,
                "trials": 0,
                "best_s": None,
            }
        self.save()

    def focus(self, tasks: list, share: float) -> list:
        """The tasks that take ``share`` of the default time (time x occurrences), largest first.

        A task whose default schedule failed to build or run comes first: only tuning gives it one.
        """
        failed = [task for task in tasks if self.entries[task.task_name]["default_s"] is None]
        timed = [task for task in tasks if task not in failed]
        timed.sort(key=self._cost, reverse=True)
        total = sum(self._cost(task) for task in timed)
        chosen, covered = failed, 0.0
        for task in timed:
            if covered >= share * total:
                break
            chosen.append(task)
            covered += self._cost(task)
        return chosen

    def tuned(self, task) -> bool:
        entry = self.entries[task.task_name]
        return entry["trials"] > 0 or entry.get("adopted", False)

    def adopt(self, tasks: list, tuned_seconds: Callable[[object], float | None]) -> int:
        """Count as tuned each task of ``tasks`` that the database already holds a tuned record of
        (``tuned_seconds(task)``: the fastest one's time, None where it holds none); return how many.

        Why: records tuned on another GPU of the same architecture (the shipped H200 ones on an
        H100) already cover the slowest tasks, and tuning those again spends the budget where it
        was spent before.
        """
        adopted = 0
        for task in tasks:
            if not self.tuned(task) and (seconds := tuned_seconds(task)) is not None:
                self.entries[task.task_name].update(adopted=True, best_s=seconds)
                adopted += 1
        self.save()
        return adopted

    def mark_tuned(self, task, trials: int, best_s: float | None) -> None:
        entry = self.entries[task.task_name]
        entry["trials"] += trials
        entry["best_s"] = best_s
        self.save()

    def commit_defaults(self, tasks: list, database, target) -> None:
        """Put the measured default schedules of ``tasks`` into ``database`` (once per task)."""
        for task in tasks:
            entry = self.entries[task.task_name]
            if entry["default_s"] is not None and not entry["default_committed"]:
                commit_default(database, task, target, entry["default_s"])
                entry["default_committed"] = True
        self.save()

    def _cost(self, task) -> float:
        return default_cost(self.entries[task.task_name])


def default_cost(entry: dict) -> float:
    """A task's time under its default schedule, times its occurrences (0 where that failed)."""
    return (entry["default_s"] or 0.0) * entry["weight"]


def report(progress: TaskProgress) -> str:
    """A table of the tasks, slowest default first, and the model's kernel time before and after."""
    head = "| task | occurrences | default rule | default us | trials | best us |\n|---|---|---|---|---|---|"
    rows, default_total, best_total = [head], 0.0, 0.0
    for name, entry in sorted(progress.entries.items(), key=lambda item: -default_cost(item[1])):
        default, best = entry["default_s"], entry["best_s"] or entry["default_s"]
        if default is not None and best is not None:
            default_total += default * entry["weight"]
            best_total += best * entry["weight"]
        trials = "adopted" if entry.get("adopted") else entry["trials"]
        cells = [name, entry["weight"], entry["rule"], _us(default), trials, _us(best)]
        rows.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    rows.append(
        f"\nkernel time, tasks x occurrences: default {default_total * 1e6:.1f} us, "
        f"best {best_total * 1e6:.1f} us"
    )
    return "\n".join(rows)


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.2f}"


def main(argv: list[str] | None = None) -> int:
    """``python -m fcm_tvm.tuning_progress WORK_DIR``: what tuning bought, task by task."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / PROGRESS).is_file():
        print(f"usage: python -m fcm_tvm.tuning_progress WORK_DIR (with a {PROGRESS})", file=sys.stderr)
        return 2
    print(report(TaskProgress.load(Path(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
