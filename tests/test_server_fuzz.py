"""Property-based fuzzing of the REST API with schemathesis, from the checked-in OpenAPI spec.

``tests/test_server_rest.py`` asserts that docs/openapi.json equals the spec the server
serves, so fuzzing the file fuzzes the server's own contract. Every operation gets
bounded random (valid and invalid) requests; each answer must be no 5xx, have a
declared status, content type, headers and a body matching the declared schema, and
schema-invalid requests must be rejected with a 4xx.

``positive_data_acceptance`` is left out on purpose: a request can match the schema
and still be wrong for the store (a vector of the wrong dimension, an unknown
collection), which M2M rightly answers 4xx.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from _servers import running_server
from m2m.clients import HttpClient
from m2m.server.auth import Role

SPEC = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
schema = schemathesis.openapi.from_dict(json.loads(SPEC.read_text()))

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
FUZZ_COLLECTION = "fuzz"
ADMIN_KEY = "fuzz-admin-key"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    keys = {ADMIN_KEY: Role.ADMIN}
    with running_server(
        tmp_path_factory.mktemp("fuzz"), grpc_port=None, max_body_bytes=1 << 20, api_keys=keys
    ) as server:
        with HttpClient(server.url, api_key=ADMIN_KEY) as client:
            col = client.create_collection(FUZZ_COLLECTION, 3, "l2")
            col.add(
                ["a", "b", "c"],
                [[0, 0, 0], [1, 0, 0], [0, 1, 0]],
                metadatas=[{"k": 1}, {"k": 2}, None],
                documents=["alpha beta", "beta gamma", None],
            )
        yield server


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_rest_api_conforms_to_its_spec(case, fuzz_server):
    # Item operations go to the existing collection, so bodies reach the core's checks
    # rather than stopping at "collection not found" (which random names exercise elsewhere).
    if "/v1/collections/{name}/" in case.path:
        case.path_parameters = {**(case.path_parameters or {}), "name": FUZZ_COLLECTION}
    # The spec declares bearer auth, so the server runs with a key and schemathesis sends it
    # (and checks that requests without it are refused).
    case.call_and_validate(
        base_url=fuzz_server.url, checks=CHECKS, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
