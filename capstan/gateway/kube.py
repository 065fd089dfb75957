"""The Store on the real API server (kubernetes client, run in worker threads), and the keys Secret."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from capstan.api import GROUP, VERSION
from capstan.gateway.config import ConfigError, KeyBinding, parse_keys
from capstan.gateway.mapping import Plan
from capstan.gateway.store import StoreError

log = logging.getLogger(__name__)
TIMEOUT = (5.0, 30.0)


def api_client() -> kubernetes.client.ApiClient:
    """In-cluster config inside a Pod, else KUBECONFIG."""
    cfg = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg)
    return kubernetes.client.ApiClient(cfg)


def _error(exc: ApiException) -> StoreError:
    message = str(exc.reason)
    with contextlib.suppress(Exception):
        import json

        message = json.loads(exc.body or "{}").get("message", message)
    return StoreError(int(exc.status or 500), message)


class KubeStore:
    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.core = kubernetes.client.CoreV1Api(client)

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=TIMEOUT, **kwargs)
        except ApiException as exc:
            raise _error(exc) from None

    async def create(self, namespace: str, plan: Plan) -> dict[str, Any]:
        made: list[str] = []
        try:
            for secret in plan.secret_bodies():
                await self._run(self.core.create_namespaced_secret, namespace, secret)
                made.append(secret["metadata"]["name"])
            obj: dict[str, Any] = await self._run(self.custom.create_namespaced_custom_object, GROUP, VERSION,
                                                  namespace, plan.plural, plan.body())
        except StoreError:
            for name in made:
                with contextlib.suppress(StoreError):
                    await self._run(self.core.delete_namespaced_secret, name, namespace)
            raise
        owner = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
                 "uid": obj["metadata"]["uid"], "controller": False, "blockOwnerDeletion": False}
        for name in made:
            await self._run(self.core.patch_namespaced_secret, name, namespace,
                            {"metadata": {"ownerReferences": [owner]}})
        return obj

    async def get(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self._run(self.custom.get_namespaced_custom_object, GROUP, VERSION,
                                                  namespace, plural, name)
            return obj
        except StoreError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, namespace: str, plural: str, label_selector: str) -> list[dict[str, Any]]:
        out = await self._run(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
                              label_selector=label_selector)
        return list(out.get("items") or [])

    async def patch_spec(self, namespace: str, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = await self._run(self.custom.patch_namespaced_custom_object, GROUP, VERSION,
                                              namespace, plural, name, {"spec": patch})
        return obj

    async def delete(self, namespace: str, plural: str, name: str) -> None:
        await self._run(self.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, plural, name)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        secret = await self._run(self.core.read_namespaced_secret, name, namespace)
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


class KeysFromSecret:
    """The SecretId/SecretKey pairs of one Secret, read again every `interval` seconds (a key added or
    revoked takes effect without a restart). A Secret that cannot be read or parsed keeps the last
    good pairs and is logged."""

    def __init__(self, store: KubeStore, namespace: str, name: str, interval: float = 10.0) -> None:
        self.store, self.namespace, self.name, self.interval = store, namespace, name, interval
        self.keys: dict[str, KeyBinding] = {}

    def __call__(self) -> dict[str, KeyBinding]:
        return self.keys

    async def refresh(self) -> None:
        try:
            self.keys = parse_keys(await self.store.read_secret(self.namespace, self.name))
        except (StoreError, ConfigError) as exc:
            log.warning("keys Secret %s/%s: %s (keeping %d keys)", self.namespace, self.name, exc, len(self.keys))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()
