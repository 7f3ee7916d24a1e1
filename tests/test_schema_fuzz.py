"""schemathesis against the service's own /openapi.json: no server errors, no response off its schema.

The app has a database of its own (SQLite in a temp dir), built at collection because schemathesis
generates its cases from the live schema.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from core.migrate import upgrade
from core.settings import load_settings
from service.app import create_app

_var = Path(tempfile.mkdtemp(prefix="fuzz-"))
_settings = load_settings(
    database_url=f"sqlite:///{_var / 't.sqlite'}",
    broker_url=f"sqla+sqlite:///{_var / 'b.sqlite'}",
    api_tokens="fuzz-token:fuzzer",
    rate_limit_per_minute=0,
)  # hundreds of calls a minute
upgrade(_settings)
schema = schemathesis.openapi.from_wsgi("/openapi.json", create_app(_settings))


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case):
    # Every check but "a schema-valid request is accepted": a valid recipe may still name a dataset that
    # doesn't exist or a cursor this service never issued, and those are 422s by design.
    case.call_and_validate(
        headers={"Authorization": "Bearer fuzz-token"}, excluded_checks=[schemathesis.checks.positive_data_acceptance]
    )
