"""The profile ingest writing to profile nodes over gRPC (cluster mode) instead of a local store."""

from __future__ import annotations

import json
import time

import msgspec
import pytest
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.errors import InvalidInputError
from streamrec.log import open_log
from streamrec.profiles import Feature, FeatureQuery, ProfileStore
from streamrec.profiles.client import ProfileClient
from streamrec.profiles.ingest import ingest
from streamrec.profiles.service import ProfileNodeServer
from streamrec.records import ActionEvent

NOW = 1_700_000_000.0
FEATURES = [
    Feature(slot="clicked_category", window="1d", counters=("show", "click")),
    Feature(slot="item_engagement", window="1d", counters=("count",)),
]


def _events(n: int, now: float = NOW) -> list[ActionEvent]:
    return [
        ActionEvent(
            user=f"u{i % 7}", item=f"m{i % 11}", action="click" if i % 3 else "show", time=now - i,
            attributes={"category": f"c{i % 4}"},
        )
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture()
def nodes(tmp_path):
    servers = []
    for name in ("a", "b"):
        store = ProfileStore(None, path=tmp_path / f"node-{name}", clock=lambda: NOW)
        servers.append(ProfileNodeServer(store, own_store=True).start())
    yield servers
    for server in servers:
        server.stop()


def _entities() -> list[str]:
    return [f"user:u{u}" for u in range(7)] + [f"item:m{i}" for i in range(11)]


def test_ingest_into_two_nodes_answers_like_one_store_and_commits_after_the_writes(tmp_path, nodes):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = open_log(url)
    events = _events(300)
    log.append("actions", events)
    log.append("actions", [ActionEvent(user="u1", item="m1", action="click", time=NOW, counters={"bogus": 1.0})])
    client = ProfileClient([n.address for n in nodes])
    stats = ingest(client, url, batch=64, idle_exit_s=0.3)
    assert (stats.polled, stats.accepted, stats.rejected) == (301, 300, 1)  # each event counted once
    assert log.committed("actions", "profiles") == log.end_offset("actions")
    assert ingest(client, url, batch=64, idle_exit_s=0.3).polled == 0  # resumes after the commit
    client.flush()
    # The two nodes together answer exactly what one store fed the same events answers.
    reference = ProfileStore(None, clock=lambda: NOW, background=False)
    reference.write(events)
    reference.merge()
    query = FeatureQuery(entities=_entities(), features=FEATURES, now=NOW)
    got = client.query(query)
    assert msgspec.msgpack.encode(got.results) == msgspec.msgpack.encode(reference.query(query).results)
    # Each node stores only the entities the ring gives it, and both hold some.
    held = {n.address: set(n.store.entity_keys()) for n in nodes}
    assert all(held.values())
    for address, keys in held.items():
        assert all(client.owner(k) == address for k in keys)
    client.close()
    reference.close()
    log.close()


def test_ingest_command_writes_to_the_nodes_given_by_profiles(tmp_path, nodes):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = open_log(url)
    log.append("actions", _events(50))
    ready = tmp_path / "ingest.ready"
    addresses = ",".join(n.address for n in nodes)
    args = ["profiles", "ingest", "--log", url, "--profiles", addresses, "--idle-exit", "0.3"]
    result = CliRunner().invoke(app, [*args, "--ready-file", str(ready), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["accepted"] == 50
    assert json.loads(ready.read_text())["group"] == "profiles"
    client = ProfileClient([n.address for n in nodes])
    client.flush()
    f = Feature(slot="actions", window="1d", counters=("count",))
    res = client.query(FeatureQuery(entities=[f"user:u{u}" for u in range(7)], features=[f], now=NOW))
    assert sum(r[0].scalar() for r in res.results) == 50
    client.close()
    log.close()


def test_ingest_command_still_writes_a_local_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = open_log(url)
    log.append("actions", _events(20, now=time.time()))  # the command's store runs on the wall clock
    store_dir = tmp_path / "store"
    result = CliRunner().invoke(
        app, ["profiles", "ingest", "--log", url, "--store", str(store_dir), "--idle-exit", "0.3", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["accepted"] == 20
    store = ProfileStore(None, path=store_dir, background=False)
    f = Feature(slot="actions", window="1d", counters=("count",))
    res = store.query(FeatureQuery(entities=[f"user:u{u}" for u in range(7)], features=[f]))
    assert sum(r[0].scalar() for r in res.results) == 20
    store.close()
    log.close()


def test_ingest_refuses_store_and_profiles_together_naming_the_option(tmp_path):
    args = ["profiles", "ingest", "--log", f"sqlite:///{tmp_path / 'log.db'}", "--idle-exit", "0.1"]
    result = CliRunner().invoke(app, [*args, "--store", str(tmp_path / "s"), "--profiles", "127.0.0.1:1"])
    assert isinstance(result.exception, InvalidInputError)
    assert result.exception.field == "--profiles"
    result = CliRunner().invoke(app, [*args, "--profiles", "nohost"])
    assert isinstance(result.exception, InvalidInputError) and "host:port" in str(result.exception)


def test_ingest_help_shows_the_serve_default_log_and_the_profiles_section():
    out = CliRunner().invoke(app, ["profiles", "ingest", "--help"], terminal_width=200).output
    assert "sqlite://streamrec-data/log.db" in out
    assert "[profiles] section" in out
