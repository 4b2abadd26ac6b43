"""MetaSchedule databases that ship with fcm-tvm, one per (GPU, model, batch, precision, graph).

``fcm_tvm/data/tuning/<gpu>/<model>_b<batch>_<precision>_<stock|fcm>/`` holds the two files of a
MetaSchedule JSON database (``database_workload.json``, ``database_tuning_record.json``), pruned
to the best record per workload and xz-compressed (``pack``): a workload file holds whole
PrimFuncs, 6 MB for MobileNetV2, 60 kB packed. MetaSchedule reads plain files, so a packed
database is unpacked once into the user's cache. ``<gpu>`` is a key of ``data/gpus.json``. What
ships is whatever folders are there: nothing here lists models.

``stock`` records come from tuning the unfused graph (``--fuse none``), ``fcm`` records from the
fused one. The stock graph's records serve the fused graph too: the operators around the FCMs
are the same workloads, and MetaSchedule never tunes the FCMs themselves.
"""

from __future__ import annotations

import json
import lzma
import math
import os
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

DATABASE = "database_tuning_record.json"
WORKLOADS = "database_workload.json"
FAILED_RUN_SECS = 1e9  # MetaSchedule records a candidate that failed to build or run as 1e10 s


def shipped_root() -> Path:
    """The folder of shipped records (``fcm_tvm/data/tuning``); it may not exist."""
    return Path(str(resources.files("fcm_tvm").joinpath("data", "tuning")))


def record_name(model: str, batch: int, precision: str, fuse: str) -> str:
    """``mobilenet_v2_b1_fp32_stock``: the work directory name of one tuning run."""
    return f"{model}_b{batch}_{precision}_{'stock' if fuse == 'none' else 'fcm'}"


PACKED = ".xz"


def is_database(folder: Path) -> bool:
    return (folder / DATABASE).is_file() and (folder / WORKLOADS).is_file()


def is_packed(folder: Path) -> bool:
    return all((folder / (name + PACKED)).is_file() for name in (DATABASE, WORKLOADS))


def has_records(folder: Path) -> bool:
    return is_database(folder) or is_packed(folder)


def cache_root() -> Path:
    """Where packed databases are unpacked: ``$FCM_TVM_CACHE`` or ``~/.cache/fcm-tvm``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fcm-tvm"
    return Path(os.environ.get("FCM_TVM_CACHE", default))


def unpacked(folder: Path) -> Path:
    """``folder`` itself if it is a plain database, else its packed files unpacked into the cache.

    A cached copy is rewritten when the packed file is newer (a new release of the records).
    """
    if is_database(folder):
        return folder
    destination = cache_root() / "tuning" / folder.parent.name / folder.name
    destination.mkdir(parents=True, exist_ok=True)
    for name in (DATABASE, WORKLOADS):
        packed, plain = folder / (name + PACKED), destination / name
        if not plain.is_file() or plain.stat().st_mtime < packed.stat().st_mtime:
            partial = plain.with_suffix(f".partial{os.getpid()}")  # one per process
            partial.write_bytes(lzma.decompress(packed.read_bytes()))
            partial.replace(plain)  # whole files only, also when two processes unpack at once
    return destination


def tuning_dir(root: Path, model: str, batch: int, precision: str, fuse: str) -> Path:
    """The database under ``root`` for ``fuse``: the fused graph's if there is one, else the stock graph's.

    The path is returned even when it holds no database, so that callers can say where they looked.
    """
    own = root / record_name(model, batch, precision, fuse)
    return own if has_records(own) else root / record_name(model, batch, precision, "none")


def find_records(roots: list[Path], model: str, batch: int, precision: str, fuse: str) -> Path | None:
    """The first database for this case under ``roots``, searched in order (see :func:`tuning_dir`)."""
    found = (tuning_dir(root, model, batch, precision, fuse) for root in roots)
    return next((folder for folder in found if has_records(folder)), None)


def shipped_roots(gpu_key: str) -> list[Path]:
    """Where records for ``gpu_key`` are looked up: its own folder, then those of the GPUs whose
    data serve it (an H200 is tuned with the H100's records where it has none of its own)."""
    from .gpus import data_keys

    return [shipped_root() / key for key in data_keys(gpu_key)]


def shipped_records(gpu_key: str, model_name: str, batch: int, precision: str, fuse: str) -> Path | None:
    """The shipped database for this case on ``gpu_key`` (``h100``, ...), unpacked; None if none ships."""
    folder = find_records(shipped_roots(gpu_key), model_name, batch, precision, fuse)
    return None if folder is None else unpacked(folder)


def shipped_cases(gpu_key: str) -> list[str]:
    """Names of the databases shipped for ``gpu_key`` (for messages), sorted; a case borrowed
    from another GPU is named with that GPU (``h100/mobilenet_v2_b1_fp32_stock``)."""
    names = []
    for root in shipped_roots(gpu_key):
        prefix = "" if root.name == gpu_key else f"{root.name}/"
        names += [prefix + path.name for path in root.iterdir() if has_records(path)] if root.is_dir() else []
    return sorted(names)


def measured_records(path: Path) -> Iterator[tuple[int, list, float | None]]:
    """(workload index, record, mean seconds) per record of a database file; the mean is None for
    a candidate that failed to build or run. A line cut short by a killed run is skipped."""
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            index, record = json.loads(line)
            seconds = [float(s) for s in record[1] or []]
        except (ValueError, TypeError, IndexError):
            continue
        ok = seconds and all(math.isfinite(s) and s < FAILED_RUN_SECS for s in seconds)
        yield index, record, sum(seconds) / len(seconds) if ok else None


def prune_database(source: str | os.PathLike, destination: str | os.PathLike) -> int:
    """Copy a MetaSchedule database keeping only the fastest measured record of each workload.

    That is all ``compile`` reads (the top record per workload), at a fraction of the size: what
    ships. Workloads with no successful record are left out. Returns the number of records kept.
    """
    source, destination = Path(source), Path(destination)
    workloads = (source / WORKLOADS).read_text().splitlines()
    best: dict[int, tuple[float, list]] = {}
    for index, record, mean in measured_records(source / DATABASE):
        if mean is not None and (index not in best or mean < best[index][0]):
            best[index] = (mean, record)
    kept = sorted(best)
    if not kept:
        return 0
    destination.mkdir(parents=True, exist_ok=True)
    (destination / WORKLOADS).write_text("".join(workloads[i] + "\n" for i in kept))
    (destination / DATABASE).write_text(
        "".join(json.dumps([new, best[old][1]], separators=(",", ":")) + "\n" for new, old in enumerate(kept))
    )
    return len(kept)


def pack_database(source: str | os.PathLike, destination: str | os.PathLike) -> int:
    """``prune_database`` into ``destination``, then xz-compress its two files: what ships."""
    kept = prune_database(source, destination)
    for name in (DATABASE, WORKLOADS) if kept else ():
        plain = Path(destination) / name
        Path(str(plain) + PACKED).write_bytes(lzma.compress(plain.read_bytes(), preset=9))
        plain.unlink()
    return kept


COMMANDS = {"prune": prune_database, "pack": pack_database}


def main(argv: list[str] | None = None) -> int:
    """``python -m fcm_tvm.records prune|pack SOURCE DESTINATION``: the database to apply or to ship."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in COMMANDS:
        print("usage: python -m fcm_tvm.records prune|pack SOURCE_WORK_DIR DESTINATION", file=sys.stderr)
        return 2
    kept = COMMANDS[args[0]](args[1], args[2])
    print(f"{args[2]}: {kept} workloads with their best record" if kept else f"{args[1]}: no measured record")
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main())
