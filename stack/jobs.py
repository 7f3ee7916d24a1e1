"""Waiting on a job: the SDK's ``Job.wait`` (conditional GETs with the job's ETag) for a caller that holds
a plain httpx client, so tests, benchmarks and the CLI all poll one way."""

from __future__ import annotations

import json
from collections.abc import Iterable

import httpx
from trainer_client import Client
from trainer_client.sdk import TERMINAL


def wait_for(
    http: httpx.Client, job_id: str, statuses: Iterable[str] = TERMINAL, timeout: float | None = 120, poll: float = 0.2
) -> dict:
    """The job's JSON once its status is one of ``statuses`` or it has ended, whichever comes first.

    Sends the same bearer token ``http`` sends; raises TimeoutError (with the job as last seen) after ``timeout``
    seconds (None: never)."""
    token = http.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    with Client(str(http.base_url), token=token) as client:
        job = client.job(job_id, fetch=False)
        try:
            return job.wait(poll=poll, timeout=timeout, until=statuses).data
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: {json.dumps(job.data)[:2000]}") from None
