"""`python -m vlmchallenge.review annotation=<annotate output>`: review and correct an annotated recording in the
browser (vlmchallenge/reviewing/); `export_dir=... input=...` annotates first; `export_session=<root>/<user>/
<session>` writes the reviewed recording as an OpenPack session for `prepare` (conf/review.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vlmchallenge.reviewing.command import review


@hydra.main(version_base="1.3", config_path="../conf", config_name="review")
def main(cfg: DictConfig) -> None:
    review(cfg)


if __name__ == "__main__":
    main()
