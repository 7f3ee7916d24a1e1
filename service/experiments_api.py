"""/v1/experiments: a base recipe, variants and seeds as child jobs, and the comparison table."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from core import experiments
from core.errors import NotFound
from core.queue import dispatch
from service.auth import current_owner
from service.extensions import services
from service.problems import COMMON_RESPONSES
from service.representation import Cancelled, Experiment, documented, experiment_body, png

api = APIBlueprint(
    "experiments",
    __name__,
    url_prefix="/v1/experiments",
    abp_tags=[Tag(name="experiments")],
    abp_security=[{"bearer": []}],
    abp_responses=COMMON_RESPONSES,
)


class ExperimentPath(BaseModel):
    experiment_id: str = Field(pattern=r"^[0-9a-f]{32}$")


def _body(session, experiment, children) -> dict:
    return experiment_body(experiment, children, experiments.comparison(session, experiment, children))


@api.post("", responses={202: documented("The experiment with its queued child jobs", Experiment)})
def create_experiment(body: experiments.ExperimentSpec):
    """One child job per variant × seed, queued like any job."""
    svc = services()
    with svc.db.session() as session:
        experiment, children = experiments.create(session, body, current_owner(), svc.settings)
        ids = [job.id for job in children]
    for job_id in ids:
        dispatch(svc.celery, job_id)
    with svc.db.session() as session:
        experiment, children = experiments.get(session, experiment.id, current_owner())
        out = _body(session, experiment, children)
    return out, 202, {"Location": f"/v1/experiments/{experiment.id}"}


@api.get("/<experiment_id>", responses={200: documented("The comparison table, per variant", Experiment)})
def get_experiment(path: ExperimentPath):
    """Per variant: mean ± spread over seeds of test accuracy, best val accuracy, epochs to the target,
    wall time, sparsity and gzipped size; for a sweep also the target sparsity, TFLite size and latency, and an
    uploaded base model's dense accuracy."""
    svc = services()
    with svc.db.session() as session:
        experiment, children = experiments.get(session, path.experiment_id, current_owner())
        return _body(session, experiment, children)


@api.post("/<experiment_id>/cancel", responses={202: documented("How many child jobs were cancelled", Cancelled)})
def cancel_experiment(path: ExperimentPath):
    svc = services()
    with svc.db.session() as session:
        count = experiments.cancel(session, path.experiment_id, current_owner())
    return Cancelled(cancelled=count).model_dump(mode="json"), 202


@api.delete("/<experiment_id>", responses={204: None})
def delete_experiment(path: ExperimentPath):
    svc = services()
    with svc.db.session() as session:
        experiments.remove(session, path.experiment_id, current_owner())
    return Response(status=204)


@api.get(
    "/<experiment_id>/plots/compare.png",
    responses={
        200: documented("Validation accuracy per variant", media="image/png", schema={"type": "string", "format": "binary"})
    },
)
def compare_plot(path: ExperimentPath):
    """Drawn by the worker that finishes the experiment's last job."""
    svc = services()
    with svc.db.session() as session:
        experiments.get(session, path.experiment_id, current_owner())
        artifact = experiments.plot_artifact(session, path.experiment_id)
    if artifact is None:
        raise NotFound("the comparison plot is drawn when every job of the experiment has ended")
    return png(svc.db, artifact)


@api.get(
    "/<experiment_id>/plots/tradeoff.png",
    responses={
        200: documented(
            "A sweep: test accuracy and gzipped size against the sparsity reached, the dense base as a line",
            media="image/png",
            schema={"type": "string", "format": "binary"},
        )
    },
)
def tradeoff_plot(path: ExperimentPath):
    """Drawn, for a sweep, by the worker that finishes its last job."""
    svc = services()
    with svc.db.session() as session:
        experiment, _ = experiments.get(session, path.experiment_id, current_owner())
        if not experiment.spec.get("sweep"):
            raise NotFound("only a sweep has a tradeoff plot")
        artifact = experiments.plot_artifact(session, path.experiment_id, "tradeoff")
    if artifact is None:
        raise NotFound("the tradeoff plot is drawn when every job of the sweep has ended")
    return png(svc.db, artifact)
