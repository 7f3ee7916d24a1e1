"""API tokens: who is asking. ``python -m core.tokens create OWNER [--label L]`` prints a new token once.

Tokens come from ``TRAINER_API_TOKENS`` (``token:owner,…``) or the database, where only their sha256 is
kept. Comparison is by digest, so a token's length or prefix leaks nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import ApiToken
from core.settings import Settings

OWNER_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def env_tokens(settings: Settings) -> dict[str, str]:
    """sha256 → owner, from TRAINER_API_TOKENS."""
    out = {}
    for item in filter(None, (part.strip() for part in settings.api_tokens.split(","))):
        token, _, owner = item.rpartition(":")
        if not token or not OWNER_PATTERN.match(owner):
            raise ValueError(f"TRAINER_API_TOKENS entries are token:owner; got {item[:4]}…")
        out[digest(token)] = owner
    return out


def owner_for(session: Session, settings: Settings, token: str) -> str | None:
    wanted = digest(token)
    for known, owner in env_tokens(settings).items():
        if hmac.compare_digest(known, wanted):
            return owner
    return session.scalar(select(ApiToken.owner).where(ApiToken.token_sha256 == wanted))


def create(session: Session, owner: str, label: str = "") -> str:
    if not OWNER_PATTERN.match(owner):
        raise ValueError("an owner is 1-64 letters, digits or _.@-")
    token = "tr_" + secrets.token_urlsafe(32)
    session.add(ApiToken(token_sha256=digest(token), owner=owner, label=label))
    return token


def main() -> None:
    from core.db import Database
    from core.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m core.tokens")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("create", help="create a token for OWNER and print it (it is not stored in clear)")
    make.add_argument("owner")
    make.add_argument("--label", default="")
    args = parser.parse_args()
    db = Database(load_settings())
    with db.session() as session:
        token = create(session, args.owner, args.label)
    print(token)


if __name__ == "__main__":
    main()
