"""Token lifecycle and the safe defaults: list, revoke, expire, a per-token rate limit, no token shipped,
single-user mode refused over tokens and answering only its own Host names."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import delete, inspect, select, update

from core import tokens
from core.migrate import upgrade
from core.models import ApiToken, utcnow
from core.settings import ROOT, ConfigError, load_settings
from service.app import create_app
from stack.processes import free_port, start_gunicorn
from tests.support import worker_env


def cli(settings, *args) -> subprocess.CompletedProcess:
    """``python -m core.tokens …`` as an operator runs it, against the test's database."""
    env = worker_env(settings, TRAINER_API_TOKENS=settings.api_tokens)
    return subprocess.run(
        [sys.executable, "-m", "core.tokens", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def secured(backend):
    """An app that requires tokens on the session's database; its database tokens are deleted afterwards
    (a single-user app refuses to start over a database that holds live tokens)."""
    settings = replace(backend, single_user=False, api_tokens="env-secret:erin")
    app = create_app(settings)
    db = app.extensions["trainer"].db
    with db.session() as session:
        before = set(session.scalars(select(ApiToken.token_sha256)))
    yield settings, app, db
    with db.session() as session:
        session.execute(delete(ApiToken).where(ApiToken.token_sha256.not_in(before)))
    db.engine.dispose()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_the_cli_creates_lists_and_revokes_and_a_revoked_token_is_refused_at_its_next_request(secured):
    settings, app, _ = secured
    client = app.test_client()
    made = cli(settings, "create", "carol", "--label", "laptop", "--expires-in", "30")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("tr_") and len(made.stdout.splitlines()) == 1  # stdout is the token alone
    assert client.get("/v1/jobs", headers=bearer(token)).status_code == 200

    listed = cli(settings, "list")
    assert listed.returncode == 0, listed.stderr
    token_id = tokens.digest(token)[: tokens.ID_LENGTH]
    line = next(row for row in listed.stdout.splitlines() if row.startswith(token_id))
    assert "carol" in line and "live" in line and "laptop" in line and " db " in line
    assert token not in listed.stdout and "env-secret" not in listed.stdout  # never a secret
    assert any(" erin " in row and " env " in row for row in listed.stdout.splitlines())
    assert cli(settings, "list", "--quiet").stdout.split() == [tokens.digest("env-secret")[:12], token_id]

    revoked = cli(settings, "revoke", token_id[:8])
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
    response = client.get("/v1/jobs", headers=bearer(token))
    assert response.status_code == 401 and "revoked" in response.get_json()["detail"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "revoked" in next(r for r in cli(settings, "list").stdout.splitlines() if r.startswith(token_id))


def test_revoke_by_the_token_itself_and_the_errors_of_revoke(secured):
    settings, app, db = secured
    with db.session() as session:
        token = tokens.create(session, "dave")
    assert cli(settings, "revoke", token).returncode == 0
    assert app.test_client().get("/v1/jobs", headers=bearer(token)).status_code == 401
    for ref, says in (("env-secret", "TRAINER_API_TOKENS"), ("abc", "at least 6"), ("ffffffffffff", "no token has an id")):
        out = cli(settings, "revoke", ref)
        assert out.returncode != 0 and says in out.stderr, (ref, out.stderr)


def test_an_expired_token_is_401_and_an_expiry_must_be_in_the_future(secured):
    settings, app, db = secured
    with db.session() as session:
        token = tokens.create(session, "erik", expires_at=utcnow() + timedelta(days=1))
    client = app.test_client()
    assert client.get("/v1/jobs", headers=bearer(token)).status_code == 200
    with db.session() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.token_sha256 == tokens.digest(token))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    response = client.get("/v1/jobs", headers=bearer(token))
    assert response.status_code == 401 and "expired" in response.get_json()["detail"]
    past = cli(settings, "create", "erik", "--expires", "2001-01-01")
    assert past.returncode != 0 and "already past" in past.stderr
    dated = cli(settings, "create", "erik", "--expires", "2999-12-31")
    assert dated.returncode == 0
    assert "2999-12-31T00:00:00Z" in cli(settings, "list").stdout


def test_last_used_is_recorded(secured):
    _, app, db = secured
    with db.session() as session:
        token = tokens.create(session, "fay")
    app.test_client().get("/v1/jobs", headers=bearer(token))
    with db.session() as session:
        assert session.get(ApiToken, tokens.digest(token)).last_used_at is not None


def _fresh_minute() -> None:
    """The limit is a fixed one-minute window: start a burst well inside a minute, not across a boundary."""
    while time.time() % 60 > 50:
        time.sleep(0.5)


def test_a_token_over_its_rate_limit_gets_429_with_retry_after_and_other_tokens_do_not(backend):
    settings = replace(
        backend,
        single_user=False,
        rate_limit_per_minute=4,
        api_tokens=f"rate-a-{os.getpid()}-{time.time()}:alice,rate-b-{os.getpid()}-{time.time()}:bob",
    )
    first, second = (item.rpartition(":")[0] for item in settings.api_tokens.split(","))
    client = create_app(settings).test_client()
    _fresh_minute()
    statuses = [client.get("/v1/jobs", headers=bearer(first)).status_code for _ in range(4)]
    over = client.get("/v1/jobs", headers=bearer(first))
    assert statuses == [200] * 4
    assert over.status_code == 429 and over.mimetype == "application/problem+json"
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    assert "4 requests" in over.get_json()["detail"]
    assert client.get("/v1/jobs", headers=bearer(second)).status_code == 200


def test_the_rate_limit_holds_across_gunicorn_worker_processes(backend, tmp_path):
    """Two gunicorn processes, fresh connections: a per-process count would let more of these through."""
    secret = f"gunicorn-{os.getpid()}-{time.time()}"
    env = worker_env(backend, TRAINER_API_TOKENS=f"{secret}:gus", TRAINER_RATE_LIMIT_PER_MINUTE=4)
    api, url = start_gunicorn(env, tmp_path / "api.log", ["--workers", "2"])
    try:
        _fresh_minute()
        statuses = []
        for _ in range(8):
            with httpx.Client(base_url=url, timeout=30) as http:  # a new connection each time
                statuses.append(http.get("/v1/jobs", headers=bearer(secret)).status_code)
        assert statuses == [200] * 4 + [429] * 4
    finally:
        api.stop()


def test_an_unreachable_redis_does_not_refuse_requests(tmp_path):
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 't.sqlite'}",
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
        api_tokens="r-secret:rita",
        rate_limit_per_minute=1,
    )
    upgrade(settings)
    client = create_app(settings).test_client()
    assert [client.get("/v1/datasets", headers=bearer("r-secret")).status_code for _ in range(3)] == [200] * 3


def test_no_token_shipped_every_request_refused_and_the_log_says_how_to_make_one(tmp_path):
    """The compose defaults (.env.example) with the database swapped for SQLite, in a real gunicorn."""
    shipped = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert not shipped.get("TRAINER_API_TOKENS") and not shipped.get("TRAINER_SINGLE_USER")
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 't.sqlite'}", broker_url=f"sqla+sqlite:///{tmp_path / 'b.sqlite'}"
    )
    upgrade(settings)
    env = {**worker_env(settings), **{k: v for k, v in shipped.items() if k.startswith("TRAINER_")}}
    log_path = tmp_path / "api.log"
    api, url = start_gunicorn(env, log_path, [])
    try:
        for headers in ({}, bearer("change-me"), {"Authorization": "Bearer"}):
            assert httpx.get(f"{url}/v1/jobs", headers=headers).status_code == 401
        assert httpx.post(f"{url}/v1/jobs", json={}, headers=bearer("change-me")).status_code == 401
        assert "no API token is configured" in log_path.read_text()
        assert "python -m core.tokens create OWNER" in log_path.read_text()
    finally:
        api.stop()


def test_single_user_with_tokens_is_refused_at_start(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINER_SINGLE_USER", "1")
    monkeypatch.setenv("TRAINER_API_TOKENS", "t:owner")
    with pytest.raises(ConfigError, match="TRAINER_API_TOKENS"):
        load_settings()
    monkeypatch.delenv("TRAINER_API_TOKENS")
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 't.sqlite'}", broker_url=f"sqla+sqlite:///{tmp_path / 'b.sqlite'}"
    )
    upgrade(settings)
    app = create_app(settings)  # no token anywhere: single-user starts
    with app.extensions["trainer"].db.session() as session:
        token = tokens.create(session, "olga")
    with pytest.raises(ConfigError, match="1 live API token"):
        create_app(settings)
    with app.extensions["trainer"].db.session() as session:
        tokens.revoke(session, settings, token)
    create_app(settings)  # a revoked token does not count


@pytest.mark.parametrize(
    "host, status",
    [
        ("localhost", 200),
        ("localhost:8000", 200),
        ("127.0.0.1:5000", 200),
        ("[::1]:8000", 200),
        ("LOCALHOST", 200),
        ("evil.example", 400),
        ("evil.example:8000", 400),
        ("127.0.0.1.evil.example", 400),
        ("localhost.", 400),
    ],
)
def test_single_user_answers_only_its_allowed_hosts(app, host, status):
    for path in ("/v1/jobs", "/healthz"):
        response = app.test_client().get(path, headers={"Host": host})
        assert response.status_code == status, (path, host)
    if status == 400:
        assert "TRAINER_ALLOWED_HOSTS" in app.test_client().get("/v1/jobs", headers={"Host": host}).get_json()["detail"]


def test_allowed_hosts_are_configurable_and_token_mode_does_not_check_host(backend):
    lan = create_app(replace(backend, allowed_hosts="trainer.lan")).test_client()
    assert lan.get("/v1/jobs", headers={"Host": "trainer.lan:8000"}).status_code == 200
    assert lan.get("/v1/jobs", headers={"Host": "localhost"}).status_code == 400
    anyone = create_app(replace(backend, allowed_hosts="*")).test_client()
    assert anyone.get("/v1/jobs", headers={"Host": "whatever.example"}).status_code == 200
    tokened = create_app(replace(backend, single_user=False, api_tokens="h-secret:hal")).test_client()
    assert tokened.get("/v1/jobs", headers={"Host": "api.example.com", **bearer("h-secret")}).status_code == 200


def test_migration_0006_adds_the_token_columns_and_goes_both_ways(isolated_backend):
    from alembic import command

    from core.db import make_engine
    from core.migrate import alembic_config

    def columns():
        engine = make_engine(isolated_backend)
        try:
            found = inspect(engine)
            return ({c["name"] for c in found.get_columns("api_tokens")}, found.has_table("rate_windows"))
        finally:
            engine.dispose()

    cols, windows = columns()
    assert {"revoked_at", "expires_at", "last_used_at"} <= cols and windows
    engine = make_engine(isolated_backend)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    engine.dispose()
    cols, windows = columns()
    assert not {"revoked_at", "expires_at", "last_used_at"} & cols and not windows
    upgrade(isolated_backend)
    assert columns()[1]


def test_the_default_compose_stack_publishes_on_loopback_asks_for_no_gpu_and_bounds_the_worker():
    """What ``docker compose up`` gets with no override and no variable set (make test-compose runs it)."""
    import re

    import yaml

    stack = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in stack["services"].items():
        for port in service.get("ports", []):
            assert re.fullmatch(r"\$\{\w+:-127\.0\.0\.1:\d+\}:\d+", port), (name, port)
        assert "devices" not in str(service.get("deploy", {})), name
    assert stack["services"]["worker"]["mem_limit"] == "${WORKER_MEM_LIMIT:-8g}"
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
    assert gpu["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert {s["image"] for s in gpu["services"].values()} == {"keras-trainer:gpu"}
