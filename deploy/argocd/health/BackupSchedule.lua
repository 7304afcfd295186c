-- Argo CD health of a safehold.dev BackupSchedule: suspended is Suspended; a Ready condition
-- False is Degraded; a spec newer than the status, or no status yet, is Progressing; else Healthy.
local hs = {status = "Progressing", message = "waiting for the operator"}
if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "suspended: no new backups are taken"
  return hs
end
if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < generation then
  hs.message = "the spec changed: waiting for the operator"
  return hs
end
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" and c.status == "False" then
      hs.status = "Degraded"
      hs.message = (c.reason or "") .. (c.message ~= nil and (": " .. c.message) or "")
      return hs
    end
  end
end
if obj.status.observedGeneration == nil then
  return hs
end
hs.status = "Healthy"
hs.message = "scheduled"
return hs
