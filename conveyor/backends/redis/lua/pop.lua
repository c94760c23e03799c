-- pop: remove and return up to ARGV[A] (-1: all) ended jobs, in the order they ended.
-- Answer: their snapshots (flat HGETALLs).
tick(NOW)
local limit = tonumber(ARGV[A])
local answer = {}
for _, m in ipairs(redis.call('ZRANGE', P .. 'ended', 0, limit < 0 and -1 or limit - 1)) do
  local id = string.sub(m, 13)
  local snapshot = redis.call('HGETALL', jkey(id))
  if #snapshot > 0 then answer[#answer + 1] = snapshot end
  if not drop(id) then redis.call('ZREM', P .. 'ended', m) end
end
if #answer > 0 then CHANGED = true end
return finish(answer)
