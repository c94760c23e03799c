-- purge: drop the jobs of some statuses (of a task) that ended -- or, not started, were
-- submitted -- before a time; waiting and scheduled ones are cancelled first, with the
-- cascade (ARGV from A: task or '', before or '', then the statuses). Answer: how many.
local task, before = ARGV[A], ARGV[A + 1]
tick(NOW)
local chosen = {}
for i = A + 2, #ARGV do
  local found = redis.call('ZRANGE', P .. 's:' .. ARGV[i], 0, -1, 'WITHSCORES')
  for j = 1, #found, 2 do
    local r = row(found[j], 'task', 'status', 'submitted', 'ended')
    local moment = r.submitted
    if TERMINAL[r.status] then moment = r.ended end
    if (task == '' or r.task == task)
        and (before == '' or (moment and tonumber(moment) < tonumber(before))) then
      chosen[#chosen + 1] = {tonumber(found[j + 1]), found[j]}
    end
  end
end
table.sort(chosen, function(a, b) return a[1] < b[1] end)
for _, pair in ipairs(chosen) do
  local status = redis.call('HGET', jkey(pair[2]), 'status')
  -- an earlier purged job's cascade may have cancelled it already
  if status and not TERMINAL[status] then end_(pair[2], 'cancelled', {error = 'purged'}) end
end
for _, pair in ipairs(chosen) do drop(pair[2]) end
if #chosen > 0 then CHANGED = true end
return finish(#chosen)
