"""A small Python SDK for the training service, over HTTP only.

It deliberately imports nothing from ``core``, ``service`` or ``worker``: a client machine needs
httpx, not TensorFlow or the database drivers, and the HTTP API is the only contract it relies on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
#: A job's statuses, in the order it can pass through them (the API's JobStatus; this package imports no server code).
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset(STATUSES[2:])
MAX_PAGE = 200  # the API's own upper bound for ?limit=
MAX_HOLD_S = 30  # the API's own upper bound for ?wait=
USER_AGENT = "trainer-client/0.1"


class TrainerClientError(Exception):
    """An RFC 9457 problem from the API (or a failure on this side of it, with ``status`` None).

    The fields are kept as the server sent them so a caller can branch on ``status`` and show
    ``detail``, which is the sentence the API wrote for humans. (Named apart from the server's own
    ``core.errors.TrainerError``, which this package never imports; ``TrainerError`` is a deprecated alias.)
    """

    def __init__(self, status: int | None, title: str, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(f"{status} {title}: {detail}" if status else f"{title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []

    @classmethod
    def from_response(cls, response: httpx.Response) -> TrainerClientError:
        """Read a problem+json body; fall back to the status line for anything else (a proxy's HTML page)."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = response.text.strip()[:500]
            return cls(response.status_code, response.reason_phrase, text or response.reason_phrase)
        return cls(
            body.get("status", response.status_code),
            body.get("title", response.reason_phrase),
            body.get("detail", ""),
            body.get("errors"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "title": self.title, "detail": self.detail, "errors": self.errors}


class ChecksumMismatch(TrainerClientError):
    """The bytes on disk do not hash to what the server said: the download must not be trusted."""

    def __init__(self, expected: str, actual: str):
        super().__init__(None, "Checksum mismatch", f"expected sha256 {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class WaitTimeout(TrainerClientError, TimeoutError):
    """``Job.wait`` gave up after its ``timeout``; the job goes on on the server. Also a builtin TimeoutError."""

    def __init__(self, job_id: str, status: str | None, timeout: float):
        super().__init__(None, "Timed out", f"job {job_id} is still {status} after {timeout} s")
        self.args = (self.detail,)  # str() is the sentence alone
        self.job_id, self.job_status, self.timeout = job_id, status, timeout


def __getattr__(name: str) -> type[TrainerClientError]:
    """``TrainerError``, the old name of ``TrainerClientError``, still imports, with a DeprecationWarning."""
    if name == "TrainerError":
        warnings.warn("trainer_client.TrainerError is deprecated: use TrainerClientError", DeprecationWarning, stacklevel=2)
        return TrainerClientError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def verify_sha256(actual: str, expected: str) -> None:
    """Raise ChecksumMismatch unless the two hex digests are equal (case-insensitive, constant time)."""
    if not hmac.compare_digest(actual.lower(), expected.strip().lower()):
        raise ChecksumMismatch(expected, actual)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks so large models do not need to fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Download:
    """Where a model was written, its verified sha256 and its size in bytes."""

    path: Path
    sha256: str
    size: int


class Client:
    """Talks to one training service. Defaults come from TRAINER_URL and TRAINER_TOKEN.

    Extra keyword arguments go to ``httpx.Client`` (``verify=`` for a private CA, ``event_hooks=``
    to observe requests), so the SDK needs no option of its own for each transport concern.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0, **httpx_options: Any):
        self.url = str(url or os.environ.get("TRAINER_URL") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("TRAINER_TOKEN")
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json, application/problem+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, **httpx_options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the resources -------------------------------------------------------------------------------

    def submit(self, recipe: dict[str, Any] | str | os.PathLike[str], idempotency_key: str | None = None) -> Job:
        """Send a recipe (a dict, or the path of a JSON file sent as is, so the server judges it).

        With ``idempotency_key``, retrying after a lost response returns the same job instead of a second one.
        """
        if isinstance(recipe, dict):
            content = json.dumps(recipe).encode()
        else:
            content = Path(recipe).read_bytes()
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        response = self.request("POST", "/v1/jobs", content=content, headers=headers)
        return Job(self, response.json(), etag=response.headers.get("ETag"))

    def job(self, job_id: str, *, fetch: bool = True) -> Job:
        """The job as it is now; ``fetch=False`` gives a handle with only its id, for calls that need no
        more (cancel, history, download) — one request fewer, and the server still says 404 if it is unknown."""
        if not fetch:
            return Job(self, {"id": job_id})
        response = self.request("GET", f"/v1/jobs/{job_id}")
        return Job(self, response.json(), etag=response.headers.get("ETag"))

    def jobs(self, status: str | None = None, limit: int = 20, *, page_size: int = MAX_PAGE) -> list[Job]:
        """Newest first, following ``next_cursor`` until ``limit`` jobs (listings carry no history)."""
        return [Job(self, item) for item in self._pages(status, limit, page_size)]

    def upload_model(
        self, path: str | os.PathLike[str], *, wait: bool = True, poll: float = 0.5, timeout: float | None = 300
    ) -> dict[str, Any]:
        """Upload a ``.keras`` or ``.h5`` file (POST /v1/models); with ``wait``, return once its inspection has
        ended — status ``ready``, or ``rejected`` with the reason (a TrainerClientError then)."""
        path = Path(path)
        with open(path, "rb") as fh:
            model: dict[str, Any] = self.request("POST", "/v1/models", files={"file": (path.name, fh)}).json()
        started = time.monotonic()
        while wait and model.get("status") == "inspecting":
            if timeout is not None and time.monotonic() >= started + timeout:
                raise TrainerClientError(None, "Timed out", f"model {model['id']} is still being inspected")
            time.sleep(poll)
            model = self.request("GET", f"/v1/models/{model['id']}").json()
        if model.get("status") == "rejected":
            raise TrainerClientError(None, "Model rejected", f"{path.name}: {model.get('reason')}")
        return model

    def create_experiment(self, spec: dict[str, Any]) -> Experiment:
        """Variants (or a sweep) × seeds as child jobs; see POST /v1/experiments."""
        return Experiment(self, self.request("POST", "/v1/experiments", json=spec).json())

    def experiment(self, experiment_id: str) -> Experiment:
        return Experiment(self, self.request("GET", f"/v1/experiments/{experiment_id}").json())

    def _pages(self, status: str | None, limit: int, page_size: int) -> Iterator[dict[str, Any]]:
        cursor = None
        remaining = limit
        while remaining > 0:
            params = {"limit": min(remaining, page_size, MAX_PAGE), "status": status, "cursor": cursor}
            body = self.request("GET", "/v1/jobs", params={k: v for k, v in params.items() if v is not None}).json()
            items = body["items"][:remaining]
            yield from items
            remaining -= len(items)
            cursor = body.get("next_cursor")
            if not cursor or not items:
                return

    # -- transport -----------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; a status >= 400 becomes a TrainerClientError, a transport failure too (status None)."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise TrainerClientError.from_response(response)
        return response

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response whose errors are read in full first, so their problem body is not lost."""
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise TrainerClientError.from_response(response)
                yield response
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> TrainerClientError:
        return TrainerClientError(None, "Connection failed", f"{self.url}: {str(exc) or type(exc).__name__}")


class Job:
    """A job as last seen by this client; ``data`` is the server's JSON, untouched."""

    def __init__(self, client: Client, data: dict[str, Any], etag: str | None = None):
        self.client = client
        self.data = data
        self.etag = etag

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.status}>"

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def name(self) -> str | None:
        return self.data.get("name")

    @property
    def status(self) -> str | None:
        return self.data.get("status")  # None on a handle made with fetch=False, until refresh()

    @property
    def progress(self) -> dict[str, Any]:
        return self.data.get("progress") or {}

    @property
    def result(self) -> dict[str, Any] | None:
        return self.data.get("result")

    @property
    def error(self) -> dict[str, Any] | None:
        return self.data.get("error")

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def refresh(self) -> Job:
        """Re-read the job; with an ETag in hand the server answers 304 when nothing changed."""
        self._poll()
        return self

    def _poll(self, hold_s: int = 0) -> bool:
        """True if the job changed since the last read. With ``hold_s`` (and an ETag) the server holds the request
        until the job changes or ``hold_s`` seconds pass (``?wait=``)."""
        headers = {"If-None-Match": self.etag} if self.etag else {}
        extra: dict[str, Any] = {}
        if hold_s and self.etag:
            extra = {"params": {"wait": hold_s}, "timeout": hold_s + 30.0}
        response = self.client.request("GET", f"/v1/jobs/{self.id}", headers=headers, **extra)
        if response.status_code == 304:
            return False
        self.data = response.json()
        self.etag = response.headers.get("ETag")
        return True

    def wait(
        self,
        poll: float = 0.5,
        timeout: float | None = None,
        on_update: Callable[[Job], Any] | None = None,
        until: Iterable[str] = TERMINAL,
        hold_s: int = 25,
    ) -> Job:
        """Poll until the job succeeds, fails or is cancelled; ``on_update(job)`` runs once per change.

        Each request asks the server to hold it until the job changes, up to ``hold_s`` seconds (``?wait=``; 0:
        plain polling), so a change is seen the moment it is recorded, with one request per change. ``poll`` is
        the least time between two requests that found nothing new (what a server that does not hold them costs).

        ``until`` names other statuses to stop at as well (``{"running"}``: until it has started); a job that
        has ended never changes again, so it is returned whatever ``until`` says. Raises WaitTimeout (a
        TimeoutError) after ``timeout`` seconds; the job itself keeps running on the server.
        """
        started = time.monotonic()
        stop_at = TERMINAL | frozenset(until)
        self._poll()
        changed = True  # the caller has not seen this state yet, even if the server says 304
        while True:
            if changed and on_update is not None:
                on_update(self)
            if self.status in stop_at:
                return self
            now = time.monotonic()
            if timeout is not None and now >= started + timeout:
                raise WaitTimeout(self.id, self.status, timeout)
            hold = min(hold_s, MAX_HOLD_S)
            if hold and timeout is not None:
                hold = max(1, min(hold, math.ceil(started + timeout - now)))
            changed = self._poll(hold)
            quick = time.monotonic() - now
            if not changed and quick < poll:
                time.sleep(poll - quick)

    def cancel(self) -> Job:
        """Queued: cancelled at once. Running: the server stops it at the next batch. Finished: 409."""
        response = self.client.request("POST", f"/v1/jobs/{self.id}/cancel")
        self.data = response.json()
        self.etag = response.headers.get("ETag")
        return self

    def history(self) -> list[dict[str, Any]]:
        """The per-epoch metrics, read from the history endpoint (listings do not carry them)."""
        rows: list[dict[str, Any]] = self.client.request("GET", f"/v1/jobs/{self.id}/history").json()["history"]
        return rows

    def history_csv(self) -> str:
        """The same rows as the server's CSV, byte for byte."""
        return self.client.request("GET", f"/v1/jobs/{self.id}/history", params={"format": "csv"}).text

    def download(
        self,
        path: str | os.PathLike[str] | None = None,
        format: str = "h5",
        progress: Callable[[int, int | None], Any] | None = None,
        expected_sha256: str | None = None,
    ) -> Download:
        """Stream the model to ``path`` and verify its sha256 before it takes that name.

        ``path`` None or a directory means the server's filename there. The bytes go to a hidden
        ``.part`` file first, so a failed or tampered download never leaves a plausible model behind.
        ``expected_sha256`` pins a digest you got elsewhere; by default the X-Checksum-Sha256 header is
        the reference. ``progress(done_bytes, total_bytes)`` is called after each chunk.
        """
        with self.client.stream("GET", f"/v1/jobs/{self.id}/model", params={"format": format}) as response:
            expected = expected_sha256 or response.headers.get("X-Checksum-Sha256")
            if not expected:
                raise TrainerClientError(
                    None, "No checksum", "the server sent no X-Checksum-Sha256; refusing to trust the file"
                )
            target = _target_path(path, response.headers.get("Content-Disposition"), f"{self.id}-model.{format}")
            total = int(response.headers["Content-Length"]) if "Content-Length" in response.headers else None
            return _save_verified(response.iter_bytes(), target, expected, total, progress)


def base_model_recipe(model_id: str, dataset: str, epochs: int = 2, learning_rate: float = 1e-4) -> dict[str, Any]:
    """A recipe that fine-tunes an uploaded model whole while TF-MOT prunes it (TF-MOT's "prune a pre-trained
    model": a few epochs at a low rate), exporting Keras and a sparse int8 TFLite file. The pruning target is a
    placeholder a sweep replaces."""
    return {
        "name": f"prune-{model_id[:8]}",
        "dataset": {"name": dataset},
        "transfer": {"base_model_id": model_id, "reuse": "all"},
        "training": {"epochs": epochs, "optimizer": {"type": "adam", "learning_rate": learning_rate}},
        "pruning": {"schedule": {"type": "polynomial_decay", "final_sparsity": 0.5, "frequency": 10}},
        "export": {"formats": ["keras", "tflite"], "tflite_options": {"sparsity": True, "dynamic_range_int8": True}},
    }


def sparsity_sweep(base: dict[str, Any], sparsities: list[float], repeats: int = 1) -> dict[str, Any]:
    """The experiment spec sweeping ``base``'s pruning target (a polynomial schedule's final_sparsity, a constant
    one's target_sparsity; a recipe that does not prune gets a polynomial schedule)."""
    base = json.loads(json.dumps(base))  # a copy: the caller's recipe stays as it was
    schedule = (base.setdefault("pruning", {}) or {}).get("schedule")
    if schedule is None:
        base["pruning"] = {"schedule": {"type": "polynomial_decay", "final_sparsity": sparsities[0], "frequency": 10}}
        schedule = base["pruning"]["schedule"]
    field = "target_sparsity" if schedule.get("type") == "constant_sparsity" else "final_sparsity"
    return {
        "name": f"sweep-{base.get('name', 'recipe')}"[:200],
        "base": base,
        "sweep": {f"pruning.schedule.{field}": list(sparsities)},
        "repeats": repeats,
    }


class Experiment:
    """An experiment as last seen by this client; ``data`` is the server's JSON (its ``comparison`` is the table)."""

    def __init__(self, client: Client, data: dict[str, Any]):
        self.client = client
        self.data = data

    def __repr__(self) -> str:
        return f"<Experiment {self.id} {self.finished}/{self.jobs}>"

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def jobs(self) -> int:
        return int(self.data["jobs"])

    @property
    def finished(self) -> int:
        return int(self.data["finished"])

    @property
    def done(self) -> bool:
        return self.finished >= self.jobs

    @property
    def comparison(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.data["comparison"]
        return rows

    def refresh(self) -> Experiment:
        self.data = self.client.request("GET", f"/v1/experiments/{self.id}").json()
        return self

    def wait(
        self, poll: float = 1.0, timeout: float | None = None, on_update: Callable[[Experiment], Any] | None = None
    ) -> Experiment:
        """Poll until every child job has ended; ``on_update(experiment)`` after each poll. Raises WaitTimeout."""
        started = time.monotonic()
        while True:
            self.refresh()
            if on_update is not None:
                on_update(self)
            if self.done:
                return self
            if timeout is not None and time.monotonic() >= started + timeout:
                raise WaitTimeout(self.id, f"{self.finished}/{self.jobs} done", timeout)
            time.sleep(poll)

    def plot(self, name: str = "tradeoff") -> bytes:
        """A PNG of the experiment: ``compare`` or, for a sweep, ``tradeoff``."""
        return self.client.request("GET", f"/v1/experiments/{self.id}/plots/{name}.png").content


def _target_path(path: str | os.PathLike[str] | None, disposition: str | None, fallback: str) -> Path:
    """The file to write: the caller's, or the server's filename (its base name only) in a directory."""
    if path is not None and not Path(path).is_dir():
        return Path(path)
    match = re.search(r'filename="?([^";]+)"?', disposition or "")
    name = Path(match.group(1)).name if match else fallback
    return Path(path or ".") / (name or fallback)


def _save_verified(
    chunks: Iterable[bytes],
    target: Path,
    expected: str,
    total: int | None,
    progress: Callable[[int, int | None], Any] | None,
) -> Download:
    """Write and hash in one pass; rename into place only when the digest matches."""
    partial = target.with_name(f".{target.name}.part")
    digest = hashlib.sha256()
    done = 0
    try:
        with open(partial, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        verify_sha256(digest.hexdigest(), expected)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return Download(target, digest.hexdigest(), done)
