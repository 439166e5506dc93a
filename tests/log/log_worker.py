"""A separate process that appends to or consumes from a log until it is killed (crash tests).

Every line it prints is printed after the operation it reports has returned, so the parent knows
exactly what was acknowledged when it sends SIGKILL.

    python log_worker.py append URL TOPIC TAG BATCH      -> "A <first> <last>" per append
    python log_worker.py consume URL TOPIC GROUP EVERY   -> "P <offsets...>" per poll, "C <upto>" per commit
"""

from __future__ import annotations

import sys

from streamrec.log import open_log
from streamrec.records import ActionEvent


def event(tag: str, n: int) -> ActionEvent:
    return ActionEvent(user=tag, item=f"{tag}-{n}", action="click", time=float(n), counters={"n": float(n)})


def main() -> None:
    mode, url, topic = sys.argv[1:4]
    log = open_log(url)
    if mode == "append":
        tag, batch = sys.argv[4], int(sys.argv[5])
        n = 0
        while True:
            offsets = log.append(topic, [event(tag, n + i) for i in range(batch)])
            n += batch
            print("A", offsets[0], offsets[-1], flush=True)
    elif mode == "consume":
        group, every = sys.argv[4], int(sys.argv[5])
        consumer = log.consumer(topic, group, ActionEvent)
        polls = 0
        print("R", flush=True)
        while True:
            batch = consumer.poll(max_records=7, timeout_s=0.05)
            if batch:
                print("P", *[e.offset for e in batch], flush=True)
                polls += 1
                if polls % every == 0:
                    consumer.commit()
                    print("C", batch[-1].offset, flush=True)


if __name__ == "__main__":
    main()
