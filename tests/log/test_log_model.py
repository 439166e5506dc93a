"""The log against a plain Python model: random appends, polls, commits, trims and consumer crashes.

The reference is a list of records per topic and, per (group, topic), a committed offset and a
read position. A crash closes the consumer without committing and opens a new one: the model
rewinds the position to the committed offset, which is exactly "nothing lost, nothing skipped".
Run over SQLite and over a real redis-server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrec.log import Consumer
from streamrec.records import ActionEvent

TOPICS = ["actions", "impressions"]
GROUPS = ["profiles", "joiner"]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(TOPICS), st.integers(0, 6)),
        st.tuples(st.just("poll"), st.sampled_from(GROUPS), st.sampled_from(TOPICS), st.integers(1, 8)),
        st.tuples(st.just("commit"), st.sampled_from(GROUPS), st.sampled_from(TOPICS)),
        st.tuples(st.just("commit_at"), st.sampled_from(GROUPS), st.sampled_from(TOPICS), st.integers(0, 20)),
        st.tuples(st.just("crash"), st.sampled_from(GROUPS), st.sampled_from(TOPICS)),
        st.tuples(st.just("trim"), st.sampled_from(TOPICS), st.integers(0, 30)),
    ),
    max_size=30,
)


@dataclass
class GroupModel:
    committed: int = 0
    position: int = 0
    delivered: list[int] = field(default_factory=list)  # polled, not committed


def run(log, program) -> None:
    topics: dict[str, list[ActionEvent]] = {t: [] for t in TOPICS}
    kept_from = dict.fromkeys(TOPICS, 0)  # offsets below were trimmed
    groups = {(g, t): GroupModel() for g in GROUPS for t in TOPICS}
    consumers: dict[tuple[str, str], Consumer] = {}
    envelopes: dict[tuple[str, str], list] = {}
    serial = 0

    def consumer(key):
        if key not in consumers:
            consumers[key] = log.consumer(key[1], key[0], ActionEvent)
            envelopes[key] = []
        return consumers[key]

    for op in program:
        if op[0] == "append":
            _, topic, n = op
            batch = [
                ActionEvent(user=f"u{serial + i}", item=f"i{serial + i}", action="click", time=float(serial + i))
                for i in range(n)
            ]
            serial += n
            offsets = log.append(topic, batch)
            assert offsets == list(range(len(topics[topic]), len(topics[topic]) + n))
            topics[topic].extend(batch)
            assert log.end_offset(topic) == len(topics[topic])
        elif op[0] == "poll":
            _, group, topic, most = op
            key, model = (group, topic), groups[(group, topic)]
            got = consumer(key).poll(max_records=most, timeout_s=0)
            first = max(model.position, kept_from[topic])
            expect = list(range(first, min(first + most, len(topics[topic]))))
            assert [e.offset for e in got] == expect
            assert [e.record for e in got] == [topics[topic][o] for o in expect]
            assert all(e.topic == topic for e in got)
            model.position = expect[-1] + 1 if expect else model.position
            model.delivered += expect
            envelopes[key] += got
        elif op[0] == "commit":
            _, group, topic = op
            key, model = (group, topic), groups[(group, topic)]
            consumer(key).commit()
            if model.delivered:
                model.committed = max(model.delivered) + 1
                model.delivered = []
            envelopes[key] = []
        elif op[0] == "commit_at":
            _, group, topic, index = op
            key, model = (group, topic), groups[(group, topic)]
            pending = envelopes.get(key, [])
            if not pending:
                continue
            chosen = pending[index % len(pending)]
            consumer(key).commit(chosen)
            model.committed = chosen.offset + 1
            model.delivered = [o for o in model.delivered if o > chosen.offset]
            envelopes[key] = [e for e in pending if e.offset > chosen.offset]
        elif op[0] == "crash":
            _, group, topic = op
            key, model = (group, topic), groups[(group, topic)]
            if key in consumers:
                consumers.pop(key).close()  # no commit: what was polled comes back
            envelopes[key] = []
            model.position = model.committed
            model.delivered = []
        elif op[0] == "trim":
            _, topic, before = op
            log.trim(topic, before)
            kept_from[topic] = max(kept_from[topic], min(before, len(topics[topic])))
        for (group, topic), model in groups.items():
            assert log.committed(topic, group) == max(model.committed, kept_from[topic]), (group, topic)
    for c in consumers.values():
        c.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=ops)
def test_log_matches_list_model_under_appends_polls_commits_trims_and_crashes(logs, program):
    log = logs.open()
    try:
        run(log, program)
    finally:
        log.close()


def test_two_groups_read_the_same_records_independently(logs):
    log = logs.open()
    events = [ActionEvent(user="u", item=f"i{n}", action="like", time=float(n)) for n in range(10)]
    log.append("actions", events)
    with log.consumer("actions", "a", ActionEvent) as a, log.consumer("actions", "b", ActionEvent) as b:
        first_a = a.poll(4, timeout_s=0)
        a.commit()
        all_b = b.poll(100, timeout_s=0)
        rest_a = a.poll(100, timeout_s=0)
    assert [e.record for e in all_b] == events
    assert [e.record for e in first_a + rest_a] == events
    assert log.committed("actions", "a") == 4
    assert log.committed("actions", "b") == 0
