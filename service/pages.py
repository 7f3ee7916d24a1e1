"""The job pages, server-rendered: the list at ``/`` and one job at ``/jobs/<id>``. No front-end build.

The HTML carries no data; its small script reads the JSON API with the user's token (kept in the
browser's localStorage when the server requires one), so the pages show exactly what the API shows.
"""

from __future__ import annotations

from flask import Blueprint, render_template

from service.extensions import services

pages = Blueprint("pages", __name__, template_folder="templates")


@pages.get("/")
def job_list():
    return render_template("jobs.html", needs_token=not services().settings.single_user)


@pages.get("/jobs/<job_id>")
def job_page(job_id: str):
    return render_template("job.html", job_id=job_id, needs_token=not services().settings.single_user)
