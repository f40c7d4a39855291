"""What the data commands run: `prepare` (raw recordings -> shards, or the merge of subset jobs) and `verify`
(a prepared folder against its indexes). Apart from `workflows.py` so that these commands import neither
Lightning nor transformers: `python -m vlmchallenge.prepare` starts in about half the time."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from vlmchallenge.conf_schema import as_dataclass
from vlmchallenge.data import pipeline
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.merge import merge_jobs
from vlmchallenge.data.prepare_result import PrepareResult
from vlmchallenge.data.summary import merge_command, print_summary, session_progress, write_summary


def prepare(cfg: DictConfig) -> PrepareResult:
    """Shards for `cfg.data` (all sessions, or a subset job's), or with `merge=true` the split indexes and the
    manifest from the subset jobs' done-markers; prints and saves the summary."""
    from hydra.core.hydra_config import HydraConfig
    from rich.console import Console

    data = as_dataclass(DataConfig, cfg.data)
    console = Console()
    if cfg.get("merge", False):
        result = merge_jobs(data, cfg.paths.data_dir)
    else:
        progress, update = session_progress(console)
        with progress:
            result = pipeline.prepare(data, cfg.paths.data_dir, progress=update)
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    merge_cmd = merge_command(overrides) if result.subset else None
    print_summary(result, console, merge_cmd)
    write_summary(result, Path(cfg.paths.output_dir) / "prepare_summary.json", merge_cmd)
    return result


def verify(cfg: DictConfig):
    """Every shard of a prepared folder (`shards=<dir>`, else the one `cfg.data` prepares into) against its split
    index; prints the verdict and returns the `VerifyResult` (the entry point exits 1 unless it is ok)."""
    from rich.console import Console

    from vlmchallenge.data import locations
    from vlmchallenge.data.summary import print_verify
    from vlmchallenge.data.verify import verify_shards

    folder = cfg.shards or as_dataclass(DataConfig, cfg.data).resolved_out_dir(cfg.paths.data_dir)
    if locations.is_remote(str(folder)):
        raise ValueError(
            f"verify reads a local folder, got {folder}; verify the local copy before uploading it"
        )
    result = verify_shards(folder)
    print_verify(result, Console())
    return result
