"""`ckpt_path=last`: the newest *valid* checkpoint of earlier runs of a task (docs/reliability-training.md §2)."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import torch

from vlmchallenge.training.checkpoint_io import is_temp_file

log = logging.getLogger(__name__)

SHARDED_META = "meta.pt"  # the trainer state of a sharded (FSDP) checkpoint folder, as Lightning names it


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` is not a usable training checkpoint, or None. A torch checkpoint is a zip archive: a file cut
    short has no central directory, a flipped bit fails a member's CRC-32 (both read by `zipfile`, one
    sequential pass, no tensors built); then a memory-mapped `weights_only` load checks that it unpickles to a
    Lightning checkpoint whose every tensor record is present."""
    if path.is_dir():  # FSDP `state_dict_type=sharded`: torch.distributed.checkpoint files + meta.pt
        if not (path / ".metadata").is_file():
            return "sharded checkpoint folder without its .metadata file"
        path = path / SHARDED_META
        if not path.is_file():
            return f"sharded checkpoint folder without its {SHARDED_META}"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            return f"member {bad} fails its CRC-32 check (damaged bytes)"
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, ValueError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc}); a write cut short or a damaged copy"
    if not isinstance(ckpt, dict) or "global_step" not in ckpt:
        return "not a Lightning training checkpoint (no global_step)"
    return None


def find_latest_checkpoint(log_dir: str | Path, task_name: str, exclude: str | Path | None = None) -> Path:
    """`ckpt_path=last`: the newest valid checkpoint (`checkpoints/*.ckpt`: last.ckpt and the monitored ones)
    among earlier runs (and multirun jobs) of this task. Newest means last written (mtime), not the highest
    global step: a fresh run started after a longer one is the one to continue. Damaged candidates are skipped
    with a warning naming them; temp files of interrupted writes are never candidates (also warned about)."""
    root = Path(log_dir) / task_name
    found = list(root.rglob("checkpoints/*"))  # runs/<time>/ and multiruns/<time>/<job>/
    if exclude is not None:
        found = [p for p in found if Path(exclude).resolve() not in p.resolve().parents]
    for leftover in sorted(p for p in found if is_temp_file(p)):
        log.warning(
            f"ignoring {leftover}: temp file of a checkpoint write that was interrupted (not a checkpoint; "
            "delete it once no run writes into that folder)"
        )
    candidates = sorted(
        (p for p in found if p.suffix == ".ckpt" and not is_temp_file(p)),
        key=lambda p: p.stat().st_mtime_ns,
        reverse=True,
    )
    skipped = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning(f"skipping checkpoint {path}: {problem}")
        skipped.append(f"{path} ({problem})")
    if not candidates:
        raise FileNotFoundError(f"ckpt_path=last: no earlier checkpoints/*.ckpt under {root}")
    raise FileNotFoundError(
        f"ckpt_path=last: none of the {len(candidates)} checkpoints under {root} is valid: "
        + "; ".join(skipped)
        + ". Start a fresh run (ckpt_path=null) or pass ckpt_path=<file> of a good copy"
    )
