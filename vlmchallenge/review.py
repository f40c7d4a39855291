"""`python -m vlmchallenge.review annotation=<annotate output>`: review and correct an annotated recording in the
browser (vlmchallenge/reviewing/); `export_dir=... input=...` annotates first (annotate's options, with its
progress bar); `export_session=<root>/<user>/<session>` writes the reviewed recording as an OpenPack session for
`prepare`, then exits (conf/review.yaml over `conf_schema.ReviewCommand`). The model stack is imported only when a recording is annotated first,
so reviewing a finished annotation starts in a couple of seconds."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import vlmchallenge.conf_schema  # noqa: F401  (registers the structured-config schemas)
from vlmchallenge.reviewing.footage import Footage
from vlmchallenge.reviewing.page_server import serve_review
from vlmchallenge.reviewing.review_folder import ReviewFolder


def annotation_folder(cfg: DictConfig) -> Path:
    """`annotation=` as given, or the folder `annotate` writes for `export_dir` + `input` (run here first)."""
    if cfg.annotation is not None:
        return Path(cfg.annotation)
    if cfg.export_dir is None or cfg.input is None:
        raise ValueError(
            "review: give annotation=<a folder annotate wrote>, or export_dir=<export> input=<recording> to "
            "annotate first"
        )
    from vlmchallenge.inference_workflows import annotate

    annotate(cfg)
    return Path(cfg.out_dir or cfg.paths.output_dir)


def write_session(folder: ReviewFolder, footage: Footage, target: str) -> None:
    from vlmchallenge.reviewing.session_export import export_session

    done = export_session(folder, footage, target)
    state = "reviewed" if done.reviewed else "the model's, not reviewed"
    print(
        f"session {done.user}/{done.session} under {done.root}: {done.frames} frames, {done.segments} segments "
        f"({state}); train on it: python -m vlmchallenge.prepare data=openpack data.root={done.root}",
        flush=True,
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="review")
def main(cfg: DictConfig) -> None:
    folder = ReviewFolder(annotation_folder(cfg))
    footage = folder.open_footage()
    try:
        if cfg.export_session:
            write_session(folder, footage, cfg.export_session)
        else:
            serve_review(folder, footage, cfg.host, cfg.port, cfg.api_key)
    finally:
        footage.close()


if __name__ == "__main__":
    main()
