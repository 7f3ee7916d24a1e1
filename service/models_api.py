"""/v1/models: Keras models you trained elsewhere, uploaded as ``.keras`` or ``.h5``, checked without running any
of their code (``core.model_inspect``), stored as sent (``core.model_store``) and inspected by a worker."""

from __future__ import annotations

from flask import Response, request, stream_with_context
from flask_openapi3 import APIBlueprint, FileStorage, Tag
from pydantic import BaseModel, Field

from core import model_store
from core.layers import NulFree
from core.model_inspect import ACTIVATIONS, ALLOWED_LAYERS, ALLOWED_OBJECTS
from core.queue import INSPECT_TASK, dispatch
from service.auth import current_owner
from service.extensions import services
from service.problems import COMMON_RESPONSES, NOT_MODIFIED
from service.representation import (
    UploadedModel,
    UploadedModelList,
    documented,
    uploaded_model_body,
    uploaded_model_list_body,
)

api = APIBlueprint(
    "models",
    __name__,
    url_prefix="/v1/models",
    abp_tags=[Tag(name="models")],
    abp_security=[{"bearer": []}],
    abp_responses=COMMON_RESPONSES,
)

UPLOAD_DESCRIPTION = (
    "A `.keras` file (`model.save('m.keras')`) or a legacy `.h5` (`model.save('m.h5')`), at most "
    "TRAINER_MAX_MODEL_BYTES (256 MiB by default; 413 beyond). No code in it ever runs: a `.keras` file's "
    "config is read from the zip (every size checked first) and refused with a 422 naming the layer and its "
    "class if it holds a `Lambda`, a custom class or object, or a layer outside this list; an `.h5` is checked "
    "the same way by the worker (reading its config needs h5py). Then a worker loads it (safe mode on) and "
    "measures it: `status` goes `inspecting` → `ready` (see `inspection`) or `rejected` (see `reason`).\n\n"
    f"Layers allowed: {', '.join(sorted(ALLOWED_LAYERS))}, and Sequential or functional models of them "
    "(nested up to 3 deep).\n\n"
    f"Activations allowed (by name): {', '.join(sorted(ACTIVATIONS))}.\n\n"
    f"Initializers, regularizers, constraints and dtype policies allowed: "
    f"{', '.join(sorted(n for n in ALLOWED_OBJECTS if not n.startswith('__')))}."
)


class UploadForm(NulFree):
    file: FileStorage = Field(description="A .keras or .h5 Keras model (Sequential or functional).")


class ModelPath(BaseModel):
    model_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="The id returned by POST /v1/models.")


@api.get("", responses={200: documented("Your uploaded models, oldest first", UploadedModelList)})
def list_models():
    """Your uploads with their status; a ready one with its inspection."""
    svc = services()
    with svc.db.session() as session:
        return uploaded_model_list_body(model_store.listing(session, current_owner()))


@api.post(
    "",
    responses={201: documented("Stored; being inspected (status inspecting)", UploadedModel)},
    description=UPLOAD_DESCRIPTION,
)
def upload_model(form: UploadForm):
    """Upload a Keras model: checked as data, stored as sent, inspected by a worker."""
    svc = services()
    model = model_store.store_upload(svc.db, current_owner(), svc.settings, form.file.stream, form.file.filename or "")
    dispatch(svc.celery, model.id, INSPECT_TASK)  # not sent: the reconciler sends it
    return uploaded_model_body(model), 201, {"Location": f"/v1/models/{model.id}"}


@api.get("/<model_id>", responses={200: documented("The model, its status and inspection", UploadedModel)})
def get_model(path: ModelPath):
    """Poll until `status` is `ready` or `rejected`."""
    svc = services()
    with svc.db.session() as session:
        return uploaded_model_body(model_store.get(session, path.model_id, current_owner()))


@api.get(
    "/<model_id>/file",
    responses={
        200: documented(
            "The file as uploaded", media="application/octet-stream", schema={"type": "string", "format": "binary"}
        ),
        304: NOT_MODIFIED,
    },
)
def download_model_file(path: ModelPath):
    """The exact bytes uploaded, each stored chunk checked against its sha256 as it is streamed."""
    svc = services()
    with svc.db.session() as session:
        model = model_store.get(session, path.model_id, current_owner())
    headers = {
        "Content-Length": str(model.size_bytes),
        "Content-Disposition": f'attachment; filename="{model.id}.{model.format}"',
        "ETag": f'"{model.sha256}"',
        "X-Checksum-Sha256": model.sha256,
    }
    if request.if_none_match.contains(model.sha256):
        return Response(status=304, headers={"ETag": headers["ETag"]})
    return Response(
        stream_with_context(model_store.stream(svc.db, model)), mimetype="application/octet-stream", headers=headers
    )


@api.delete("/<model_id>", responses={204: {"description": "Deleted, with its stored file"}})
def delete_model(path: ModelPath):
    """Frees its bytes of your quota (GET /v1/usage). 409 while a queued or running job starts from it."""
    svc = services()
    with svc.db.session() as session:
        model_store.delete_model(session, path.model_id, current_owner())
    return Response(status=204)
