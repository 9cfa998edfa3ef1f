"""Celery task messages written straight to a Redis broker: one LPUSH per job.

`Celery.send_task` costs about 0.65 ms of CPU per message on this machine (routing, queue
declaration, kombu's producer and its retry wrappers); the submit route sends one per job. Here
Celery still builds the message (`app.amqp.as_task_v2`, its own protocol 2 headers and body)
and only kombu's Redis envelope is written by hand, exactly as kombu's Redis transport does
(`Channel._put`: a JSON object with the base64 body, LPUSH onto the queue's list): about
0.25 ms. tests/test_queue_redis.py checks the envelope against the one send_task writes and
that a real Celery worker runs the task.

Durability is unchanged: the job row is committed before the message, and the reconciler sends
a queued job again when its message was lost.
"""

import base64
import json
import threading
import uuid
from typing import Any

from celery import Celery

_senders: dict[str, "RedisSender"] = {}
_clients: dict[str, Any] = {}
_lock = threading.Lock()


def is_redis(url: str) -> bool:
    """Whether the broker at `url` is a Redis server (else the embedded one, or another)."""
    return url.startswith(("redis://", "rediss://"))


def redis_client(url: str) -> Any:
    """This process's sync client of the Redis at `url` (one connection pool, thread-safe,
    fork-aware), for the calls on the request and epoch paths: task messages, progress
    publishes, metrics reads.

    redis-py 8 retries a failed call 10 times with backoff by default: about 4 s per call when
    Redis refuses connections, 11 connect timeouts when it does not answer. Each caller has a
    fallback (the reconciler re-sends a job, a stream reads the database), so one retry on a
    fresh connection and short timeouts: at most about 4 s per call, not a minute.
    """
    import redis  # kombu's Redis transport brings it; only a Redis broker needs it
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    with _lock:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(
                url, retry=Retry(NoBackoff(), 1), socket_timeout=2, socket_connect_timeout=1
            )
        return _clients[url]


class RedisSender:
    """Sends task messages over this process's Redis client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def send(self, app: Celery, task: str, args: list[Any], queue: str) -> str:
        """Push one task message onto `queue`; returns the task id."""
        task_id = str(uuid.uuid4())
        # ignore_result None, as send_task sends it: the task's own setting decides
        message = app.amqp.as_task_v2(task_id, task, args=args, ignore_result=None)
        self.client.lpush(queue, envelope(message.headers, message.properties, message.body, queue))
        return task_id


def envelope(headers: dict[str, Any], properties: dict[str, Any], body: Any, queue: str) -> bytes:
    """kombu's Redis transport message: JSON body base64-encoded inside a JSON envelope,
    routed by the default exchange to the queue of the same name (priority 0)."""
    payload = json.dumps(body).encode()
    return json.dumps(
        {
            "body": base64.b64encode(payload).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                **properties,
                "delivery_mode": 2,  # persistent
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


def sender(url: str) -> RedisSender:
    """This process's sender for the broker at `url`."""
    client = redis_client(url)  # before the lock, which it takes too
    with _lock:
        if url not in _senders:
            _senders[url] = RedisSender(client)
        return _senders[url]
