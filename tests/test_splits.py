import pytest

from vlmchallenge.data.splits import SplitConfig


def test_default_real_split_covers_rgb_users_and_keeps_one_person_together():
    mapping = SplitConfig().user_to_split()
    assert set(mapping) == {"U0103", "U0201", "U0206", "U0207", "U0208", "U0209", "U0210"}
    assert mapping["U0103"] == mapping["U0210"]


def test_same_person_on_two_sides_is_rejected():
    with pytest.raises(ValueError, match=r"same person.*U0103.*train.*U0210.*test"):
        SplitConfig(train=["U0103"], val=[], test=["U0210"]).user_to_split()


def test_user_in_two_splits_is_rejected():
    with pytest.raises(ValueError, match="U0201 is in both 'train' and 'val'"):
        SplitConfig(train=["U0201"], val=["U0201"], test=[]).user_to_split()
