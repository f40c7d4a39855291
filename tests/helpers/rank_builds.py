"""What each rank of a job builds on a fresh machine, run by real processes that start it at the same moment
(tests/test_shared_builds.py): the synthetic tree and the shards (`prepare`, which rank 0 runs; a second job
on the same data folder runs it too) and the tiny model (`configure_model`, which every rank runs)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def build_like_a_rank(data_dir: str, overrides: list[str], barrier) -> dict[str, str]:
    """Wait for the other rank, then build and load as a training rank does; the digests of what it got."""
    from hydra.core.global_hydra import GlobalHydra

    from tests.helpers.runs import compose_train
    from vlmchallenge.assembly import settings_from_config
    from vlmchallenge.data.pipeline import prepare
    from vlmchallenge.data.synthetic import generate
    from vlmchallenge.models.loader import load_base_model, resolve_pretrained

    cfg = compose_train(Path(data_dir).parent / "run", Path(data_dir), overrides)
    GlobalHydra.instance().clear()
    settings = settings_from_config(cfg)
    # each step starts on both ranks at once, the moment a fresh `torchrun --nproc_per_node=2` gives them:
    # after Lightning's barrier every rank enters `configure_model` together
    barrier.wait()
    generate(settings.data.synthetic, settings.data.root, workers=1)
    barrier.wait()
    shards = prepare(settings.data, data_dir).out_dir
    barrier.wait()
    model_dir = resolve_pretrained(settings.model)
    load_base_model(settings.model, model_dir, quantized=False)  # what the rank then loads must be whole
    return {"shards": folder_digest(shards), "model": folder_digest(Path(model_dir))}
