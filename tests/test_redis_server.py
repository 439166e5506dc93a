import redis


def test_redis_fixture_is_a_real_server(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    assert "redis_version" in client.info("server")
