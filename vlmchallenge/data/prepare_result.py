"""What preparing data returns: one record per session and the run's totals."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SessionResult:
    split: str
    key: str
    record: dict  # the session's done-marker: shards, class counts, skipped reasons, ...
    frames_decoded: int
    clips_written: int
    seconds: float


@dataclass
class PrepareResult:
    out_dir: Path | str  # a URL after `verify_published`
    manifest: dict | None  # None after a subset job: the merge writes it
    sessions: list[SessionResult]
    unassigned: list[str]  # sessions whose user is in no split (reported, not silently dropped)
    seconds: float
    totals: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)  # per split: users, sessions, nsamples, class counts, ...
    subset: str | None = None  # a subset job: what it covered; None: every session
    merged: bool = False  # written by `merge_jobs` from the done-markers
