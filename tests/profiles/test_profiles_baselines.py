"""The Redis-hash baseline of ``bench profiles`` answers the bench's request as the profile store does."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from streamrec.profiles.baselines import RedisProfiles
from streamrec.profiles.bench import QUICK, _canon, bench_config, generate_events, request_features
from streamrec.profiles.store import ProfileStore
from streamrec.profiles.types import FeatureQuery


def test_redis_hashes_answer_every_feature_as_the_profile_store(redis_url, tmp_path):
    import redis

    config = bench_config(secret="test-profiles-baselines")  # its own keys on the session's server
    end = float(int(time.time() // 60) * 60)
    data = generate_events(dataclasses.replace(QUICK, events=4000, users=60, items=80), end, seed=11)
    client = redis.Redis.from_url(redis_url)
    baseline = RedisProfiles(client, config)
    store = ProfileStore(config, str(tmp_path / "store"), background=False)
    try:
        for events in data.batches(500):
            assert store.write(events).accepted == len(events)
            baseline.write(events)
        store.merge()
        features = request_features()
        users = [f"u{u}" for u in np.flatnonzero(data.user_weights > 0)[:12]]
        nonzero = 0
        for user in users:
            want = [
                _canon(x)
                for x in store.query(FeatureQuery(features=features, entities=[f"user:{user}"], now=end)).results[0]
            ]
            got = [_canon(x) for x in baseline.query(user, features, end)]
            assert got == want, user
            nonzero += sum(any(x != 0 for row in data_ for x in row) for _, data_ in want)
        assert nonzero > len(users) * 10  # the users acted: the answers compared are not all empty
    finally:
        store.close()
        client.close()
