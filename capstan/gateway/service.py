"""The gateway's actions: authenticate, authorize (namespaces and SdkAppIds of the key), rate-limit,
map, and drive the Store. HTTP lives in `http.py`, Kubernetes in `kube.py`; this module does neither.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from capstan.gateway import appauth, errors, ingest, mapping, recording, scf, tc3, webrecord
from capstan.gateway.config import GatewayConfig, KeyBinding
from capstan.gateway.errors import ApiError
from capstan.gateway.fields import Obj
from capstan.gateway.mapping import Names, Plan
from capstan.gateway.ratelimit import RateLimiter
from capstan.gateway.store import Store, StoreError

log = logging.getLogger(__name__)
VERSION = "2019-07-22"
KeysSource = Callable[[], dict[str, KeyBinding]]
# Actions that create a task: the same signed request served twice would create two, so a signature
# already served within the timestamp window gets the first answer again (a captured request replayed
# creates nothing; an identical request repeated within the same second is idempotent).
CREATING = frozenset({"CreateCloudRecording", "StartStreamIngest", "StartWebRecord", "single-stream-recording",
                      "stream-push", "panoramic-recording"})
Handler = Callable[[KeyBinding, dict[str, Any]], Awaitable[dict[str, Any]]]


def request_id() -> str:
    return str(uuid.uuid4())


def store_error(exc: StoreError) -> ApiError:
    if exc.status == 422:
        return ApiError(errors.INVALID, f"the API server refused the resource: {exc.message}")
    if exc.status == 409:
        return ApiError(errors.TASK_EXIST, exc.message)
    log.warning("API server error %s: %s", exc.status, exc.message)
    return ApiError(errors.INTERNAL, f"the API server answered {exc.status}")


class Gateway:
    def __init__(self, cfg: GatewayConfig, keys: KeysSource, store: Store,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg, self.keys, self.store, self.clock = cfg, keys, store, clock
        self.limiter = RateLimiter(cfg.qps)
        self.served: dict[str, tuple[float, dict[str, Any]]] = {}  # signature -> (when, answer): CREATING
        self.actions: dict[str, Handler] = {
            "CreateCloudRecording": self.create_cloud_recording,
            "DescribeCloudRecording": self.describe_cloud_recording,
            "ModifyCloudRecording": self.modify_cloud_recording,
            "DeleteCloudRecording": self.delete_cloud_recording,
            "StartStreamIngest": self.start_stream_ingest,
            "DescribeStreamIngest": self.describe_stream_ingest,
            "StopStreamIngest": self.stop_stream_ingest,
            "StartWebRecord": self.start_web_record,
            "DescribeWebRecord": self.describe_web_record,
            "StopWebRecord": self.stop_web_record,
        }

    # --- entry points -------------------------------------------------------------------------------

    def _secret_key(self, secret_id: str) -> str | None:
        binding = self.keys().get(secret_id)
        return binding.secret_key if binding else None

    def _answered(self, what: str, signature: str) -> dict[str, Any] | None:
        """The answer a CREATING request with this signature already got, if any."""
        if what not in CREATING:
            return None
        now = self.clock()
        horizon = 2 * self.cfg.max_skew_seconds
        oldest = next(iter(self.served.values()), (now, {}))[0]  # insertion order: the oldest first
        if len(self.served) > 10000 or now - oldest > horizon:
            self.served = {k: v for k, v in self.served.items() if now - v[0] <= horizon}
        hit = self.served.get(signature)
        return hit[1] if hit else None

    def _remember(self, what: str, signature: str, answer: dict[str, Any]) -> None:
        if what in CREATING:
            self.served[signature] = (self.clock(), answer)

    def _limit(self, binding: KeyBinding, what: str) -> None:
        if not self.limiter.allow(f"{binding.secret_id}/{what}"):
            raise ApiError(errors.RATE_LIMIT, f"more than {self.cfg.qps:g} requests per second to {what}")

    async def call_api(self, req: tc3.Request) -> dict[str, Any]:
        """A TC3-signed `POST /`: the TRTC envelope, success or error."""
        rid = request_id()
        try:
            action = req.headers.get("x-tc-action", "")
            if not action:
                raise ApiError(errors.MISSING + ".Action", "X-TC-Action is required")
            secret_id = tc3.verify(req, self._secret_key, self.clock(), self.cfg.max_skew_seconds)
            binding = self.keys()[secret_id]
            handler = self.actions.get(action)
            if handler is None:
                raise ApiError(errors.UNSUPPORTED_ACTION, f"action {action[:64]!r} is not served here; served: "
                                                          + ", ".join(sorted(self.actions)))
            version = req.headers.get("x-tc-version", "")
            if version != VERSION:
                raise ApiError(errors.UNSUPPORTED_VERSION, f"X-TC-Version must be {VERSION}")
            self._limit(binding, action)
            signature = req.headers.get("authorization", "")
            body = self._answered(action, signature)
            if body is None:
                body = await handler(binding, self._json(req.body))
                self._remember(action, signature, body)
            log.info("%s by %s: ok", action, secret_id)
            return errors.envelope(body, rid)
        except ApiError as err:
            log.info("refused %s: %s", req.headers.get("x-tc-action", "?"), err)
            return errors.error_envelope(err, rid)

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            raise ApiError(errors.INVALID, "the body is not JSON") from None
        if not isinstance(params, dict):
            raise ApiError(errors.INVALID, "the body must be a JSON object")
        return params

    async def call_scf(self, route: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """An SCF-style path (API Gateway app auth): (HTTP status, the seed's body)."""
        rid = request_id()
        try:
            secret_id = appauth.verify(headers, body, self._secret_key, self.clock(), self.cfg.max_skew_seconds)
            binding = self.keys()[secret_id]
            params = self._json(body)
            action = params.get("Action") if route == "panoramic-recording" else None
            self._limit(binding, f"scf:{route}" + (f":{action}" if isinstance(action, str) else ""))
            signature = headers.get("authorization", "")
            creating = route if route != "panoramic-recording" or action == "Start" else ""
            out = self._answered(creating, signature)
            if out is None:
                out = await self.scf_route(route, binding, params)
                self._remember(creating, signature, out)
            return 200, {**out, "RequestID" if route == "panoramic-recording" else "RequestId": rid}
        except ApiError as err:
            log.info("refused scf %s: %s", route, err)
            return err.http_status, errors.scf_error(err, rid)

    # --- shared steps -------------------------------------------------------------------------------

    def _app(self, binding: KeyBinding, sdk_app_id: Any) -> None:
        if not isinstance(sdk_app_id, int) or sdk_app_id not in binding.sdk_app_ids:
            raise ApiError(errors.AUTH_UNAUTHORIZED, f"this SecretId may not use SdkAppId {sdk_app_id}")

    async def _find(self, binding: KeyBinding, plural: str, task_id: Any,
                    sdk_app_id: int | None = None) -> tuple[str, dict[str, Any]]:
        """The task a TaskId names, in the key's namespaces and of its SdkAppIds; otherwise "not found",
        the same answer whether it exists elsewhere or nowhere."""
        name = mapping.resource_name(task_id)
        for namespace in binding.namespaces:
            try:
                obj = await self.store.get(namespace, plural, name)
            except StoreError as exc:
                raise store_error(exc) from None
            if obj is None:
                continue
            labels = (obj.get("metadata") or {}).get("labels") or {}
            app = int(labels.get(mapping.SDK_APP_ID_LABEL, "0") or 0)
            if app in binding.sdk_app_ids and (sdk_app_id is None or app == sdk_app_id):
                if self._expired(obj):
                    raise ApiError(errors.NOT_FOUND, f"task {task_id} is past its ResourceExpiredHour")
                return namespace, obj
        raise ApiError(errors.NOT_FOUND, f"task {task_id} not found")

    def _expired(self, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        hours = (meta.get("annotations") or {}).get(mapping.EXPIRED_HOUR_ANNOTATION)
        created = meta.get("creationTimestamp")
        if not hours or not created or not str(hours).isdigit():
            return False
        born = dt.datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()
        return self.clock() > born + int(hours) * 3600

    async def _create(self, binding: KeyBinding, plan: Plan) -> dict[str, Any]:
        self._app(binding, plan.sdk_app_id)
        namespace = binding.home_namespace
        try:
            obj = await self.store.create(namespace, plan)
        except StoreError as exc:
            raise store_error(exc) from None
        await self._admitted(namespace, plan)
        return obj

    async def _admitted(self, namespace: str, plan: Plan) -> None:
        """Wait a moment for the operator to accept the task: a refusal by the concurrency limit
        (queuePolicy refuse) is answered as TRTC does, and the refused resource is removed."""
        deadline = time.monotonic() + self.cfg.admission_wait_seconds
        while time.monotonic() < deadline:
            try:
                obj = await self.store.get(namespace, plan.plural, plan.names.resource)
            except StoreError:
                return
            status = (obj or {}).get("status") or {}
            code = (status.get("result") or {}).get("errorCode")
            if code == errors.RESTRICTED_CONCURRENCY:
                try:
                    await self.store.delete(namespace, plan.plural, plan.names.resource)
                except StoreError as exc:
                    log.warning("could not remove refused task %s: %s", plan.names.resource, exc)
                raise ApiError(errors.RESTRICTED_CONCURRENCY, str((status.get("result") or {}).get(
                    "errorMessage") or "the concurrency limit is reached"))
            if status.get("taskId") and status.get("phase"):
                return
            await asyncio.sleep(0.2)

    async def _patch(self, namespace: str, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.store.patch_spec(namespace, plural, name, patch)
        except StoreError as exc:
            if exc.status == 404:
                raise ApiError(errors.NOT_FOUND, "task not found") from None
            raise store_error(exc) from None

    @staticmethod
    def _sdk_app_id(req: Obj) -> int:
        value = req.integer("SdkAppId", lo=1, hi=4294967295, required=True)
        assert value is not None
        return value

    # --- CloudRecording -----------------------------------------------------------------------------

    async def create_cloud_recording(self, binding: KeyBinding, params: dict[str, Any]) -> dict[str, Any]:
        self._app(binding, params.get("SdkAppId"))
        plan = recording.plan_cloud_recording(params, self.cfg, Names.new())
        await self._create(binding, plan)
        return {"TaskId": plan.names.task_id}

    async def describe_cloud_recording(self, binding: KeyBinding, params: dict[str, Any]) -> dict[str, Any]:
        req = Obj(params)
        app = self._sdk_app_id(req)
        task_id = req.get("TaskId", str, required=True)
        req.only("RecorderKey", why="tasks are named by TaskId only")
        req.done()
        _, obj = await self._find(binding, "cloudrecordings", task_id, app)
        return recording.describe_cloud_recording(obj)

    async def modify_cloud_recording(self, binding: KeyBinding, params: dict[str, Any]) -> dict[str, Any]:
        app = self._sdk_app_id(Obj(params))  # the whole body is read by plan_modify_cloud_recording
        namespace, obj = await self._find(binding, "cloudrecordings", params.get("TaskId"), app)
        patch = recording.plan_modify_cloud_recording(params, obj)
        await self._patch(namespace, "cloudrecordings", obj["metadata"]["name"], patch)
        return {"TaskId": mapping.task_id_of(obj)}

    async def delete_cloud_recording(self, binding: KeyBinding, params: dict[str, Any]) -> dict[str, Any]:
        obj = await self._stop_by_task_id(binding, params, "cloudrecordings")
        return {"TaskId": mapping.task_id_of(obj)}

    async def _stop_by_task_id(self, binding: KeyBinding, params: dict[str, Any], plural: str) -> dict[str, Any]:
        """A body of exactly SdkAppId and TaskId: `stop: true` on that task; the task as it was."""
        req = Obj(params)
        app = self._sdk_app_id(req)
        req.get("TaskId", str, required=True)
        req.done()
        namespace, obj = await self._find(binding, plural, params.get("TaskId"), app)
        await self._patch(namespace, plural, obj["metadata"]["name"], {"stop": True})
        return obj

    # --- StreamPush ---------------------------------------------------------------------------------

    async def start_stream_ingest(self, binding: KeyBinding, params: dict[str, Any]) -> dict[str, Any]:
        self._app(binding, params.get("SdkAppId"))
        plan = ingest.plan_stream_ingest(params, self.cfg, Names.new())
        await self._create(binding, plan)
        return {"TaskId": plan.names.task_id}

    async def describe_stream_ingest(self, binding: KeyBinding, params: dict[str, Any]) -> dict[str, Any]:
        req = Obj(params)
        app = self._sdk_app_id(req)
        task_id = req.get("TaskId", str, required=True)
        req.done()
        try:
            _, obj = await self._find(binding, "streampushes", task_id, app)
        except ApiError as err:
            if err.code != errors.NOT_FOUND:
                raise
            return ingest.describe_stream_ingest(None)
        return ingest.describe_stream_ingest(obj)

    async def stop_stream_ingest(self, binding: KeyBinding, params: dict[str, Any]) -> dict[str, Any]:
        await self._stop_by_task_id(binding, params, "streampushes")
        return {}

    # --- WebRecording -------------------------------------------------------------------------------

    async def start_web_record(self, binding: KeyBinding, params: dict[str, Any]) -> dict[str, Any]:
        self._app(binding, params.get("SdkAppId"))
        plan = webrecord.plan_web_record(params, self.cfg, Names.new())
        record_id = plan.labels.get(mapping.RECORD_ID_LABEL)
        if record_id:
            running = await self._by_record_id(binding, plan.sdk_app_id, record_id)
            if running:
                raise ApiError(errors.TASK_EXIST, f"a recording with RecordId {record_id} is already running: "
                                                  f"{mapping.task_id_of(running[0])}")
        await self._create(binding, plan)
        return {"TaskId": plan.names.task_id}

    async def _by_record_id(self, binding: KeyBinding, app: int, record_id: str) -> list[dict[str, Any]]:
        selector = f"{mapping.RECORD_ID_LABEL}={record_id},{mapping.SDK_APP_ID_LABEL}={app}"
        found: list[dict[str, Any]] = []
        for namespace in binding.namespaces:
            try:
                items = await self.store.list(namespace, "webrecordings", selector)
            except StoreError as exc:
                raise store_error(exc) from None
            found += [o for o in items if ((o.get("status") or {}).get("phase")) not in mapping.TERMINAL]
        return found

    async def describe_web_record(self, binding: KeyBinding, params: dict[str, Any]) -> dict[str, Any]:
        req = Obj(params)
        task_id, record_id = req.text("TaskId"), req.text("RecordId")
        app = req.integer("SdkAppId", lo=1, hi=4294967295)
        req.done()
        if task_id is not None:
            _, obj = await self._find(binding, "webrecordings", task_id, app)
            return webrecord.describe_web_record(obj)
        if record_id is None:
            raise errors.missing("TaskId")
        if app is None:
            raise errors.missing("SdkAppId")
        self._app(binding, app)
        running = await self._by_record_id(binding, app, record_id)
        if not running:
            raise ApiError(errors.NOT_FOUND, f"no running recording with RecordId {record_id}")
        return webrecord.describe_web_record(running[0])

    async def stop_web_record(self, binding: KeyBinding, params: dict[str, Any]) -> dict[str, Any]:
        req = Obj(params)
        req.get("TaskId", str, required=True)
        req.done()
        namespace, obj = await self._find(binding, "webrecordings", params.get("TaskId"))
        await self._patch(namespace, "webrecordings", obj["metadata"]["name"], {"stop": True})
        return {}

    # --- SCF-style paths ----------------------------------------------------------------------------

    async def scf_route(self, route: str, binding: KeyBinding, params: dict[str, Any]) -> dict[str, Any]:
        if route == "single-stream-recording":
            self._app(binding, params.get("SdkAppId"))
            plan = scf.plan_recording(params, self.cfg, Names.new())
            await self._create(binding, plan)
            return {"TaskId": plan.names.task_id, "Message": "Async run task submitted"}
        if route in ("single-stream-recording/describe", "single-stream-recording/stop",
                     "stream-push/describe", "stream-push/stop"):
            plural = "cloudrecordings" if route.startswith("single") else "streampushes"
            req = Obj(params)
            task_id = req.get("TaskId", str, required=True)
            req.done()
            namespace, obj = await self._find(binding, plural, task_id)
            if route.endswith("/stop"):
                obj = await self._patch(namespace, plural, obj["metadata"]["name"], {"stop": True})
            return scf.recording_result(obj) if plural == "cloudrecordings" else scf.push_result(obj)
        if route == "stream-push":
            self._app(binding, params.get("SdkAppId"))
            plan = scf.plan_push(params, self.cfg, Names.new())
            await self._create(binding, plan)
            return {"TaskId": plan.names.task_id, "Message": "Async run task submitted"}
        if route == "panoramic-recording":
            return await self.panoramic(binding, params)
        raise ApiError(errors.NOT_FOUND, f"no SCF path {route!r}")

    async def panoramic(self, binding: KeyBinding, params: dict[str, Any]) -> dict[str, Any]:
        """Seed 003's Action API: Start / Pause / Resume / Refresh / Stop / Describe."""
        req = Obj(params)
        action = req.choice("Action", {a: a for a in ("Start", "Pause", "Resume", "Refresh", "Stop", "Describe")})
        if action is None:
            raise errors.missing("Action")
        data: dict[str, Any] = req.get("Data", dict, required=True)
        req.done()
        if action == "Start":
            if len(binding.sdk_app_ids) != 1:
                raise ApiError(errors.INVALID, "this key is bound to several SdkAppIds; the Action API names "
                                               "none, so use a key bound to one")
            plan = scf.plan_web_start(data, self.cfg, Names.new(), next(iter(binding.sdk_app_ids)))
            await self._create(binding, plan)
            return {"TaskID": plan.names.task_id}
        d = Obj(data, "Data")
        task_id = d.get("TaskID", str, required=True)
        d.done()
        namespace, obj = await self._find(binding, "webrecordings", task_id)
        name = obj["metadata"]["name"]
        if action == "Describe":
            return scf.web_describe(obj)
        refresh = int((obj.get("spec") or {}).get("refreshGeneration") or 0) + 1
        patches: dict[str, dict[str, Any]] = {"Pause": {"paused": True}, "Resume": {"paused": False},
                                              "Stop": {"stop": True}, "Refresh": {"refreshGeneration": refresh}}
        patch = patches[action]
        await self._patch(namespace, "webrecordings", name, patch)
        return {"TaskID": mapping.task_id_of(obj)}
