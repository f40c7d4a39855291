"""Small helpers shared by the entry points."""

from vlmchallenge.utils.instantiators import instantiate_callbacks, instantiate_loggers
from vlmchallenge.utils.runs import find_latest_checkpoint, print_locations

__all__ = ["find_latest_checkpoint", "instantiate_callbacks", "instantiate_loggers", "print_locations"]
