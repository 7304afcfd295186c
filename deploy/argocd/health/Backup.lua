-- Argo CD health of a safehold.dev Backup: phase Completed is Healthy, Failed is Degraded
-- (with the runner's error), PartiallyFailed is Degraded (naming the databases that failed),
-- Pending and Running are Progressing.
local hs = {status = "Progressing", message = "waiting for the operator"}
if obj.status == nil or obj.status.phase == nil then
  return hs
end
local function completed_message()
  if obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == "Completed" and c.message ~= nil then
        return c.message
      end
    end
  end
  return nil
end
local phase = obj.status.phase
if phase == "Completed" then
  hs.status = "Healthy"
  hs.message = "backup " .. (obj.status.backupId or "") .. " completed"
  if obj.status.size ~= nil then
    hs.message = hs.message .. " (" .. obj.status.size .. ")"
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  if obj.status.error ~= nil and obj.status.error.message ~= nil then
    hs.message = (obj.status.error.errorClass or "Failed") .. ": " .. obj.status.error.message
  else
    hs.message = completed_message() or "the backup failed"
  end
elseif phase == "PartiallyFailed" then
  hs.status = "Degraded"
  hs.message = "partially failed: " .. (completed_message() or "some databases were not backed up")
elseif phase == "Running" then
  hs.message = completed_message() or ("runner Job " .. (obj.status.jobName or "") .. " is running")
else
  hs.message = completed_message() or ("phase " .. phase)
end
return hs
