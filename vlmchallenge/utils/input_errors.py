"""Errors in what a run was given (a model that cannot be had, an empty split): the user fixes them, so the
entry points print only the message, which names the input and the remedy, and no traceback.

Hydra prints a `CompactHydraException` raised by a task function as its message alone (exit status 1) unless
HYDRA_FULL_ERROR=1 asks for the whole traceback (docs/reliability-inputs.md §4).
"""

from __future__ import annotations

from hydra.errors import CompactHydraException


class InputError(CompactHydraException):
    """A run's input cannot work; the message says which one, what was found and what to do."""


class EmptySplitError(InputError, ValueError):
    """A split that must have samples (the train split, for fitting) has none."""
