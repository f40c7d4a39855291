"""Command-line conveniences shared by the entry points."""

from __future__ import annotations

import sys


def accept_plus_experiment(argv: list[str] | None = None) -> list[str]:
    """Let `+experiment=x` and `experiment=x` both work. The train config lists `experiment: null` in its
    defaults (so `experiment=x` overrides it), and Hydra refuses `+experiment=x` next to such an entry
    ("Multiple values for experiment"), so the `+` is dropped before Hydra parses the command line."""
    argv = sys.argv if argv is None else argv
    argv[1:] = [a[1:] if a.startswith("+experiment=") else a for a in argv[1:]]
    return argv


def quiet_secondary_ranks(argv: list[str] | None = None) -> list[str]:
    """Under torchrun or SLURM, keep ranks other than 0 from creating run folders of their own: they use rank
    0's (`vlmchallenge.utils.distributed`)."""
    from vlmchallenge.utils.distributed import secondary_rank_overrides

    argv = sys.argv if argv is None else argv
    argv += secondary_rank_overrides()
    return argv
