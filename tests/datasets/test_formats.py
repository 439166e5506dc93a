"""Readers of data as users have it, each on a small file written here: MovieLens as GroupLens ships
it (ratings.csv + movies.csv, ML-1M's '::' files, ML-100K's u.data), Taobao UserBehavior, and any
CSV/Parquet with --label/--time/--slots; the refusals name the column convention and the docs."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamrec.datasets.formats import eval_label, leaky_columns, parse_label
from streamrec.datasets.movielens import _cross, feature_id
from streamrec.datasets.resolve import load_dataset
from streamrec.errors import InvalidInputError

RATINGS = [(1, 10, 4.0, 300), (2, 20, 3.5, 100), (1, 20, 5.0, 200), (3, 10, 1.0, 400)]  # not in time order


def ids(batch, slot):
    j = batch.sparse[slot]
    lengths = j.lengths().tolist()
    values = j.values.tolist()
    out, at = [], 0
    for n in lengths:
        out.append(values[at : at + n])
        at += n
    return out


def check_movielens(ds, genres_of):
    ex = ds.examples
    ordered = sorted(RATINGS, key=lambda r: r[3])
    assert ds.kind == "movielens" and ds.has_time
    assert ex.time.tolist() == [r[3] for r in ordered]
    assert ids(ex, "user") == [[r[0]] for r in ordered]
    assert ids(ex, "item") == [[r[1]] for r in ordered]
    assert ex.labels.tolist() == [float(r[2] >= 4) for r in ordered]
    expected_genres = [sorted(feature_id(f"genre={g}") for g in genres_of[r[1]]) for r in ordered]
    assert [sorted(g) for g in ids(ex, "genre")] == expected_genres
    crosses = [sorted(_cross(np.full(len(g), r[0]), np.array(g, dtype=np.int64)).tolist())
               for r, g in zip(ordered, expected_genres, strict=True)]  # fmt: skip
    assert [sorted(g) for g in ids(ex, "user_genre")] == crosses


def test_grouplens_ratings_csv_and_movies_csv(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in RATINGS)
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n10,"Heat, the film (1995)",Action|Crime\n20,Toy Story (1995),(no genres listed)\n'
    )
    check_movielens(load_dataset(tmp_path), {10: ["Action", "Crime"], 20: []})


def test_ml_1m_dat_files_with_double_colons(tmp_path):
    (tmp_path / "ratings.dat").write_text("".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in RATINGS))
    (tmp_path / "movies.dat").write_bytes(b"10::Heat (1995)::Action|Crime\n20::Caf\xe9 (1990)::Comedy\n")
    (tmp_path / "users.dat").write_text("1::F::25::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    ratings = [(u, i, float(int(r)), t) for u, i, r, t in RATINGS]
    ds = load_dataset(tmp_path)
    ex = ds.examples
    assert ex.labels.tolist() == [float(r[2] >= 4) for r in sorted(ratings, key=lambda r: r[3])]
    check_movielens(ds, {10: ["Action", "Crime"], 20: ["Comedy"]})
    occupation = ids(ex, "occupation")
    assert occupation[0] == [feature_id("occupation=16")]  # user 2 rated first


def test_ml_100k_u_data_with_u_item_genre_flags(tmp_path):
    (tmp_path / "u.data").write_text("".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in RATINGS))
    flags = ["0"] * 19
    action = flags.copy()
    action[1] = action[6] = "1"  # Action, Crime
    (tmp_path / "u.item").write_text(
        "10|Heat (1995)|01-Jan-1995||http://x|" + "|".join(action) + "\n20|Toy|01-Jan-1995||u|" + "|".join(flags) + "\n"
    )
    check_movielens(load_dataset(tmp_path), {10: ["Action", "Crime"], 20: []})


def test_grouplens_file_missing_a_column_names_the_convention_and_the_docs(tmp_path):
    (tmp_path / "ratings.csv").write_text("user,movie,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(InvalidInputError, match=r"userId.*docs/eval.md") as err:
        load_dataset(tmp_path)
    assert "ratings.csv" in str(err.value)


TAOBAO = [(1, 100, 7, "pv", 1511544070), (1, 101, 7, "buy", 1511544000), (2, 100, 7, "cart", 1511545000),
          (3, 102, 8, "fav", 1511546000), (2, 102, 8, "pv", 1511540000)]  # fmt: skip


def test_taobao_user_behavior_headerless_csv(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text("".join(",".join(map(str, r)) + "\n" for r in TAOBAO))
    ds = load_dataset(path)
    ordered = sorted(TAOBAO, key=lambda r: r[4])
    assert ds.has_time and ds.slots == ["user", "item", "category"]
    assert ds.examples.time.tolist() == [r[4] for r in ordered]
    assert ids(ds.examples, "item") == [[r[1]] for r in ordered]
    assert ds.examples.labels.tolist() == [float(r[3] in ("buy", "cart", "fav")) for r in ordered]
    only_buy = load_dataset(path, label="behavior == buy")
    assert only_buy.examples.labels.sum().item() == 1


def test_any_csv_with_label_time_and_slots(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("who,what,stars,when,note\n7,a,5,30,x\n8,b,2,10,y\n7,b,4,20,\n")
    ds = load_dataset(path, label="stars>=4", time="when", slots=["who", "what"])
    assert ds.has_time and ds.slots == ["who", "what"]
    assert ds.examples.time.tolist() == [10, 20, 30]
    assert ds.examples.labels.tolist() == [0.0, 1.0, 1.0]
    assert ids(ds.examples, "who") == [[8], [7], [7]]
    assert ids(ds.examples, "what") == [[feature_id("what=b")], [feature_id("what=b")], [feature_id("what=a")]]
    # without --slots: every column but the label's and the time; the label's source is a leak
    ds = load_dataset(path, label="stars>=4", time="when")
    assert ds.slots == ["who", "what", "note"]
    assert any("'stars'" in w for w in ds.warnings)


def test_parquet_with_an_in_label_and_no_time_column_has_no_time(tmp_path):
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user": [1, 2, 3], "item": [4, 5, 6], "behavior": ["buy", "pv", "fav"]}), path)
    ds = load_dataset(path, label="behavior in (buy, cart, fav)", slots=["user", "item"])
    assert ds.examples.labels.tolist() == [1.0, 0.0, 1.0]
    assert not ds.has_time and not ds.ordered


def test_a_plain_table_without_a_time_column_is_not_given_row_numbers_as_time(tmp_path):
    path = tmp_path / "examples.csv"
    path.write_text("label,user,item\n1,1,2\n0,2,3\n")
    assert not load_dataset(path).has_time
    timed = tmp_path / "timed.csv"
    timed.write_text("label,user,item,time\n1,1,2,5\n0,2,3,6\n")
    assert load_dataset(timed).has_time


def test_a_numeric_column_that_determines_the_label_is_flagged_and_left_out(tmp_path):
    rng = np.random.default_rng(0)
    rating = rng.integers(1, 6, 200)
    table = pa.table({"user": rng.integers(0, 50, 200), "score": rating * 2, "rating": rating,
                      "noise": rng.integers(0, 5, 200), "ts": np.arange(200)})  # fmt: skip
    labels = (rating >= 4).astype(np.float32)
    assert leaky_columns(table, labels, ["user", "score", "rating", "noise"]) == ["score", "rating"]
    path = tmp_path / "leaky.parquet"
    pq.write_table(table, path)
    ds = load_dataset(path, label="rating >= 4", time="ts")
    assert ds.slots == ["user", "noise"]
    assert len(ds.warnings) == 2 and "'score' determines the label" in ds.warnings[1]
    kept = load_dataset(path, label="rating >= 4", time="ts", slots=["user", "score"])
    assert kept.slots == ["user", "score"] and any("kept because --slots" in w for w in kept.warnings)


def test_label_expressions_against_a_plain_evaluation():
    table = pa.table({"r": [1.0, 3.5, 4.0, None, 5.0], "b": ["pv", "buy", None, "cart", "fav"]})
    r = [1.0, 3.5, 4.0, None, 5.0]
    cases = {"r>=4": lambda x: x is not None and x >= 4, "r > 3.5": lambda x: x is not None and x > 3.5,
             "r<2": lambda x: x is not None and x < 2, "r == 4": lambda x: x == 4.0,
             "r != 4": lambda x: x is not None and x != 4.0}  # fmt: skip
    for expr, fn in cases.items():
        assert eval_label(table, expr).tolist() == [float(fn(x)) for x in r], expr
    b = ["pv", "buy", None, "cart", "fav"]
    assert eval_label(table, "b in (buy,cart,fav)").tolist() == [float(x in ("buy", "cart", "fav")) for x in b]
    assert eval_label(table, "b not in ('pv')").tolist() == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert parse_label("rating=4") == ("rating", "==", ["4"])


@pytest.mark.parametrize(
    ("expr", "match"),
    [("rating >> 4", "COLUMN OP VALUE"), ("nope >= 1", "no column 'nope'"), ("b >= 2", "holds text"),
     ("r >= four", "numeric"), ("b in ()", "at least one")],
)  # fmt: skip
def test_bad_label_expressions_name_the_flag(expr, match):
    table = pa.table({"r": [1.0, 2.0], "b": ["x", "y"]})
    with pytest.raises(InvalidInputError, match=match) as err:
        eval_label(table, expr)
    assert err.value.field == "--label"


def test_bad_time_and_slot_columns_name_the_flag(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("u,i,r,when\n1,2,5,x\n")
    with pytest.raises(InvalidInputError, match="no such column") as err:
        load_dataset(path, label="r>=4", time="ts")
    assert err.value.field == "--time"
    with pytest.raises(InvalidInputError) as err:
        load_dataset(path, label="r>=4", time="when")
    assert "--time" in err.value.field
    with pytest.raises(InvalidInputError, match="not columns") as err:
        load_dataset(path, label="r>=4", slots=["u", "zz"])
    assert err.value.field == "--slots"
