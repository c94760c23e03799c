"""The HTTP API of a queue: ``create_app(queue, token=...)`` -> a FastAPI app.

Every route calls :mod:`conveyor.operations`, the code the command line runs. Reads are open;
every POST needs ``Authorization: Bearer <token>`` when the app has a token (no header: 401,
a wrong one: 403, and nothing changes). With no token, ``conveyor dashboard`` binds to loopback
only. The OpenAPI spec is at ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse, ServerSentEvent

import conveyor
from conveyor import operations
from conveyor.errors import (
    ConveyorError,
    InvalidJob,
    QueueClosed,
    QueueFull,
    StorageError,
    UnknownJob,
)
from conveyor.job import TERMINAL, Status
from conveyor.web import models
from conveyor.web.dashboard import mount_dashboard
from conveyor.web.feed import Feed
from conveyor.web.metrics import registry_for

if TYPE_CHECKING:
    from conveyor.queue import Queue

#: seconds between the comments that keep an idle event stream open through proxies
HEARTBEAT = 15.0
#: the most jobs one page holds
MAX_LIMIT = 1000

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": models.ErrorBody, "description": "No such job (or task)."},
    422: {"description": "Invalid input; nothing changed."},
    503: {"model": models.ErrorBody, "description": "The queue is full, closed, or failing."},
}
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": models.ErrorBody, "description": "No bearer token."},
    403: {"model": models.ErrorBody, "description": "Wrong bearer token."},
}


#: how a request shows its token
BEARER = HTTPBearer(auto_error=False, description="The token `conveyor dashboard` was given.")


class TokenCheck:
    """The dependency of every route that changes state: the bearer token, when there is one
    (none: 401, a wrong one: 403), compared in constant time."""

    def __init__(self, token: str | None) -> None:
        self.token = None if token is None else token.encode()

    def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
    ) -> None:
        if self.token is None:
            return
        if credentials is None:
            raise HTTPException(
                401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        # a header's bytes come decoded as latin-1: compare them with the token's UTF-8
        if not hmac.compare_digest(credentials.credentials.encode("latin-1"), self.token):
            raise HTTPException(403, "wrong bearer token")


def create_app(queue: Queue, *, token: str | None = None, heartbeat: float = HEARTBEAT) -> FastAPI:
    """The HTTP API (and ``/metrics``) of ``queue``; POSTs need ``token`` when one is given."""
    feed = Feed(queue.backend)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(feed.close)

    app = FastAPI(
        title="conveyor",
        version=conveyor.__version__,
        description="The HTTP API of a conveyor queue. POST requests need a bearer token.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN: not served
        redoc_url=None,
    )
    app.state.queue = queue
    app.state.feed = feed
    _errors(app)
    changes = [Depends(TokenCheck(token))]

    # ------------------------------------------------------------------ jobs
    @app.post(
        "/api/jobs",
        status_code=201,
        response_model=models.Submitted,
        dependencies=changes,
        responses={**ERRORS, **AUTH_ERRORS},
        tags=["jobs"],
    )
    def submit(body: models.SubmitJob) -> models.Submitted:
        """Put a job calling a task registered with the queue (by name, or by import path
        ``module:function`` of a module the queue allows), with JSON arguments and put options.
        Nothing else is imported. A queue at its ``max_size`` answers 503 (it does not wait)."""
        options = body.model_dump(exclude={"task", "args", "kwargs", "id"}, exclude_none=True)
        job = operations.submit(
            queue, body.task, body.args, body.kwargs, job_id=body.id, trusted=False, block=False,
            **options,
        )  # fmt: skip
        return models.Submitted(id=job.id, status=job.status)

    @app.get("/api/jobs", response_model=models.JobPage, responses=ERRORS, tags=["jobs"])
    def jobs(
        status: Status | None = None,
        task: Annotated[str | None, Query(min_length=1)] = None,
        limit: Annotated[int, Query(ge=0, le=MAX_LIMIT)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """The jobs (of a status, of a task), newest submitted first, ``limit`` from
        ``offset`` (limit 0: all from offset, at most the page's cap)."""
        page = operations.list_jobs(
            queue, status, task=task, limit=limit or MAX_LIMIT, offset=offset
        )
        return {
            "jobs": [models.plain(operations.record_json(r)) for r in page.jobs],
            "total": page.total,
            "limit": page.limit,
            "offset": page.offset,
        }

    @app.get(
        "/api/jobs/{job_id}",
        response_model=models.JobRecordModel,
        responses=ERRORS,
        tags=["jobs"],
    )
    def job(job_id: str) -> dict[str, Any]:
        """Everything known about one job."""
        record = queue.job(job_id)
        data: dict[str, Any] = models.plain(operations.record_json(record))
        return data

    @app.get(
        "/api/jobs/{job_id}/result",
        response_model=models.JobResult,
        responses={**ERRORS, 409: {"model": models.ErrorBody, "description": "Not ended yet."}},
        tags=["jobs"],
    )
    def result(job_id: str) -> models.JobResult:
        """An ended job's result, or its error and traceback (409 while it has not ended)."""
        record = queue.job(job_id)
        if record.status not in TERMINAL:
            raise HTTPException(409, f"job {job_id!r} has not ended (it is {record.status})")
        return models.JobResult(
            status=record.status,
            result=models.plain(record.result) if record.status is Status.FINISHED else None,
            error=record.error,
            traceback=record.traceback,
        )

    @app.post(
        "/api/jobs/{job_id}/cancel",
        response_model=models.Cancelled,
        dependencies=changes,
        responses={**ERRORS, **AUTH_ERRORS},
        tags=["jobs"],
    )
    def cancel(job_id: str) -> models.Cancelled:
        """Cancel a job, stopping it if it runs; ``cancelled`` is False if it had ended."""
        return models.Cancelled(cancelled=operations.cancel(queue, job_id))

    @app.post(
        "/api/jobs/{job_id}/retry",
        response_model=models.Submitted,
        dependencies=changes,
        responses={**ERRORS, **AUTH_ERRORS},
        tags=["jobs"],
    )
    def retry(job_id: str) -> models.Submitted:
        """Put a failed or cancelled job back to waiting (422 if it cannot be retried)."""
        handle = operations.retry(queue, job_id)
        return models.Submitted(id=handle.id, status=handle.status)

    @app.post(
        "/api/purge",
        response_model=models.Purged,
        dependencies=changes,
        responses={**ERRORS, **AUTH_ERRORS},
        tags=["queue"],
    )
    def purge(
        body: Annotated[models.PurgeRequest | None, Body()] = None,
    ) -> models.Purged:
        """Drop jobs and their results (default: the ended ones); never running ones."""
        body = body or models.PurgeRequest()
        purged = operations.purge(queue, body.statuses, task=body.task, older_than=body.older_than)
        return models.Purged(purged=purged)

    # ------------------------------------------------------------------ queue
    @app.get("/api/counts", response_model=models.Counts, tags=["queue"])
    def counts() -> dict[str, int]:
        """How many jobs are in each status."""
        return operations.counts(queue)

    @app.get("/api/workers", response_model=list[models.WorkerModel], tags=["queue"])
    def workers() -> list[dict[str, Any]]:
        """The queue's workers, alive and lost."""
        found = operations.workers(queue)
        lost = operations.lost_workers(queue, found)
        return [operations.worker_json(w, lost) for w in found]

    @app.get(
        "/api/events",
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "Events."}},
        tags=["queue"],
    )
    async def events(request: Request) -> EventSourceResponse:
        """Server-sent events, from the moment of the request: ``event: <name>`` (queued,
        started, finished, failed, retrying, cancelled, progress) and ``data: <record JSON>``;
        a comment every so often keeps the stream open."""
        loop = asyncio.get_running_loop()
        subscriber = await asyncio.to_thread(feed.subscribe, loop)

        async def stream() -> AsyncIterator[ServerSentEvent]:
            try:
                yield ServerSentEvent(comment="subscribed")
                while True:
                    item = await subscriber.get()
                    if item is None:
                        return
                    name, record = item
                    data = models.plain(operations.record_json(record))
                    yield ServerSentEvent(data=json.dumps(data), event=name)
            finally:
                feed.unsubscribe(subscriber)

        return EventSourceResponse(stream(), ping=heartbeat)

    # ------------------------------------------------------------------ metrics
    registry = registry_for(queue)

    @app.get("/metrics", response_class=Response, tags=["queue"])
    def metrics() -> Response:
        """The queue's metrics in Prometheus's text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ dashboard
    # The dashboard page (conveyor/web/dashboard.py) mounts here:
    mount_dashboard(app, queue)
    return app


def _errors(app: FastAPI) -> None:
    """conveyor's errors as HTTP statuses, with the error's message as ``detail``."""

    def handler(status: int) -> Any:
        async def handle(_request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc) or type(exc).__name__}, status_code=status)

        return handle

    app.add_exception_handler(UnknownJob, handler(404))
    app.add_exception_handler(operations.UnknownTask, handler(404))
    app.add_exception_handler(InvalidJob, handler(422))
    app.add_exception_handler(QueueFull, handler(503))
    app.add_exception_handler(QueueClosed, handler(503))
    app.add_exception_handler(StorageError, handler(503))
    app.add_exception_handler(ConveyorError, handler(400))
