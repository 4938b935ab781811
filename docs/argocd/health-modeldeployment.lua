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
  hs.status = "Degraded"
  hs.message = message(available or ready)
elseif phase == "Paused" then
  hs.status = "Suspended"
  hs.message = message(condition("Progressing"))
elseif phase == "Progressing" then
  hs.status = "Progressing"
  hs.message = message(condition("Progressing"))
elseif phase == "RolledBack" then
  if serving then
    hs.status = "Healthy"
    hs.message = "Rolled back: " .. message(condition("Progressing"))
  else
    hs.status = "Degraded"
    hs.message = message(available or ready)
  end
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message(ready)
elseif ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready)
else
  hs.status = "Progressing"
  hs.message = ready ~= nil and describe(ready) or "Waiting for the Ready condition"
end
return hs
