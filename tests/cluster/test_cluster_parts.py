"""The launcher's pieces without a cluster: child processes, the shared config file, the model check."""

from __future__ import annotations

import signal
import sys
import time
import tomllib

import pytest

from streamrec.cluster import ClusterConfig, ProcessDiedError
from streamrec.cluster.bootstrap import check_snapshot, cluster_config, initial_snapshot, to_toml
from streamrec.cluster.process import Child, stop_all
from streamrec.errors import ConfigError, InvalidInputError


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_exits_is_reported_with_the_tail_of_its_log(tmp_path):
    child = Child("worker", _py("print('about to fail', flush=True); raise SystemExit(3)"), tmp_path / "w.log", bool)
    child.start()
    child.proc.wait(10)
    with pytest.raises(ProcessDiedError) as info:
        child.probe()
    assert (info.value.name, info.value.returncode) == ("worker", 3)
    assert "about to fail" in info.value.tail and "worker exited with code 3" in str(info.value)


def test_stop_all_sends_sigterm_then_sigkill_after_the_grace_period(tmp_path):
    polite = Child("polite", _py("import time; time.sleep(60)"), tmp_path / "p.log", bool)
    stubborn_code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    stubborn = Child("stubborn", _py(stubborn_code), tmp_path / "s.log", lambda: stubborn.tail(1) == "ready")
    for child in (polite, stubborn):
        child.start()
    while not stubborn.probe():
        time.sleep(0.02)
    started = time.monotonic()
    stop_all([polite, stubborn], grace_s=0.5)
    assert time.monotonic() - started < 5
    assert polite.returncode() == -signal.SIGTERM and stubborn.returncode() == -signal.SIGKILL
    assert "SIGKILL after a 0.5 s grace period" in stubborn.tail()
    assert "stopped, exit code -15" in polite.tail()


def test_the_cluster_config_file_holds_every_serving_slot_and_reads_back(tmp_path):
    from streamrec.joiner import load_joiner_config
    from streamrec.profiles.config import load_profiles_config
    from streamrec.serving.slots import SERVING_SLOTS, serving_profiles_config

    user = {"profiles": {"secret": "s3", "slots": {"item_ctr": {"entity": "item", "value": "item", "counters": ["x"]}}}}
    data = cluster_config(user, negative_rate=0.2, window="90s", merge_interval=0.25)
    path = tmp_path / "cluster.toml"
    path.write_text(to_toml(data))
    cfg = load_profiles_config(str(path))
    # The nodes and the ingest read plain [profiles]: it must already hold the slots the API reads.
    assert cfg == serving_profiles_config({**user["profiles"], "merge_interval": 0.25})
    assert set(SERVING_SLOTS) <= set(cfg.slots) and cfg.slots["item_ctr"].counters == ["x"]  # the user's slot wins
    joiner = load_joiner_config(str(path))
    assert (joiner.window_s, joiner.negative_rate) == (90.0, 0.2)
    assert tomllib.loads(path.read_text())["serving"]["sample_rate"] == 0.2  # the API corrects by the joiner's rate


def test_a_bad_cluster_config_names_the_key():
    with pytest.raises(ConfigError, match="trainer"):
        cluster_config({"trainer": {}}, negative_rate=0.1, window="10m", merge_interval=1.0)
    with pytest.raises(ConfigError, match=r"joiner\.window"):
        cluster_config({"joiner": {"window": "soon"}}, negative_rate=0.1, window="10m", merge_interval=1.0)
    with pytest.raises(InvalidInputError, match="negative_rate"):
        ClusterConfig(negative_rate=0)
    with pytest.raises(ConfigError, match="sparse_sync_interval"):
        ClusterConfig(sparse_sync_interval="often")


def test_to_toml_writes_nested_tables_arrays_of_tables_and_escapes():
    data = {"a": {"b": {"c": 1, "d": [1.5, 2.0]}, "t": [{"w": 60.0, "u": None}], "s": 'say "hi"\\n', "e": {}}}
    assert tomllib.loads(to_toml(data)) == {
        "a": {"b": {"c": 1, "d": [1.5, 2.0]}, "t": [{"w": 60.0}], "s": 'say "hi"\\n', "e": {}}
    }


def test_to_toml_refuses_what_toml_cannot_hold_naming_the_key():
    with pytest.raises(ConfigError, match=r"'profiles\.slots\.x\.alpha'.*non-finite"):
        to_toml({"profiles": {"slots": {"x": {"alpha": float("nan")}}}})
    with pytest.raises(ConfigError, match=r"'serving\.when'.*datetime"):
        to_toml({"serving": {"when": __import__("datetime").datetime(2026, 1, 1)}})


def test_the_initial_snapshot_fits_the_serving_plan_and_a_foreign_one_is_refused(tmp_path):
    from streamrec.serving.features import default_plan
    from streamrec.training.serving_model import ServingModel

    data = cluster_config(None, negative_rate=0.1, window="10m", merge_interval=1.0)
    path = tmp_path / "m.npz"
    initial_snapshot(path, data)
    check_snapshot(path, data)
    model = ServingModel.from_snapshot(path)
    assert model.config.n_dense == default_plan().n_dense
    small = {**data, "serving": {"features": {"sparse": [{"name": "user", "kind": "user"}], "dense": []}}}
    with pytest.raises(InvalidInputError, match="--snapshot") as info:
        check_snapshot(path, small)
    assert info.value.field == "--snapshot"
