"""The OpenAPI document is the truth: schemathesis over every operation, every check on.

Bounded (a few dozen examples an operation, positive and negative) so that it
stays a few seconds; `schemathesis run <url>/openapi.json --checks all` does
the same from outside against `arbiter serve` (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance
from support.server import ADMIN
from support.server import settings as app_settings

from arbiter.server.app import create_app

# Operations whose acceptance depends on more than the body's shape, so that a
# schema-valid request is rightly refused; positive_data_acceptance is wrong for
# them, and only for them:
UNSHAPED = {
    # The body is .rules text: only the checker knows whether it compiles (422
    # with its diagnostics); no JSON Schema describes the language.
    ("PUT", "/v1/rulesets/{name}"),
    # An event's `ts` may be at most 5 minutes in the future: a bound that moves
    # with the clock, which a schema (fixed when served) cannot state. Every
    # other rule of the body (types of declared properties, sizes) is in it.
    ("POST", "/v1/events"),
    # `goal` names an event of the ruleset that `ruleset` picks, `within` is a
    # `.rules` duration and `value` a number property of that event: each is
    # checked against that ruleset's declarations (422 naming the parameter).
    ("GET", "/v1/experiments/{name}"),
    # The studio's bodies carry `.rules` drafts: as for PUT, only the checker
    # knows whether a draft compiles (422 with its diagnostics).
    ("POST", "/v1/format"),
    ("POST", "/v1/studio/try"),
    ("POST", "/v1/studio/scenarios"),
    ("POST", "/v1/studio/simulate"),
}


@pytest.fixture(scope="module")
def contract_app(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("contract")
    app = create_app(app_settings(redis_server.url, tmp))
    yield app
    asgi.shutdown_lifespans()  # schemathesis started the lifespan; stop it before Redis goes


@pytest.fixture(scope="module")
def api_schema(contract_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", contract_app)


OPERATIONS = [
    ("POST", "/v1/decide"),
    ("POST", "/v1/feedback"),
    ("POST", "/v1/events"),
    ("GET", "/v1/profiles/{customer_id}"),
    ("PUT", "/v1/profiles/{customer_id}"),
    ("PATCH", "/v1/profiles/{customer_id}"),
    ("DELETE", "/v1/profiles/{customer_id}"),
    ("GET", "/v1/rulesets"),
    ("GET", "/v1/rulesets/{name}"),
    ("PUT", "/v1/rulesets/{name}"),
    ("POST", "/v1/rulesets/{name}/rollback"),
    ("POST", "/v1/identify"),
    ("GET", "/v1/experiments/{name}"),
    ("POST", "/v1/check"),
    ("POST", "/v1/format"),
    ("POST", "/v1/studio/try"),
    ("POST", "/v1/studio/scenarios"),
    ("POST", "/v1/studio/simulate"),
    ("POST", "/v1/studio/diff"),
    ("GET", "/v1/studio/customers"),
    ("GET", "/v1/studio/rulesets/{name}/versions"),
    ("GET", "/v1/keys"),
    ("POST", "/v1/keys"),
    ("DELETE", "/v1/keys/{name}"),
    ("POST", "/v1/keys/{name}/rotate"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]


def test_every_operation_is_covered(api_schema: Any) -> None:
    listed = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert listed == set(OPERATIONS)


# Negative cases for every operation that takes input (the health routes take none).
CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE or path.startswith("/v1/")
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_every_operation_keeps_its_contract(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    excluded = [positive_data_acceptance] if (method, path) in UNSHAPED else []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=20,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=dict(ADMIN), excluded_checks=excluded)

    run()
