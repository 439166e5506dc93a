"""Per-slot configuration from TOML (issue 2, item 6): every option loads, every mistake names its key."""

from __future__ import annotations

import textwrap
import tomllib

import numpy as np
import pytest

from streamrec.embedding import (
    FTRL,
    SGD,
    Adagrad,
    Adam,
    EmbeddingCollection,
    Normal,
    SlotConfig,
    Uniform,
    Zeros,
)
from streamrec.errors import ConfigError

FULL = """
[embedding]
seed = 7

[embedding.slots.user]
dim = 16
admit_after = 2
ttl = "30d"
optimizer = { type = "adagrad", lr = 0.05, initial_accumulator_value = 0.1, lr_decay = 0.01 }
initializer = { type = "normal", mean = 0.5, std = 0.01 }

[embedding.slots.item]
dim = 8
admit_after = 3
ttl = "12h"
optimizer = { type = "adam", lr = 0.002, beta1 = 0.8, beta2 = 0.99, eps = 1e-7 }
initializer = { type = "uniform", low = -0.1, high = 0.2 }
capacity = 5000
sketch_width = 4096
sketch_depth = 2

[embedding.slots.genres]
dim = 4
pooling = "mean"
ttl = "90s"
optimizer = { type = "ftrl", alpha = 0.1, beta = 0.5, l1 = 0.01, l2 = 0.02 }
initializer = { type = "zeros" }

[embedding.slots.city-id]
dim = 2
ttl = 3600
optimizer = { type = "sgd", lr = 1 }
"""


def _write(tmp_path, text: str):
    path = tmp_path / "streamrec.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_a_toml_file_with_every_optimizer_and_initializer_loads(tmp_path):
    tables = EmbeddingCollection.from_toml(_write(tmp_path, FULL))
    assert tables.slots == ["user", "item", "genres", "city-id"]
    assert tables.config.seed == 7
    user, item, genres, city = (tables[s].config for s in tables.slots)
    assert (user.dim, user.admit_after, user.ttl, user.pooling) == (16, 2, 30 * 86400, "sum")
    assert user.optimizer == Adagrad(lr=0.05, initial_accumulator_value=0.1, lr_decay=0.01)
    assert user.initializer == Normal(mean=0.5, std=0.01)
    assert (item.dim, item.ttl, item.capacity, item.sketch_width, item.sketch_depth) == (8, 12 * 3600, 5000, 4096, 2)
    assert item.optimizer == Adam(lr=0.002, beta1=0.8, beta2=0.99, eps=1e-7)
    assert item.initializer == Uniform(low=-0.1, high=0.2)
    assert (genres.ttl, genres.pooling) == (90, "mean")
    assert genres.optimizer == FTRL(alpha=0.1, beta=0.5, l1=0.01, l2=0.02)
    assert genres.initializer == Zeros()
    assert city.ttl == 3600 and city.admit_after == 1 and city.optimizer == SGD(lr=1.0)
    assert tables["item"].sketch.counts.shape == (2, 4096)
    assert tables["genres"].sketch is None  # admit_after = 1 needs no filter
    assert tables["user"].index.positions >= 1024 and tables["item"].row_capacity == 5000


def test_toml_python_and_dict_configs_build_the_same_tables(tmp_path):
    from_toml = EmbeddingCollection.from_toml(_write(tmp_path, FULL))
    from_python = EmbeddingCollection({slot: from_toml[slot].config for slot in from_toml.slots}, seed=7)
    from_dict = EmbeddingCollection(tomllib.loads(FULL)["embedding"])
    ids = np.array([1, 2, 3, -(2**63)], dtype=np.int64)
    for slot in from_toml.slots:
        vectors = []
        for tables in (from_toml, from_python, from_dict):
            for _ in range(3):  # slots admitting after 2 or 3 sightings
                tables[slot].admit(ids, now=1)
            vectors.append(tables[slot].lookup(ids))
        assert np.array_equal(vectors[0], vectors[1]) and np.array_equal(vectors[0], vectors[2])


def test_slot_config_defaults_are_usable_from_python():
    config = SlotConfig(dim=3)
    assert (config.admit_after, config.ttl, config.pooling) == (1, None, "sum")
    assert isinstance(config.optimizer, Adagrad) and isinstance(config.initializer, Normal)


BAD = [
    # (slot body lines, dotted key the error must name)
    ("dimm = 16", "embedding.slots.user.dimm"),
    ("dim = 0", "embedding.slots.user.dim"),
    ("dim = 5000", "embedding.slots.user.dim"),
    ("dim = 4.5", "embedding.slots.user.dim"),
    ("dim = true", "embedding.slots.user.dim"),
    ('ttl = "30 days"', "embedding.slots.user.ttl"),
    ("ttl = -5", "embedding.slots.user.ttl"),
    ("ttl = 0", "embedding.slots.user.ttl"),
    ("ttl = nan", "embedding.slots.user.ttl"),
    ("admit_after = 0", "embedding.slots.user.admit_after"),
    ("admit_after = 256", "embedding.slots.user.admit_after"),
    ('pooling = "max"', "embedding.slots.user.pooling"),
    ("capacity = 0", "embedding.slots.user.capacity"),
    ("sketch_width = 8", "embedding.slots.user.sketch_width"),
    ("sketch_depth = 0", "embedding.slots.user.sketch_depth"),
    ('optimizer = { type = "rmsprop" }', "embedding.slots.user.optimizer.type"),
    ('optimizer = { type = "sgd", lrr = 0.1 }', "embedding.slots.user.optimizer.lrr"),
    ('optimizer = { type = "sgd", lr = -0.1 }', "embedding.slots.user.optimizer.lr"),
    ('optimizer = { type = "sgd", lr = inf }', "embedding.slots.user.optimizer.lr"),
    ('optimizer = { type = "adagrad", eps = -1.0 }', "embedding.slots.user.optimizer.eps"),
    ('optimizer = { type = "adagrad", lr_decay = -1.0 }', "embedding.slots.user.optimizer.lr_decay"),
    ('optimizer = { type = "adam", beta1 = 1.0 }', "embedding.slots.user.optimizer.beta1"),
    ('optimizer = { type = "adam", beta2 = -0.1 }', "embedding.slots.user.optimizer.beta2"),
    ('optimizer = { type = "ftrl", alpha = 0 }', "embedding.slots.user.optimizer.alpha"),
    ('optimizer = { type = "ftrl", l1 = -1 }', "embedding.slots.user.optimizer.l1"),
    ('initializer = { type = "uniform", low = 1.0, high = 0.0 }', "embedding.slots.user.initializer.low"),
    ('initializer = { type = "normal", std = -1.0 }', "embedding.slots.user.initializer.std"),
    ('initializer = { type = "normal", sdt = 1.0 }', "embedding.slots.user.initializer.sdt"),
    ('initializer = { type = "xavier" }', "embedding.slots.user.initializer.type"),
]


@pytest.mark.parametrize(("line", "key"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_key_or_value_raises_config_error_naming_the_dotted_key(tmp_path, line, key):
    body = line if line.startswith("dim") else f"dim = 4\n{line}"
    text = "[embedding]\n[embedding.slots.other]\ndim = 2\n[embedding.slots.user]\n" + body + "\n"
    with pytest.raises(ConfigError) as err:
        EmbeddingCollection.from_toml(_write(tmp_path, text))
    assert err.value.key == key
    assert f"'{key}'" in str(err.value)


def test_a_missing_dim_names_the_slot_and_the_field(tmp_path):
    with pytest.raises(ConfigError) as err:
        EmbeddingCollection.from_toml(_write(tmp_path, "[embedding.slots.user]\nttl = 5\n"))
    assert err.value.key.startswith("embedding.slots.user")
    assert "dim" in str(err.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[embedding]\nseeds = 1\n[embedding.slots.user]\ndim = 4\n", "embedding.seeds"),
        ('[embedding]\nseed = "x"\n[embedding.slots.user]\ndim = 4\n', "embedding.seed"),
        ('[embedding.slots."bad name"]\ndim = 4\n', "embedding.slots"),
        ("[embedding]\nslots = [1]\n", "embedding.slots"),
        ("[embedding]\nslots = {}\n", "embedding"),
    ],
)
def test_bad_section_level_keys_name_their_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        EmbeddingCollection.from_toml(_write(tmp_path, text))
    assert err.value.key == key


def test_a_missing_section_file_or_bad_toml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no \\[embedding\\] section"):
        EmbeddingCollection.from_toml(_write(tmp_path, "[other]\nx = 1\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        EmbeddingCollection.from_toml(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError):
        EmbeddingCollection.from_toml(_write(tmp_path, "[embedding.slots.user\ndim = 4\n"))


def test_a_bad_dict_config_names_the_key_too():
    with pytest.raises(ConfigError) as err:
        EmbeddingCollection({"slots": {"user": {"dim": 4, "optimizer": {"type": "sgd", "lr": 0}}}})
    assert err.value.key == "embedding.slots.user.optimizer.lr"


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: SlotConfig(dim=0), "dim"),
        (lambda: SlotConfig(dim=4, ttl="soon"), "ttl"),
        (lambda: SlotConfig(dim=4, admit_after=0), "admit_after"),
        (lambda: Adagrad(lr=0), "lr"),
        (lambda: Adam(beta2=1.5), "beta2"),
        (lambda: FTRL(l2=-1), "l2"),
        (lambda: Uniform(low=1, high=1), "low"),
        (lambda: Normal(std=-0.1), "std"),
    ],
)
def test_bad_values_from_python_raise_value_error_naming_the_field(make, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        make()


def test_unknown_keys_from_python_are_rejected():
    with pytest.raises(TypeError, match="dimm"):
        SlotConfig(dimm=4)
