"""The runner fleet: jobs of runner resource classes (``org/name``) run on other
machines through Celery; see docs/deploy.md.

Server side: :func:`circlet.cluster.server_api.install` (the ``/api/cluster`` router,
the reaper), :class:`circlet.cluster.dispatch.ClusterDispatcher` (the scheduler's
dispatcher), :mod:`circlet.cluster.tokens` (runner tokens). Runner side:
``circlet runner`` (:mod:`circlet.cli.runner_cmd`) with :mod:`circlet.cluster.worker`,
:class:`~circlet.cluster.http_sink.HttpEventSink` and
:class:`~circlet.cluster.http_blobs.HttpBlobStore`. Shared state lives in SQL
(:mod:`circlet.cluster.store`); the broker only carries job ids.
"""
