-- recover: take back running jobs whose lease ran out (ARGV from A: (id, lease_until as read)
-- pairs the caller found expired and whose owner it found dead). Answer per job taken back:
-- id, task, attempt, worker, message, lost, final (1/0).
local answer = {}
for i = A, #ARGV, 2 do
  local id, seen = ARGV[i], ARGV[i + 1]
  local r = row(id, unpack(HELD))
  if r.status == 'running' and r.lease_until == seen and tonumber(seen) < NOW then
    local message, lost, final = take_back(r)
    append(answer, {id, r.task, tonumber(r.attempts), r.worker or false, message, lost,
      final and 1 or 0})
  end
end
return finish(answer)
