-- Argo CD health of a mlflow.operator.dev ModelDeployment (status.phase, Available and Ready).
-- Paused (a pause step without duration, or inconclusive analysis) waits for a person: Suspended.
-- RolledBack with the stable version serving is Healthy: the bad version was stopped, traffic is safe.
local function message(fallback)
  if obj.status.message ~= nil and obj.status.message ~= "" then
    return obj.status.message
  end
  if fallback ~= nil then
    return describe(fallback)
  end
  return ""
end
local phase = obj.status.phase
local available = condition("Available")
local serving = available ~= nil and available.status == "True"
if phase == "Degraded" then
  return verdict("Degraded", message(available or ready))
elseif phase == "Paused" then
  return verdict("Suspended", message(condition("Progressing")))
elseif phase == "Progressing" then
  return verdict("Progressing", message(condition("Progressing")))
elseif phase == "RolledBack" and serving then
  return verdict("Healthy", "Rolled back: " .. message(condition("Progressing")))
elseif phase == "RolledBack" then
  return verdict("Degraded", message(available or ready))
elseif ready ~= nil and ready.status == "True" then
  return verdict("Healthy", message(ready))
elseif ready ~= nil and ready.status == "False" then
  return verdict("Degraded", describe(ready))
end
return verdict("Progressing", ready ~= nil and describe(ready) or "Waiting for the Ready condition")
