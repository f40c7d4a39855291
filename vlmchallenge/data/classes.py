"""The one OpenPack operation class table used everywhere (parser, shards, training, metrics, serving).

Order is the toolkit's ActSet order (`OPENPACK_OPERATIONS`): index = position, Null (8100) last.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OperationClass:
    index: int
    id: int
    name: str
    is_ignore: bool = False


OPENPACK_OPERATIONS: tuple[OperationClass, ...] = (
    OperationClass(0, 100, "Picking"),
    OperationClass(1, 200, "Relocate Item Label"),
    OperationClass(2, 300, "Assemble Box"),
    OperationClass(3, 400, "Insert Items"),
    OperationClass(4, 500, "Close Box"),
    OperationClass(5, 600, "Attach Box Label"),
    OperationClass(6, 700, "Scan Label"),
    OperationClass(7, 800, "Attach Shipping Label"),
    OperationClass(8, 900, "Put on Back Table"),
    OperationClass(9, 1000, "Fill out Order"),
    OperationClass(10, 8100, "Null", is_ignore=True),
)

NULL_ID = 8100
ID_TO_CLASS: dict[int, OperationClass] = {c.id: c for c in OPENPACK_OPERATIONS}
NAME_TO_CLASS: dict[str, OperationClass] = {c.name: c for c in OPENPACK_OPERATIONS}
OPERATION_IDS: tuple[int, ...] = tuple(c.id for c in OPENPACK_OPERATIONS if not c.is_ignore)


def class_index(op_id: int) -> int:
    """Index of an operation id in the class table; ValueError for an unknown id."""
    try:
        return ID_TO_CLASS[op_id].index
    except KeyError:
        raise ValueError(
            f"unknown OpenPack operation id {op_id}; expected one of {sorted(ID_TO_CLASS)}"
        ) from None
