"""Schemathesis against the app's own OpenAPI (in-process ASGI): no 5xx, answers as documented.

Requests generated from `/openapi.json` for the /v1 routes (raw image bodies of every documented
type, multipart forms, query options; valid and invalid by the schema) must never get a server
error, and every answer's status, content type and body must be ones the schema declares
(errors included). Operations are drawn with `APIOperation.as_strategy` under plain Hypothesis:
schemathesis' own pytest loader (`from_fixture`) does not run under pytest 9.
"""

import pytest

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is not installed (pip install schemathesis)")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.gateway import Gateway  # noqa: E402
from service.settings import Settings  # noqa: E402

from .conftest import MODEL_NAME  # noqa: E402


def not_a_server_fault(ctx, response, case) -> None:
    """No 5xx but the documented 503 (model not ready) and 504 (the request's own deadline,
    which a generated `timeout_s=0.1` on a busy machine can meet)."""
    status = response.status_code
    assert status < 500 or status in (503, 504), f"{status}: {response.text[:300]}"


CHECKS = [not_a_server_fault, status_code_conformance, content_type_conformance,
          response_schema_conformance]
OPERATIONS = {("POST", "/v1/predict"), ("POST", "/v1/render"), ("GET", "/v1/model")}


@pytest.fixture
def app(model_repository):
    """A fresh app: schemathesis runs its lifespan in an event loop of its own and ends it with
    the test."""
    return Gateway(Settings(model_repository=model_repository, model_name=MODEL_NAME,
                            max_body_bytes=200_000, max_persons=4, grpc_port=0)).app


def test_the_schema_documents_inputs_and_errors_of_v1(app):
    paths = app.openapi()["paths"]
    assert {(m.upper(), p) for p, ops in paths.items() if p.startswith("/v1/") for m in ops} \
        == OPERATIONS
    for path in ("/v1/predict", "/v1/render"):
        post = paths[path]["post"]
        assert {"image/jpeg", "application/octet-stream", "multipart/form-data"} <= set(
            post["requestBody"]["content"])
        assert {"boxes", "fx", "heatmaps", "timeout_s"} <= {p["name"] for p in post["parameters"]}
        assert {"413", "415", "422", "429", "503", "504"} <= set(post["responses"])
        assert post["responses"]["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"}


def test_v1_answers_as_documented_and_never_5xx(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [schema[path][method] for method, path in sorted(OPERATIONS)]
    cases = st.sampled_from(operations).flatmap(lambda op: st.one_of(
        op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)))

    @settings(max_examples=75, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    @given(cases)
    def check(case):
        case.call_and_validate(checks=CHECKS)

    check()
