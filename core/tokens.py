"""API tokens: who is asking, until when, and how to take a token back.

    python -m core.tokens create OWNER [--label L] [--expires-in DAYS | --expires 2027-01-31]
    python -m core.tokens list [--quiet]
    python -m core.tokens revoke ID          # the id ``list`` shows, a unique prefix of it, or the token itself

Tokens come from ``TRAINER_API_TOKENS`` (``token:owner,…``) or the database, where only their sha256 is
kept. Comparison is by digest, so a token's length or prefix leaks nothing; a token's id is the start of
its digest, which names it in ``list`` and ``revoke`` without revealing it. Revocation and expiry are read
from the row on every request: nothing caches a token beyond the request that presents it.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import hmac
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core.errors import Unauthorized
from core.models import ApiToken, utcnow
from core.settings import Settings

OWNER_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
ID_LENGTH = 12
#: ``revoke`` wants at least this much of an id, so a typo cannot match a token by chance.
MIN_PREFIX = 6
#: ``last_used_at`` is written at most this often per token: a poll loop must not turn reads into writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Caller:
    owner: str
    #: The token's sha256: the key of its rate-limit window (not the secret; the secret is never kept).
    token_sha256: str


@dataclass(frozen=True)
class TokenInfo:
    """What ``list`` shows of a token: never the token."""

    id: str
    owner: str
    source: str  # "db" or "env"
    label: str = ""
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "live"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def env_tokens(settings: Settings) -> dict[str, str]:
    """sha256 → owner, from TRAINER_API_TOKENS."""
    return dict(_parse_env_tokens(settings.api_tokens))


@functools.lru_cache(maxsize=8)
def _parse_env_tokens(value: str) -> tuple[tuple[str, str], ...]:
    out = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        token, _, owner = item.rpartition(":")
        if not token or not OWNER_PATTERN.match(owner):
            raise ValueError(f"TRAINER_API_TOKENS entries are token:owner; got {item[:4]}…")
        out[digest(token)] = owner
    return tuple(out.items())


def identify(session: Session, settings: Settings, token: str) -> Caller:
    """The caller a token stands for, or ``Unauthorized`` saying whether it is unknown, revoked or expired."""
    wanted = digest(token)
    for known, owner in env_tokens(settings).items():
        if hmac.compare_digest(known, wanted):
            return Caller(owner, wanted)
    row = session.get(ApiToken, wanted)
    if row is None:
        raise Unauthorized("that token is not valid")
    now = utcnow()
    if row.revoked_at is not None:
        raise Unauthorized(f"that token was revoked at {_iso(row.revoked_at)}")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized(f"that token expired at {_iso(row.expires_at)}")
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
    return Caller(row.owner, wanted)


def owner_for(session: Session, settings: Settings, token: str) -> str | None:
    try:
        return identify(session, settings, token).owner
    except Unauthorized:
        return None


def create(session: Session, owner: str, label: str = "", expires_at: datetime | None = None) -> str:
    if not OWNER_PATTERN.match(owner):
        raise ValueError("an owner is 1-64 letters, digits or _.@-")
    if expires_at is not None and expires_at <= utcnow():
        raise ValueError(f"the expiry {_iso(expires_at)} is already past")
    token = "tr_" + secrets.token_urlsafe(32)
    session.add(ApiToken(token_sha256=digest(token), owner=owner, label=label, expires_at=expires_at))
    return token


def list_tokens(session: Session, settings: Settings) -> list[TokenInfo]:
    """Environment tokens first (they cannot be revoked here), then the database's, oldest first."""
    out = [TokenInfo(id=sha[:ID_LENGTH], owner=owner, source="env") for sha, owner in env_tokens(settings).items()]
    for row in session.scalars(select(ApiToken).order_by(ApiToken.created_at)):
        out.append(_info(row))
    return out


def live_in_database(session: Session) -> int:
    """Tokens in the database that would be accepted now."""
    now = utcnow()
    live = ApiToken.revoked_at.is_(None), or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now)
    return session.scalar(select(func.count()).select_from(ApiToken).where(*live)) or 0


def revoke(session: Session, settings: Settings, ref: str) -> TokenInfo:
    """Revoke the token ``ref`` names: an id (or a unique prefix of it, at least ``MIN_PREFIX`` long), or the token."""
    ref = ref.strip()
    by_token, env = digest(ref), env_tokens(settings)
    named_by_id = len(ref) >= MIN_PREFIX and _is_hex(ref)
    if by_token in env or (named_by_id and any(sha.startswith(ref.lower()) for sha in env)):
        raise ValueError("that token comes from TRAINER_API_TOKENS: remove it there and restart the API")
    row = session.get(ApiToken, by_token)
    if row is None:
        if not named_by_id:
            raise ValueError(f"give a token id from `list` (at least {MIN_PREFIX} hex digits) or the token itself")
        rows = session.scalars(select(ApiToken).where(ApiToken.token_sha256.startswith(ref.lower()))).all()
        if not rows:
            raise ValueError(f"no token has an id starting {ref!r}")
        if len(rows) > 1:
            ids = ", ".join(r.token_sha256[:ID_LENGTH] for r in rows)
            raise ValueError(f"{ref!r} starts more than one token id ({ids}): give more of it")
        row = rows[0]
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return _info(row)


def _info(row: ApiToken) -> TokenInfo:
    """What ``list`` and ``revoke`` show of a database token: never its secret."""
    return TokenInfo(
        id=row.token_sha256[:ID_LENGTH],
        owner=row.owner,
        source="db",
        label=row.label,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def parse_expiry(expires: str | None, expires_in_days: float | None) -> datetime | None:
    """``--expires`` as an ISO date or time (UTC unless it says otherwise), or ``--expires-in`` days from now."""
    if expires_in_days is not None:
        if expires_in_days <= 0:
            raise ValueError("--expires-in is a number of days above 0")
        return utcnow() + timedelta(days=expires_in_days)
    if expires is None:
        return None
    try:
        when = datetime.fromisoformat(expires)
    except ValueError:
        raise ValueError(f"--expires {expires!r} is not an ISO date such as 2027-01-31 or 2027-01-31T12:00") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _is_hex(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F]+", text))


def _iso(when: datetime | None) -> str:
    return "-" if when is None else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _print_table(infos: list[TokenInfo]) -> None:
    now = utcnow()
    rows = [("ID", "OWNER", "SOURCE", "STATE", "CREATED", "EXPIRES", "REVOKED", "LAST USED", "LABEL")]
    rows += [
        (
            i.id,
            i.owner,
            i.source,
            i.state(now),
            _iso(i.created_at),
            _iso(i.expires_at),
            _iso(i.revoked_at),
            _iso(i.last_used_at),
            i.label,
        )
        for i in infos
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def main(argv: list[str] | None = None) -> None:
    from core.db import Database
    from core.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m core.tokens")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("create", help="create a token for OWNER and print it (it is not stored in clear)")
    make.add_argument("owner")
    make.add_argument("--label", default="")
    when = make.add_mutually_exclusive_group()
    when.add_argument("--expires-in", type=float, metavar="DAYS", help="refused DAYS days from now")
    when.add_argument("--expires", metavar="ISO", help="refused from this date or time (UTC unless it says)")
    show = sub.add_parser("list", help="every token: id, owner, state, dates (never the token)")
    show.add_argument("-q", "--quiet", action="store_true", help="only the ids of the tokens accepted now")
    take = sub.add_parser("revoke", help="refuse a token from now on (401 at its next request)")
    take.add_argument("id", help="an id from `list`, a unique prefix of it (6+), or the token itself")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except ValueError as exc:  # ConfigError: contradictory settings
        raise SystemExit(f"error: {exc}") from None
    db = Database(settings)
    try:
        with db.session() as session:
            if args.command == "create":
                expires_at = parse_expiry(args.expires, args.expires_in)
                token = create(session, args.owner, args.label, expires_at)
                print(token)
                print(
                    f"token {digest(token)[:ID_LENGTH]} for {args.owner}, expires {_iso(expires_at)}; "
                    "it is shown only this once",
                    file=sys.stderr,
                )
            elif args.command == "list":
                infos = list_tokens(session, settings)
                if args.quiet:
                    now = utcnow()
                    for info in infos:
                        if info.state(now) == "live":
                            print(info.id)
                else:
                    _print_table(infos)
            else:
                info = revoke(session, settings, args.id)
                print(f"token {info.id} of {info.owner} revoked at {_iso(info.revoked_at)}")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    finally:
        db.engine.dispose()


if __name__ == "__main__":
    main()
