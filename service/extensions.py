"""The per-app services — settings, database, Celery — made in the factory and reached by views with ``services()``.

They live apart from ``service/app.py`` (flaskr's ``db.py`` pattern) so the blueprints can import them at the top
while the factory imports the blueprints: no import cycle, no imports inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import Flask, current_app

from core.db import Database
from core.job_watch import VersionWatch
from core.queue import make_celery
from core.settings import Settings
from service.job_bodies import JobBodies

KEY = "trainer"


@dataclass
class Services:
    settings: Settings
    db: Database
    celery: Celery
    #: What ``GET /v1/jobs/{id}?wait=`` requests wait on: one reader thread per process.
    watch: VersionWatch
    #: The job's JSON per version, shared by the requests that ask for it (held requests wake together).
    job_bodies: JobBodies


def init_app(app: Flask, settings: Settings) -> Services:
    """One database engine and one Celery app per Flask app: tests build several apps over different settings."""
    db = Database(settings)
    watch = VersionWatch(db, settings.wait_poll_interval_s)
    made = app.extensions[KEY] = Services(settings, db, make_celery(settings), watch, JobBodies())
    return made


def services(app: Flask | None = None) -> Services:
    """The services of ``app``, or of the app handling the current request."""
    return (app or current_app).extensions[KEY]
