import csv

import numpy as np
import pytest

from streamrec.datasets import find_dataset, load_movielens
from streamrec.errors import InvalidInputError


@pytest.fixture(scope="module")
def ml100k():
    path = find_dataset("ml-100k")
    if path is None:
        pytest.skip("../shared/datasets/ml-100k is not present")
    return path, load_movielens(path)


def test_ratings_are_all_loaded_and_sorted_by_time(ml100k):
    _, ml = ml100k
    assert len(ml) == 100_000
    assert np.all(np.diff(ml.timestamp) >= 0)
    assert len(np.unique(ml.user)) == 943 and len(np.unique(ml.item)) == 1682


def test_ratings_match_a_plain_csv_parse(ml100k):
    path, ml = ml100k
    with open(path / "ml-100k.inter", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1:]
    expected = sorted((int(t), int(u), int(i), float(r)) for u, i, r, t in (row[:4] for row in rows))
    got = sorted(zip(ml.timestamp.tolist(), ml.user.tolist(), ml.item.tolist(), ml.rating.tolist(), strict=True))
    assert got == expected


def test_items_and_users_carry_their_attributes(ml100k):
    _, ml = ml100k
    assert ml.titles[1] == "Toy Story"
    assert ml.genres[1] == ["Animation", "Children's", "Comedy"]
    assert ml.users[1]["occupation"] == "technician"


def test_a_directory_without_ratings_is_refused_by_name(tmp_path):
    with pytest.raises(InvalidInputError, match="path"):
        load_movielens(tmp_path)
