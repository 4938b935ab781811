-- Argo CD health of a mlflow.operator.dev RegisteredModel (the Ready condition, which follows Synced).
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = ready ~= nil and describe(ready) or "Waiting for the Ready condition"
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
else
  -- RegistryUnavailable, Unauthorized, VersionNotFound, a missing Secret: the registry is not as the spec says.
  hs.status = "Degraded"
  hs.message = describe(ready)
end
return hs
