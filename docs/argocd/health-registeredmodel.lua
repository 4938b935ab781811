-- Argo CD health of a mlflow.operator.dev RegisteredModel (the Ready condition, which follows Synced).
if ready == nil or ready.status == "Unknown" then
  return verdict("Progressing", ready ~= nil and describe(ready) or "Waiting for the Ready condition")
elseif ready.status == "True" then
  return verdict("Healthy", describe(ready))
end
-- RegistryUnavailable, Unauthorized, VersionNotFound, a missing Secret: the registry is not as the spec says.
return verdict("Degraded", describe(ready))
