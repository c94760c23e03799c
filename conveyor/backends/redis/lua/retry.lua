-- retry: put a failed or cancelled job back to waiting (ARGV from A: id, its ended time as
-- the caller read it, its meta with the history entry the caller added).
-- Answer: {'ok'}, {'unknown'}, {'changed'} (it changed since the caller read it: read again),
-- {'status', status}, {'dependency', dep, status}, {'unique', holder, key}: nothing changed.
local id, ended, meta = ARGV[A], ARGV[A + 1], ARGV[A + 2]
tick(NOW)
local r = row(id, 'status', 'ended', 'after', 'unique_key', 'lane', 'o', 'seq', 'expires_at')
if not r.status then return finish({'unknown'}) end
if r.status ~= 'failed' and r.status ~= 'cancelled' then return finish({'status', r.status}) end
if (r.ended or '') ~= ended then return finish({'changed'}) end
local awaited = {}
for _, dep in ipairs(cjson.decode(r.after or '[]')) do
  local status = redis.call('HGET', jkey(dep), 'status')
  if status and status ~= 'finished' then
    if TERMINAL[status] then return finish({'dependency', dep, status}) end
    awaited[#awaited + 1] = dep
  end
end
if r.unique_key then
  local holder = redis.call('HGET', P .. 'unique', r.unique_key)
  if holder and holder ~= id then
    local status = redis.call('HGET', jkey(holder), 'status')
    local untl = redis.call('HGET', P .. 'unique_until', r.unique_key)
    if status and (not TERMINAL[status] or (untl and tonumber(untl) > NOW)) then
      return finish({'unique', holder, r.unique_key})
    end
  end
  redis.call('HSET', P .. 'unique', r.unique_key, id)
  redis.call('HDEL', P .. 'unique_until', r.unique_key)
end
local key = jkey(id)
redis.call('ZREM', P .. 'ended', string.sub(r.o, 17) .. id)
set_status(id, r.seq, r.status, 'waiting')
redis.call('HSET', key, 'attempts', 0, 'meta', meta)
redis.call('HDEL', key, 'lost', 'ahead', 'parked', 'due', 'worker', 'lease_until', 'started',
  'ended', 'result', 'error', 'traceback', 'pending')
if r.expires_at then
  if tonumber(r.expires_at) <= NOW then
    redis.call('HDEL', key, 'expires_at')
  else
    redis.call('ZADD', P .. 'expiry', tonumber(r.expires_at), id)
  end
end
if #awaited > 0 then redis.call('HSET', key, 'pending', #awaited) end
for _, dep in ipairs(awaited) do redis.call('SADD', P .. 'd:' .. dep, id) end
event('queued', id)
LOUD = true  -- an ended job is active again: a wait for ends must look
if #awaited > 0 then  -- it joins its lane's order once its dependencies finished
  if r.lane then redis.call('ZREM', P .. 'lm:' .. r.lane, member(r)) end
elseif r.lane then
  redis.call('ZADD', P .. 'lm:' .. r.lane, 0, member(r))
  local lane = P .. 'lane:' .. r.lane
  redis.call('HSETNX', lane, 'failed', '0')
  -- an idle lane forgets its last failure (the user resumes it)
  if not redis.call('HGET', lane, 'current') then redis.call('HSET', lane, 'failed', '0') end
  cascade(advance_lane(r.lane))
else
  consider(id)
end
return finish({'ok'})
