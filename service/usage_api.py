"""/v1/usage: what you store against your quota (datasets, models, checkpoints)."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint, Tag

from core import storage
from service.auth import current_owner
from service.extensions import services
from service.problems import COMMON_RESPONSES
from service.representation import documented

api = APIBlueprint(
    "usage",
    __name__,
    url_prefix="/v1/usage",
    abp_tags=[Tag(name="usage")],
    abp_security=[{"bearer": []}],
    abp_responses=COMMON_RESPONSES,
)


@api.get("", responses={200: documented("What you store, by kind, and your quota", storage.StorageUsage)})
def get_usage():
    """Bytes stored for you, by kind, and the limit (TRAINER_MAX_STORED_BYTES_PER_OWNER). An upload that would
    go over it is a 413; so is a new job once you are at or over it."""
    svc = services()
    with svc.db.session() as session:
        return storage.usage(session, current_owner(), svc.settings).model_dump(mode="json")
