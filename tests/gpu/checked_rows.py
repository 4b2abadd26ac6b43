"""The rows of a GPU kernel check (tests/gpu/check_*.py): each printed as it comes and saved at
once (a run cut short keeps what it measured), then the count of correct kernels."""

from __future__ import annotations

import json


class CheckedRows:
    """Rows with ``key``, ``tiles``, ``median_us``, ``rel_error`` and ``ok``, for ``what`` kernels."""

    def __init__(self, what: str, json_path: str | None, device_name: str):
        self.what, self.json_path, self.device_name = what, json_path, device_name
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)
        print(
            f"{'ok ' if row['ok'] else 'BAD'} {row['key']:48s} {row['tiles']:18s} "
            f"{row['median_us']:7.2f} us  error {row['rel_error']:.1e}",
            flush=True,
        )
        if self.json_path:
            with open(self.json_path, "w") as file:
                json.dump({"device": self.device_name, "rows": self.rows}, file, indent=1)

    def finish(self) -> int:
        """Print how many were correct; the exit status (1 if any was not)."""
        bad = sum(not row["ok"] for row in self.rows)
        print(f"{len(self.rows) - bad} of {len(self.rows)} {self.what} kernels correct")
        return 1 if bad else 0
