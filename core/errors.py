"""Errors a client can act on. The API maps each to application/problem+json by its ``status``."""
from __future__ import annotations


class TrainerError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str, *, errors: list[dict] | None = None, headers: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class BadRequest(TrainerError):
    status, title = 400, "Bad request"


class Unauthorized(TrainerError):
    status, title = 401, "Unauthorized"


class TooManyRequests(TrainerError):
    status, title = 429, "Too many requests"


class NotFound(TrainerError):
    status, title = 404, "Not found"


class Conflict(TrainerError):
    status, title = 409, "Conflict"


class PayloadTooLarge(TrainerError):
    status, title = 413, "Payload too large"


class UnsupportedMediaType(TrainerError):
    status, title = 415, "Unsupported media type"


class IdempotencyMismatch(TrainerError):
    status, title = 422, "Idempotency key reused"


class RecipeError(TrainerError):
    """The recipe is valid JSON of the right shape but cannot be trained as asked."""

    status, title = 422, "Invalid recipe"

    def __init__(self, loc: list, msg: str):
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}", errors=[{"loc": list(loc), "msg": msg}])


class DatasetError(TrainerError):
    status, title = 422, "Invalid dataset"


class Unavailable(TrainerError):
    status, title = 503, "Service unavailable"
