"""`python -m vlmchallenge.annotate export_dir=<export folder> input=<recording>`: a whole recording (an OpenPack
session, a folder of OpenPack-named JPEG frames, or a video file) -> timeline.csv, operations.csv,
submission.json, timeline.png and annotate.json in one folder (conf_schema.py::AnnotateCommand lists the options)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import vlmchallenge.conf_schema  # noqa: F401  (registers the structured-config schemas)
from vlmchallenge.inference_workflows import annotate


@hydra.main(version_base="1.3", config_path="../conf", config_name="annotate")
def main(cfg: DictConfig) -> float | None:
    official = annotate(cfg)["openpack_official"]
    return official["f1_macro"] if official else None


if __name__ == "__main__":
    main()
