-- Argo CD health check for Capstan's kinds (CloudRecording, WebRecording, StreamPush; group
-- capstan.dev). The same rules as capstan/operator/reconcile/conditions.py `health` (docs/gitops.md):
--   Healthy      the task runs (idle, recording, pushing) or ended as asked (finished, canceled)
--   Progressing  not accepted yet, queued, starting (normal), storing its results (transcode,
--                upload, callback), or the operator has not seen the newest spec yet
--   Suspended    paused (WebRecording spec.paused)
--   Degraded     failed, or finished with an error in status.result (e.g. CallbackFailed)
-- `obj` is the resource Argo CD hands the script; the script returns {status=..., message=...}.
local hs = {}
local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "the operator has not accepted the task yet"
  return hs
end

local function true_condition(kind)
  if status.conditions == nil then
    return false
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind and c.status == "True" then
      return true
    end
  end
  return false
end

local phase = status.phase
local result = status.result or {}
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "the operator has not seen generation " .. tostring(generation) .. " yet"
elseif phase == "failed" then
  hs.status = "Degraded"
  hs.message = result.errorMessage or status.message or "the task failed"
elseif phase == "finished" and result.errorCode ~= nil and result.errorCode ~= "" then
  hs.status = "Degraded"
  hs.message = result.errorCode .. ": " .. (result.errorMessage or "")
elseif phase == "finished" or phase == "canceled" then
  hs.status = "Healthy"
  hs.message = "the task is " .. phase
elseif phase == "paused" then
  hs.status = "Suspended"
  hs.message = "paused (spec.paused)"
elseif phase == "idle" or phase == "recording" or phase == "pushing" then
  hs.status = "Healthy"
  hs.message = status.message or ("the task is " .. phase)
elseif phase == "transcode" or phase == "upload" or phase == "callback" then
  hs.status = "Progressing"
  hs.message = "storing the results (" .. phase .. ")"
elseif true_condition("Queued") then
  hs.status = "Progressing"
  hs.message = status.message or "waiting for a free place"
else
  hs.status = "Progressing"
  hs.message = "starting the worker"
end
return hs
