"""The simulator's in-process driver against the real recommender: its events are taken whole,
and the clicks it sends back carry the request ids the recommender logged impressions under."""

from __future__ import annotations

from streamrec.log import open_log
from streamrec.profiles import ProfileClient
from streamrec.records import ActionEvent, Impression
from streamrec.serving import Recommender, RecommenderConfig, serving_profiles_config
from streamrec.sim import InProcessDriver, World


def _read(log, topic, record_type):
    with log.consumer(topic, "reader", record_type) as consumer:
        out = []
        while len(out) < log.end_offset(topic):
            out += [e.record for e in consumer.poll(100_000, 0.2)]
    return out


def test_simulated_traffic_flows_through_the_recommender(tmp_path):
    world = World(seed=0, n_users=60)
    history = world.generate_history(days=0.02)
    cfg = serving_profiles_config({"clock": "event", "merge_interval": "10ms"})
    client = ProfileClient.embedded(cfg, str(tmp_path / "profiles"))
    log = open_log(f"sqlite:///{tmp_path}/log.db")
    try:
        rec = Recommender(client, log, None, RecommenderConfig())
        result = rec.record(history.events)
        assert result.accepted == len(history.events) and not result.rejected  # impression, position... all taken
        client.flush()
        InProcessDriver(world, rec).run(minutes=3)
        impressions = _read(log, "impressions", Impression)
        assert impressions
        served = {(i.request_id, i.item) for i in impressions}
        actions = _read(log, "actions", ActionEvent)[len(history.events) :]
        clicks = [a for a in actions if a.action == "click"]
        assert clicks and all((a.request_id, a.item) in served for a in clicks)
    finally:
        log.close()
        client.close()
