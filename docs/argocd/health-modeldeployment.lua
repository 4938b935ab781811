-- Argo CD health of a mlflow.operator.dev ModelDeployment (status.phase, Available and Ready).
-- Paused (a pause step without duration, or inconclusive analysis) waits for a person: Suspended.
-- RolledBack with the stable version serving is Healthy: the bad version was stopped, traffic is safe.
local hs = {}
local function condition(kind)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == kind then
        return c
      end
    end
  end
  return nil
end
local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end
local function message(fallback)
  if obj.status.message ~= nil and obj.status.message ~= "" then
    return obj.status.message
  end
  if fallback ~= nil then
    return describe(fallback)
  end
  return ""
end
local ready = condition("Ready")
if ready ~= nil and ready.reason == "InvalidSpec" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end
if obj.status == nil or obj.status.observedGeneration == nil
    or (obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
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
