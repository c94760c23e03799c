-- forget: drop the ended jobs among the ids (ARGV from A: strict 1/0, then the ids).
-- Answer: {'ok', how many}, or with strict {'unknown', id} / {'active', id, status}: nothing
-- dropped.
local strict = ARGV[A] == '1'
if strict then
  for i = A + 1, #ARGV do
    local status = redis.call('HGET', jkey(ARGV[i]), 'status')
    if not status then return finish({'unknown', ARGV[i]}) end
    if not TERMINAL[status] then return finish({'active', ARGV[i], status}) end
  end
end
local count = 0
for i = A + 1, #ARGV do
  local status = redis.call('HGET', jkey(ARGV[i]), 'status')
  if status and TERMINAL[status] and drop(ARGV[i]) then count = count + 1 end
end
if count > 0 then CHANGED = true end
return finish({'ok', count})
