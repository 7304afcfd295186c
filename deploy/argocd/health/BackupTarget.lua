-- Argo CD health of a safehold.dev BackupTarget, from its Ready condition (the verdict of the
-- last check Job): True is Healthy, False is Degraded, Unknown (a check is running) or a spec
-- newer than the verdict is Progressing. A Ready target whose pointInTime log streamer fails
-- (PointInTime False) is Degraded: its recoverable window stops growing.
local hs = {status = "Progressing", message = "waiting for the first check"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    local seen = c.observedGeneration or obj.status.observedGeneration
    if generation ~= nil and seen ~= nil and seen < generation then
      hs.message = "the spec changed: waiting for a new check"
      return hs
    end
    local text = (c.reason or "") .. (c.message ~= nil and (": " .. c.message) or "")
    if c.status == "True" then
      hs.status = "Healthy"
      for _, p in ipairs(obj.status.conditions) do
        if p.type == "PointInTime" and p.status == "False" then
          hs.status = "Degraded"
          text = "PointInTime " .. (p.reason or "") .. (p.message ~= nil and (": " .. p.message) or "")
        end
      end
    elseif c.status == "False" then
      hs.status = "Degraded"
    end
    hs.message = text
    return hs
  end
end
return hs
