-- Argo CD health of a safehold.dev Restore: Completed (a dry run included) is Healthy, Failed is
-- Degraded, Pending, Planning, Planned and Running are Progressing.
local hs = {status = "Progressing", message = "waiting for the operator"}
if obj.status == nil or obj.status.phase == nil then
  return hs
end
local message = nil
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Completed" then
      message = c.message
      if c.reason ~= nil and c.reason ~= "" then
        message = c.reason .. (message ~= nil and (": " .. message) or "")
      end
    end
  end
end
local phase = obj.status.phase
if phase == "Completed" then
  hs.status = "Healthy"
  hs.message = message or "restore completed"
elseif phase == "Failed" then
  hs.status = "Degraded"
  if obj.status.error ~= nil and obj.status.error.message ~= nil then
    hs.message = (obj.status.error.errorClass or "Failed") .. ": " .. obj.status.error.message
  else
    hs.message = message or "the restore failed"
  end
else
  hs.message = message or ("phase " .. phase)
end
return hs
