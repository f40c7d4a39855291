"""Subject-disjoint train/val/test splits by user.

The real-data default covers the 7 RGB users and keeps U0103 and U0210 (the same person, docs/openpack.md §5)
on one side; `same_person` groups are enforced for any split a user writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class SplitConfig:
    train: list[str] = field(default_factory=lambda: ["U0103", "U0210", "U0201", "U0206", "U0208"])
    val: list[str] = field(default_factory=lambda: ["U0209"])
    test: list[str] = field(default_factory=lambda: ["U0207"])
    # Different user ids that are one person: they must land in the same split.
    same_person: list[list[str]] = field(
        default_factory=lambda: [
            ["U0103", "U0210"],
            ["U0202", "U0105"],
            ["U0203", "U0108"],
            ["U0204", "U0110"],
            ["U0205", "U0107"],
        ]
    )

    def user_to_split(self) -> dict[str, str]:
        mapping: dict[str, str] = {}
        for split in SPLIT_NAMES:
            for user in getattr(self, split):
                if user in mapping:
                    raise ValueError(f"splits: user {user} is in both '{mapping[user]}' and '{split}'")
                mapping[user] = split
        for group in self.same_person:
            sides = {mapping[u] for u in group if u in mapping}
            if len(sides) > 1:
                placed = {u: mapping[u] for u in group if u in mapping}
                raise ValueError(f"splits: {group} are the same person and must share a split, got {placed}")
        return mapping
