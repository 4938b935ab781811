-- The start of every kind's health check: hack/argocd-health.py puts this file's code after the header comment
-- of health-<kind>.lua and before the rest of it (this comment is not shipped). It defines the helpers
-- `verdict`, `condition` and `describe` and the Ready condition `ready`, and gives the two verdicts every kind
-- shares:
-- InvalidSpec wins over everything, even before observedGeneration catches up (a refused spec is final until
-- it changes), and a spec the operator has not observed yet is Progressing.
local function verdict(status, message)
  return {status = status, message = message}
end
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
local ready = condition("Ready")
if ready ~= nil and ready.reason == "InvalidSpec" then
  return verdict("Degraded", describe(ready))
end
if obj.status == nil or obj.status.observedGeneration == nil
    or (obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation) then
  return verdict("Progressing", "Waiting for the operator to observe the latest spec")
end
