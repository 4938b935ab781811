"""MLflow's REST answers read into JSON or errors, and errors into the reasons the operator reports: pure logic,
checked here without a server (tests/integration/test_registry_adapter.py runs the calls against real MLflow)."""

from __future__ import annotations

import pytest
import requests

from mlflow_operator.adapters.registry import (
    ModelNotFound,
    RegistryError,
    RegistryUnavailable,
    Unauthorized,
    translate_error,
)
from mlflow_operator.adapters.registry_store import MlflowApiError, RegistryEndpoint, parse_answer

URI = "http://mlflow:5000"


def test_an_answer_is_its_json_object_and_an_empty_answer_an_empty_one() -> None:
    assert parse_answer(200, '{"registered_model": {"name": "churn"}}') == {"registered_model": {"name": "churn"}}
    assert parse_answer(200, "") == {}
    assert parse_answer(204, "") == {}


def test_mlflows_error_json_gives_its_code_and_message() -> None:
    with pytest.raises(MlflowApiError) as raised:
        parse_answer(404, '{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Registered Model x not found"}')
    assert (raised.value.code, raised.value.message, raised.value.http_status) == (
        "RESOURCE_DOES_NOT_EXIST",
        "Registered Model x not found",
        404,
    )
    assert str(raised.value) == "RESOURCE_DOES_NOT_EXIST: Registered Model x not found"


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED"), (404, "ENDPOINT_NOT_FOUND"), (502, "INTERNAL_ERROR")],
)
def test_an_answer_without_mlflows_json_gets_the_code_of_its_status(status: int, code: str) -> None:
    """The auth app answers 401 in plain text, a proxy a 502 page: the code comes from the status, as MLflow's
    client derives it."""
    with pytest.raises(MlflowApiError) as raised:
        parse_answer(status, "<html>Bad Gateway</html>")
    assert raised.value.code == code and "Bad Gateway" in raised.value.message


def test_a_200_that_is_not_a_json_object_is_an_error() -> None:
    with pytest.raises(MlflowApiError, match="not a JSON object"):
        parse_answer(200, "[1, 2]")


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (MlflowApiError("UNAUTHENTICATED", "no", 401), Unauthorized, "UNAUTHENTICATED"),
        (MlflowApiError("PERMISSION_DENIED", "no", 403), Unauthorized, "PERMISSION_DENIED"),
        (MlflowApiError("RESOURCE_DOES_NOT_EXIST", "gone", 404), ModelNotFound, "RESOURCE_DOES_NOT_EXIST"),
        (MlflowApiError("INTERNAL_ERROR", "boom", 500), RegistryUnavailable, "INTERNAL_ERROR"),
        (MlflowApiError("REQUEST_LIMIT_EXCEEDED", "slow down", 429), RegistryUnavailable, "REQUEST_LIMIT_EXCEEDED"),
        (MlflowApiError("INVALID_PARAMETER_VALUE", "bad", 400), RegistryError, "INVALID_PARAMETER_VALUE"),
        (requests.ConnectionError("refused"), RegistryUnavailable, None),
        (requests.Timeout("read timed out"), RegistryUnavailable, None),
        (ValueError("odd"), RegistryError, None),
    ],
)
def test_errors_become_the_reason_the_operator_reports(
    error: Exception, kind: type[RegistryError], code: str | None
) -> None:
    translated = translate_error(error, "reading x", URI)
    assert type(translated) is kind and translated.code == code
    assert "reading x" in translated.message


def test_credentials_basic_auth_or_a_bearer_token_which_wins() -> None:
    basic = RegistryEndpoint(URI, username="admin", password="pw")
    assert basic.auth() == ("admin", "pw") and "Authorization" not in basic.headers()
    token = RegistryEndpoint(URI, username="admin", password="pw", token="t0k")
    assert token.auth() is None and token.headers()["Authorization"] == "Bearer t0k"
    assert RegistryEndpoint(URI).auth() is None
