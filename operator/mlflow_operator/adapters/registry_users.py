"""MLflow's basic-auth user API, called with a TrackingServer's admin credentials: the per-ModelDeployment
readers (logic.registry_reader) are created, granted READ, given a new password, and deleted here.

A reader gets READ on its registered model and on the experiments that hold the versions it serves: MLflow
judges an artifact download through the proxy by the experiment the artifacts live in, so the model alone
is not enough to fetch a version. Blocking methods with `*_async` twins, bounded like ModelRegistry's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from mlflow_operator.adapters.registry import RegistryError, Unauthorized, bounded_call, translate_error
from mlflow_operator.adapters.registry_store import LOGGED_MODEL_PATH, RUN_PATH, RegistryEndpoint, rest_call

USERS_CREATE = "/api/2.0/mlflow/users/create"
USERS_UPDATE_PASSWORD = "/api/2.0/mlflow/users/update-password"
USERS_DELETE = "/api/2.0/mlflow/users/delete"
USERS_LIST = "/api/2.0/mlflow/users/list"
USERS_GET = "/api/2.0/mlflow/users/get"
PERMISSIONS_GRANT = "/api/3.0/mlflow/users/permissions/grant"
ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"

T = TypeVar("T")


class RegistryUsers:
    """The users of one MLflow server with basic auth (the endpoint carries an admin's credentials)."""

    def __init__(self, endpoint: RegistryEndpoint) -> None:
        self.endpoint = endpoint

    @contextmanager
    def _translated(self, what: str) -> Any:
        try:
            yield
        except Exception as error:
            raise translate_error(error, what, self.endpoint.tracking_uri) from error

    def _call(
        self, method: str, path: str, what: str, *, body: Mapping[str, Any] | None = None, params: Any = None
    ) -> dict[str, Any]:
        with self._translated(what):
            return rest_call(self.endpoint, method, path, body=body, params=params)

    def _tolerating(self, code: str, call: Callable[[], object]) -> bool:
        """Run `call`; False when MLflow answered with `code` (already exists, already gone)."""
        try:
            call()
        except RegistryError as error:
            if error.code != code:
                raise
            return False
        return True

    # --- readers ---

    def ensure_reader(self, username: str, password: str, model: str, experiments: Iterable[str]) -> None:
        """The user exists with this password and READ on the model and the experiments (idempotent: an
        existing user gets the password again, an existing grant is left as it is)."""
        credentials = {"username": username, "password": password}
        created = self._tolerating(
            ALREADY_EXISTS, lambda: self._call("POST", USERS_CREATE, f"creating user {username}", body=credentials)
        )
        if not created:
            self._call("PATCH", USERS_UPDATE_PASSWORD, f"setting the password of {username}", body=credentials)
        grants = [("registered_model", model), *(("experiment", experiment) for experiment in sorted(experiments))]
        for resource_type, resource_id in grants:
            grant = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
            self._tolerating(
                ALREADY_EXISTS,
                lambda grant=grant: self._call(  # type: ignore[misc]
                    "POST",
                    PERMISSIONS_GRANT,
                    f"granting {username} READ on {grant['resource_type']} {grant['resource_id']}",
                    body={**grant, "permission": "READ"},
                ),
            )

    def delete_user(self, username: str) -> bool:
        """False when there was no such user."""
        body = {"username": username}
        return self._tolerating(
            NOT_FOUND, lambda: self._call("DELETE", USERS_DELETE, f"deleting {username}", body=body)
        )

    def usernames(self) -> list[str]:
        answer = self._call("GET", USERS_LIST, "listing users")
        return [user["username"] for user in answer.get("users", [])]

    def experiment_of(self, source: str, run_id: str | None) -> str | None:
        """The experiment holding a version's artifacts: its logged model's, else its run's."""
        if source.startswith("models:/m-"):
            model_id = source.removeprefix("models:/").split("/", 1)[0]
            answer = self._call("GET", LOGGED_MODEL_PATH.format(model_id=model_id), f"reading logged model {model_id}")
            found = answer.get("model", {}).get("info", {}).get("experiment_id")
            if found:
                return str(found)
        if run_id:
            answer = self._call("GET", RUN_PATH, f"reading run {run_id}", params={"run_id": run_id})
            found = answer.get("run", {}).get("info", {}).get("experiment_id")
            return str(found) if found else None
        return None

    # --- the admin's own password ---

    def set_password(self, username: str, password: str) -> None:
        """Change the endpoint's own user's password (MLflow wants the current one again for that)."""
        body = {"username": username, "password": password, "current_password": self.endpoint.password}
        self._call("PATCH", USERS_UPDATE_PASSWORD, f"setting the password of {username}", body=body)

    def authenticates(self) -> bool:
        """Whether MLflow accepts the endpoint's credentials (False on 401/403)."""
        username = self.endpoint.username or ""
        try:
            self._call("GET", USERS_GET, f"reading user {username}", params={"username": username})
        except Unauthorized:
            return False
        return True

    # --- async twins ---

    async def _bounded(self, what: str, call: Callable[..., T], *args: Any) -> T:
        return await bounded_call(self.endpoint.tracking_uri, self.endpoint.call_timeout, what, call, *args)

    async def ensure_reader_async(self, username: str, password: str, model: str, experiments: Iterable[str]) -> None:
        await self._bounded(
            f"setting up user {username}", self.ensure_reader, username, password, model, tuple(experiments)
        )

    async def delete_user_async(self, username: str) -> bool:
        return await self._bounded(f"deleting user {username}", self.delete_user, username)

    async def set_password_async(self, username: str, password: str) -> None:
        await self._bounded(f"setting the password of {username}", self.set_password, username, password)

    async def authenticates_async(self) -> bool:
        return await self._bounded("checking credentials", self.authenticates)

    async def usernames_async(self) -> list[str]:
        return await self._bounded("listing users", self.usernames)

    async def experiment_of_async(self, source: str, run_id: str | None) -> str | None:
        return await self._bounded("finding a version's experiment", self.experiment_of, source, run_id)
