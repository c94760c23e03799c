-- heartbeat: renew the leases of the jobs a worker runs and its last_seen (ARGV from A:
-- worker, then the ids). Answer: the ids it no longer holds (cancelled, taken back).
local worker = ARGV[A]
local prefix = worker .. '/'
redis.call('HSET', P .. 'seen', worker, num(NOW))
local lost = {}
for i = A + 1, #ARGV do
  local id = ARGV[i]
  local r = row(id, 'status', 'worker')
  if r.status ~= 'running' or string.sub(r.worker or '', 1, #prefix) ~= prefix then
    lost[#lost + 1] = id
  else
    redis.call('HSET', jkey(id), 'lease_until', num(NOW + LEASE))
    redis.call('ZADD', P .. 'leases', NOW + LEASE, id)
  end
end
return finish(lost)
