-- Argo CD health of a mlflow.operator.dev TrackingServer (status.phase and the Ready condition).
if ready == nil then
  return verdict("Progressing", "Waiting for the Ready condition")
end
local phase = obj.status.phase
if ready.status == "True" or phase == "Ready" then
  return verdict("Healthy", "MLflow " .. (obj.status.version or "") .. " serves at " .. (obj.status.url or ""))
elseif phase == "Failed" then
  return verdict("Degraded", describe(ready))
end
-- Provisioning, Migrating, Pending: pods starting, a migration running, a rollout of the server.
return verdict("Progressing", describe(ready))
