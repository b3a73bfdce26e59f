"""The Celery app both ends share: the same broker settings for the server that
sends jobs and for the runners that take them.

A message carries only ``{job_id, attempt}``: the job itself, its secrets and
its files come from the server's API to the runner that claims it, so a broker
(and whoever can read it) never sees a secret, a log or a cache.

Reliability settings, and why:

* ``task_acks_late``: a message is acknowledged after the job ran, so a runner
  that dies holding one does not lose it (the server's claim makes a second
  delivery harmless: a job runs at most once per attempt);
* ``task_reject_on_worker_lost``: the same when a worker process is killed;
* ``worker_prefetch_multiplier = 1``: a busy runner does not hoard queued jobs
  that an idle one of the same class could run;
* ``visibility_timeout`` (Redis): when an unacknowledged message is handed out again;
* ``worker_cancel_long_running_tasks_on_connection_loss = False``: a broker
  restart does not stop running jobs (their results go to the server, not the broker);
* publishing retries while the broker is away (a restart).
"""

from __future__ import annotations

from typing import Any

TASK_NAME = "circlet.run_job"
VISIBILITY_TIMEOUT = 3600  # seconds; longer than a lease, shorter than a lost runner matters


def make_celery(broker_url: str, *, visibility_timeout: int = VISIBILITY_TIMEOUT) -> Any:
    """A Celery app for ``broker_url`` (``redis://…`` or ``amqp://…``), no result backend."""
    from celery import Celery  # type: ignore[import-untyped]

    app = Celery("circlet", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            "visibility_timeout": visibility_timeout,
            # Broadcasts (revoke) reach only workers of this app's key prefix.
            "fanout_prefix": True,
            "fanout_patterns": True,
        },
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 60,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 2,
        },
        task_create_missing_queues=True,
        worker_enable_remote_control=True,
    )
    return app


def close_celery(app: Any) -> None:
    """Release every broker connection ``app`` opened. ``Celery.close`` leaves the
    producer pool's and the broadcast's connections open (with an AMQP broker they
    are sockets until the process ends); the pools are kombu's process-wide ones,
    keyed by broker URL, so closed ones are also dropped from kombu's registry:
    the next app for the same broker gets fresh pools, not closed ones."""
    from kombu import pools

    closed = []
    producers = app.amqp._producer_pool
    if producers is not None:
        producers.force_close_all()
        closed.append(producers)
    if app._pool is not None:
        app._pool.force_close_all()
        closed.append(app._pool)
    for group in (pools.producers, pools.connections):
        for key, pool in list(group.items()):
            if any(pool is c for c in closed):
                dict.__delitem__(group, key)  # keys are eqhash()es already
    app.close()


def send_job(app: Any, *, queue: str, job_id: str, attempt: int, task_id: str) -> None:
    """Put one job message on ``queue`` (retried while the broker restarts)."""
    app.send_task(
        TASK_NAME,
        args=[{"job_id": job_id, "attempt": attempt}],
        queue=queue,
        routing_key=queue,
        task_id=task_id,
        retry=True,
    )


def revoke(app: Any, task_id: str) -> None:
    """Tell every runner to skip ``task_id`` if it has not started it."""
    app.control.revoke(task_id)
