"""The submit path's own Redis publish (service/queue_redis.py): the message it writes is the one
Celery's send_task writes, and a real Celery worker consumes it."""

import base64
import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

from service.jobs.kinds import JOB_KINDS
from service.queue import enqueue, make_celery
from service.queue_redis import sender
from service.settings import Settings
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.postgres  # needs the Redis server (gated with PostgreSQL)


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"kts-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(name, *client.keys(f"_kombu.binding*{name}*"))
    client.close()


def _pop(client: redis.Redis, queue: str) -> dict:
    raw = client.rpop(queue)
    assert raw is not None
    return json.loads(raw)


def test_message_matches_send_task(queue: str) -> None:
    app = Celery("kts", broker=REDIS_URL)
    app.conf.task_ignore_result = True
    client = redis.Redis.from_url(REDIS_URL)
    app.send_task("worker.tasks.train", args=["job1"], queue=queue)
    theirs = _pop(client, queue)
    sender(REDIS_URL).send(app, "worker.tasks.train", ["job1"], queue)
    ours = _pop(client, queue)
    client.close()
    assert ours.keys() == theirs.keys()
    assert ours["headers"].keys() == theirs["headers"].keys()
    assert ours["properties"].keys() == theirs["properties"].keys()
    for key in ("task", "argsrepr", "kwargsrepr", "retries", "timelimit", "ignore_result"):
        assert ours["headers"][key] == theirs["headers"][key], key
    assert ours["properties"]["delivery_info"]["routing_key"] == queue
    assert ours["properties"]["body_encoding"] == theirs["properties"]["body_encoding"]
    body = json.loads(base64.b64decode(ours["body"]))
    assert body == json.loads(base64.b64decode(theirs["body"]))
    assert body[0] == ["job1"]


def test_a_celery_worker_runs_the_message(queue: str) -> None:
    app = Celery("kts-test", broker=REDIS_URL)
    app.conf.update(task_ignore_result=True, task_default_queue=queue, broker_connection_retry=True)
    done = f"{queue}-done"
    client = redis.Redis.from_url(REDIS_URL)

    @app.task(name="kts_test.record")
    def record(value: str) -> None:
        client.set(done, value, ex=60)

    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        sender(REDIS_URL).send(app, "kts_test.record", ["hello"], queue)
        deadline = time.monotonic() + 30
        while client.get(done) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert client.get(done) == b"hello"
    client.delete(done)
    client.close()


def test_enqueue_uses_it_with_a_redis_broker(queue: str) -> None:
    settings = Settings(broker_url=REDIS_URL, queue=queue)
    assert enqueue(make_celery(settings), settings, "train", "job2")
    client = redis.Redis.from_url(REDIS_URL)
    message = _pop(client, queue)
    client.close()
    assert message["headers"]["task"] == JOB_KINDS["train"].task
    assert json.loads(base64.b64decode(message["body"]))[0] == ["job2"]
