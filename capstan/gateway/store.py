"""The port the gateway's actions need from Kubernetes: the tasks and the Secrets they own.

`capstan.gateway.kube` is the adapter on the real API server; tests may give an in-memory one.
"""

from __future__ import annotations

from typing import Any, Protocol

from capstan.gateway.mapping import Plan


class StoreError(Exception):
    """The API server said no: `status` is its HTTP status (422 invalid, 409 exists, 404 absent...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class Store(Protocol):
    async def create(self, namespace: str, plan: Plan) -> dict[str, Any]:
        """The plan's Secrets, then its resource, then the Secrets owned by the resource (ownerReferences);
        a resource that cannot be created leaves no Secret behind."""
        ...

    async def get(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None: ...

    async def list(self, namespace: str, plural: str, label_selector: str) -> list[dict[str, Any]]: ...

    async def patch_spec(self, namespace: str, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    async def delete(self, namespace: str, plural: str, name: str) -> None: ...

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's data, decoded."""
        ...
