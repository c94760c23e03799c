-- requeue: put a running attempt back to waiting, uncounted (ARGV from A: id, attempt).
-- Answer: 1 if it was put back, 0 if the attempt no longer held the job.
local id = ARGV[A]
local r = holding(id, tonumber(ARGV[A + 1]))
if not r then return finish(0) end
release(r)
local drop = unindex(r)
drop[#drop + 1] = 'worker'
local attempts = tonumber(r.attempts) - 1
set_status(id, r.seq, r.status, 'waiting', {'attempts', attempts}, drop)
if attempts == 0 and r.expires_at then
  redis.call('ZADD', P .. 'expiry', tonumber(r.expires_at), id)
end
consider(id)
CHANGED = true
return finish(1)
