-- Argo CD health of a mlflow.operator.dev TrackingServer (status.phase and the Ready condition).
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
local phase = obj.status.phase
if ready.status == "True" or phase == "Ready" then
  hs.status = "Healthy"
  hs.message = "MLflow " .. (obj.status.version or "") .. " serves at " .. (obj.status.url or "")
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(ready)
else
  -- Provisioning, Migrating, Pending: pods starting, a migration running, a rollout of the server.
  hs.status = "Progressing"
  hs.message = describe(ready)
end
return hs
