-- requeue: put a running attempt back to waiting, uncounted (ARGV from A: id, attempt).
-- Answer: 1 if it was put back, 0 if the attempt no longer held the job.
local id = ARGV[A]
local r = holding(id, tonumber(ARGV[A + 1]))
if not r then return finish(0) end
release(r)
unindex(r)
local attempts = redis.call('HINCRBY', jkey(id), 'attempts', -1)
redis.call('HDEL', jkey(id), 'worker')
set_status(id, r.seq, r.status, 'waiting')
if attempts == 0 and r.expires_at then
  redis.call('ZADD', P .. 'expiry', tonumber(r.expires_at), id)
end
consider(id)
CHANGED = true
return finish(1)
