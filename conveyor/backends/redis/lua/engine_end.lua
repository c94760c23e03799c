-- The Redis engine, second part (scripts.py loads it right after lua/engine.lua, in the same
-- chunk: it uses that part's state and functions): a job's end and the cascade it sets off,
-- the end of an attempt (retries), insert, timers, leases, and a call's reply.

-- ---------------------------------------------------------------- end and cascade
local after_end  -- (defined below; cascade calls it)

-- known: the first ended job's status, unique_key, unique_for and lane, if the caller has them
local function cascade(ended, known)
  local work = {}
  append(work, ended)
  while #work > 0 do
    local id = table.remove(work)
    if known and known.id ~= id then known = nil end
    append(work, after_end(id, known))
    known = nil
  end
end

local function end_(id, status, how)
  -- how: result, error, traceback, at (default now), started; row: the job's HELD fields
  local r = how.row or row(id, 'status', 'mode', 'o', 'seq', 'parked', 'expires_at',
    'unique_key', 'unique_for', 'lane')
  local drop = unindex(r)
  local at = how.at or NOW
  local fields = {'ended', num(at)}
  if how.started then
    fields[#fields + 1] = 'started'
    fields[#fields + 1] = how.started
  end
  if status == 'finished' then
    if how.result then
      fields[#fields + 1] = 'result'
      fields[#fields + 1] = how.result
    end
    drop[#drop + 1] = 'error'
    drop[#drop + 1] = 'traceback'
  else
    fields[#fields + 1] = 'error'
    fields[#fields + 1] = how.error or ''
    if how.traceback then
      fields[#fields + 1] = 'traceback'
      fields[#fields + 1] = how.traceback
    else
      drop[#drop + 1] = 'traceback'
    end
    drop[#drop + 1] = 'result'
  end
  set_status(id, r.seq, r.status, status, fields, drop)
  redis.call('ZADD', P .. 'ended', at, string.sub(r.o, 17) .. id)
  cascade({id}, {id = id, status = status, unique_key = r.unique_key,
    unique_for = r.unique_for, lane = r.lane})
end

local function settle_dependents(id, state)
  local doomed = {}
  local key = P .. 'd:' .. id
  local dependents = redis.call('SMEMBERS', key)
  for _, child in ipairs(dependents) do
    local r = row(child, 'status', 'lane', 'o')
    if r.status and not TERMINAL[r.status] then
      if state == 'finished' then
        if redis.call('HINCRBY', jkey(child), 'pending', -1) <= 0 then
          redis.call('HDEL', jkey(child), 'pending')
          append(doomed, deps_done(r))
        end
      else
        cancel_quietly(child, cascade_reason(id, state))
        doomed[#doomed + 1] = child
      end
    end
  end
  if #dependents > 0 then redis.call('DEL', key) end
  return doomed
end

after_end = function(id, known)
  local r = known or row(id, 'status', 'unique_key', 'unique_for', 'lane')
  if r.unique_key and redis.call('HGET', P .. 'unique', r.unique_key) == id then
    if r.unique_for then
      redis.call('HSET', P .. 'unique_until', r.unique_key, num(NOW + tonumber(r.unique_for)))
    else
      redis.call('HDEL', P .. 'unique', r.unique_key)
      redis.call('HDEL', P .. 'unique_until', r.unique_key)
    end
  end
  local doomed = settle_dependents(id, r.status)
  if r.lane then
    local key = P .. 'lane:' .. r.lane
    local state = redis.call('HMGET', key, 'failed', 'current')
    if state[1] then
      if state[2] == id then
        redis.call('HSET', key, 'previous', id, 'failed', r.status ~= 'finished' and '1' or '0')
        redis.call('HDEL', key, 'current')
        state[2] = false
      end
      if not state[2] then append(doomed, advance_lane(r.lane)) end
    end
  end
  append(doomed, advance_joined())
  event(r.status, id)
  return doomed
end

-- ------------------------------------------------------------- end of an attempt
local function retry_delay(delay, backoff, failures)
  if delay <= 0 then return 0 end
  local value = delay * backoff ^ math.max(0, failures - 1)
  if value ~= value or value > MAX_SECONDS then return MAX_SECONDS end
  return value
end

local function schedule_retry(r, error, traceback)
  local delay = retry_delay(tonumber(r.retry_delay or '0'), tonumber(r.backoff or '1'),
    tonumber(r.attempts))
  local drop = unindex(r)
  local fields = {'error', error}
  if traceback then
    fields[3], fields[4] = 'traceback', traceback
  else
    drop[#drop + 1] = 'traceback'
  end
  if delay > 0 then
    fields[#fields + 1] = 'due'
    fields[#fields + 1] = num(NOW + delay)
    set_status(r.id, r.seq, r.status, 'scheduled', fields, drop)
    redis.call('ZADD', P .. 'due', NOW + delay, r.id)
    WOKEN[r.mode] = true  -- a new timer (see insert)
  else
    set_status(r.id, r.seq, r.status, 'waiting', fields, drop)
    consider(r.id)
  end
  event('retrying', r.id)
  return NOW + math.max(delay, 0)
end

-- --------------------------------------------------------------------- insert
-- s: the spec's fields (see submit.lua); deps: its dependencies (aliases applied, each once)
local function insert(s, deps, seq)
  local scheduled = s.at ~= '' and tonumber(s.at) > NOW
  local o = s.rank .. string.format('%012x', seq)
  local failed, failed_status = nil, nil
  local awaited = {}
  for _, dep in ipairs(deps) do
    local status = redis.call('HGET', jkey(dep), 'status')
    if status == 'finished' or not status then
      -- finished (or gone since): satisfied
    elseif TERMINAL[status] then
      if not failed then failed, failed_status = dep, status end
    else
      awaited[#awaited + 1] = dep
    end
  end
  local status = scheduled and 'scheduled' or 'waiting'
  local key = jkey(s.id)
  local values = {'status', status, 'id', s.id, 'seq', seq, 'o', o, 'task', s.task, 'mode', s.mode, 'ref', s.ref,
    'payload', s.payload, 'priority', s.priority, 'submitted', num(NOW),
    'needs', s.needs, 'holds', s.holds, 'frees', s.frees}
  local optional = {'lane', 'stop', 'after', 'exclusive', 'incompatible', 'timeout', 'retries',
    'retry_delay', 'backoff', 'expires_at', 'unique_key', 'unique_for', 'meta', 'mac'}
  for _, name in ipairs(optional) do
    if s[name] ~= '' then
      values[#values + 1] = name
      values[#values + 1] = s[name]
    end
  end
  if scheduled then
    values[#values + 1] = 'due'
    values[#values + 1] = s.at
  end
  if #awaited > 0 then
    values[#values + 1] = 'pending'
    values[#values + 1] = #awaited
  end
  redis.call('HSET', key, unpack(values))
  redis.call('ZADD', P .. 's:' .. status, seq, s.id)
  for _, capacity in ipairs(cjson.decode(s.caps)) do
    redis.call('HSET', P .. 'caps', capacity[1], capacity[3] .. '|' .. capacity[2])
  end
  if s.unique_key ~= '' then
    redis.call('HSET', P .. 'unique', s.unique_key, s.id)
    redis.call('HDEL', P .. 'unique_until', s.unique_key)
  end
  if scheduled then  -- a new timer: the claimers of its mode look at their next timer again
    redis.call('ZADD', P .. 'due', tonumber(s.at), s.id)
    WOKEN[s.mode] = true
  end
  if s.expires_at ~= '' then  -- a new timer too
    redis.call('ZADD', P .. 'expiry', tonumber(s.expires_at), s.id)
    WOKEN[s.mode] = true
  end
  event('queued', s.id)
  for _, dep in ipairs(awaited) do redis.call('SADD', P .. 'd:' .. dep, s.id) end
  if failed then
    end_(s.id, 'cancelled', {error = cascade_reason(failed, failed_status)})
  elseif #awaited == 0 and not scheduled and s.lane == '' then
    -- the common job (no lane, no dependency left, not delayed) is ready at once
    redis.call('ZADD', P .. 'r:' .. s.mode, 0, o .. s.id)
    made_ready(s.mode, s.id)
  elseif #awaited == 0 then
    local lane = nil
    if s.lane ~= '' then lane = s.lane end
    cascade(deps_done({id = s.id, lane = lane, o = o}))
  end
end

-- --------------------------------------------------------------------- timers
local function drop(id)  -- forget an ended job and its bookkeeping
  local r = row(id, 'status', 'seq', 'o')
  if not r.status then return false end
  redis.call('ZREM', P .. 's:' .. r.status, id)
  redis.call('ZREM', P .. 'ended', string.sub(r.o, 17) .. id)
  redis.call('DEL', jkey(id), P .. 'd:' .. id, P .. 'w:' .. id)
  return true
end

local function tick(now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'due', '-inf', now, 'LIMIT', 0, TICK_BATCH)) do
    local r = row(id, unpack(INDEXED))
    redis.call('ZREM', P .. 'due', id)
    if r.status == 'scheduled' then  -- its field due stays until it starts (see start)
      set_status(id, r.seq, r.status, 'waiting')
      consider(id)
    end
  end
  local expired = redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', now, 'LIMIT', 0, TICK_BATCH)
  for _, id in ipairs(expired) do
    local status = redis.call('HGET', jkey(id), 'status')
    redis.call('ZREM', P .. 'expiry', id)
    -- a cascade earlier in this loop may have ended it already
    if status == 'waiting' or status == 'scheduled' then
      end_(id, 'cancelled', {error = 'expired'})
    end
  end
  if TTL >= 0 then
    local old = redis.call('ZRANGEBYSCORE', P .. 'ended', '-inf', '(' .. num(now - TTL),
      'LIMIT', 0, TICK_BATCH)
    for _, m in ipairs(old) do
      if not drop(string.sub(m, 13)) then redis.call('ZREM', P .. 'ended', m) end
    end
  end
end

-- ------------------------------------------------------------------- leases
-- a job whose worker's lease ran out is waiting again, or failed once its workers were lost too
-- often; an attempt claimed ahead and never started is not counted. Returns the error, how
-- many times its workers were lost, and whether it failed for good.
local function take_back(r)
  release(r)
  -- a job handed to a slot that never took it (its process died): its hand-over goes too
  if r.ahead == '1' and r.worker then redis.call('DEL', P .. 'h:' .. r.worker) end
  local attempts = tonumber(r.attempts) - tonumber(r.ahead or '0')
  local lost = tonumber(r.lost or '0') + 1
  local key = jkey(r.id)
  redis.call('HSET', key, 'attempts', attempts, 'lost', lost, 'ahead', '0')
  local note = ''
  if r.ahead == '1' then note = ' (claimed ahead, never started: attempt not counted)' end
  local message = 'the lease of worker ' .. (r.worker or 'None') .. ' ran out' .. note
  local bound = tonumber(r.retries or '0') + LOST_LEASE_ALLOWANCE
  local final = attempts > bound or lost > bound
  if final then
    end_(r.id, 'failed', {error = 'WorkerLost: ' .. message, row = r})
  else
    set_status(r.id, r.seq, r.status, 'waiting', {'error', 'WorkerLost: ' .. message}, unindex(r))
    if attempts == 0 and r.expires_at then
      redis.call('ZADD', P .. 'expiry', tonumber(r.expires_at), r.id)
    end
    consider(r.id)
  end
  return message, lost, final
end

-- a running attempt back to waiting, not counted (a worker that stops; a job handed to a slot
-- that claims nothing): false if the attempt no longer holds the job
local function put_back(id, attempt)
  local r = holding(id, attempt)
  if not r then return false end
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
  return true
end

-- jobs of a mode made ready go straight to the idle slots of the mode (idle.lua), the one that
-- registered last first: each job is started for its slot, claimed ahead (its attempt counts
-- once the slot starts it), and put on the slot's hand-over key, where the slot blocks, so the
-- slot needs no claim of its own. Returns how many of `count` jobs found no slot (they wake
-- claimers through the markers): 0 once nothing more may start.
local function hand_over(mode, count)
  local key = P .. 'i:' .. mode
  local now = nil
  while count > 0 do
    local top = redis.call('ZPOPMAX', key)
    if #top == 0 then break end
    now = now or tonumber(redis.call('TIME')[1])
    if tonumber(top[2]) < now then  -- it and the rest expired: slots gone, or not renewed
      local gone = redis.call('ZRANGE', key, 0, -1)
      gone[#gone + 1] = top[1]
      redis.call('HDEL', P .. 'il', unpack(gone))
      redis.call('DEL', key)
      break
    end
    local r = next_startable(mode)
    if not r then
      redis.call('ZADD', key, top[2], top[1])  -- still idle
      return 0
    end
    local slot = top[1]
    -- the lease of the slot's worker, as it registered (the caller's may differ)
    local lease = tonumber(redis.call('HGET', P .. 'il', slot) or LEASE)
    redis.call('HDEL', P .. 'il', slot)
    local attempt = start(r, slot, true, lease)
    redis.call('ZADD', P .. 'h:' .. slot, 0, cmsgpack.pack({r.id, attempt, r.task, r.mode, r.ref,
      r.payload, r.timeout, r.mac}))
    count = count - 1
  end
  return count
end

-- ------------------------------------------------------------------ the reply
-- every entry script ends with finish(answer): each job made ready handed to an idle slot
-- (hand_over), or else a wake-up marker (up to MARKERS) in its mode's marker key, where idle
-- claimers block (BZPOPMIN: each marker wakes one of them); the change published on the
-- queue's channel (origin, the modes whose claimers must all look again, events, stops, the
-- ended jobs someone waits for); the events and their
-- snapshots returned, and whether anything changed (0, or the modes woken after a '*'): the
-- caller's own process counts its changes itself, once it emitted their events, not from the
-- channel. What only wakes claimers or stops running jobs is always published; any other change
-- only while some process needs it: the key `ends` (a process waits for jobs' ends, or relays
-- their events) or `all` (it needs every change); a quiet change (only QUIET events: jobs queued
-- or started, progress) only while `all` exists, and then marked q. A thread waiting for one
-- job gets a note of its end instead (event, n:<token>)
local function finish(answer)
  local changed = 0
  for mode, markers in pairs(READY) do
    local left = hand_over(mode, #markers / 2)
    if left > 0 then
      local key = P .. 'k:' .. mode
      redis.call('ZADD', key, unpack(markers, 1, 2 * left))
      redis.call('ZREMRANGEBYRANK', key, MARKERS, -1)
    end
  end
  if CHANGED or next(WOKEN) or next(READY) then
    changed = {'*'}
    for mode in pairs(WOKEN) do changed[#changed + 1] = mode end
    local wakes = #changed > 1 or #STOPS > 0
    local loud = wakes or LOUD or #EVENTS == 0
    if wakes or redis.call('EXISTS', P .. 'all') == 1
        or (loud and redis.call('EXISTS', P .. 'ends') == 1) then
      local names = {}
      for i = 1, #EVENTS, 3 do
        names[#names + 1] = EVENTS[i]
        names[#names + 1] = EVENTS[i + 1]
      end
      local message = {o = ORIGIN, e = names}
      if #changed > 1 then message.m = {unpack(changed, 2)} end
      if #STOPS > 0 then message.s = STOPS end
      if #ENDS > 0 then message.r = ENDS end
      if not loud then message.q = 1 end
      redis.call('PUBLISH', CHANNEL, cjson.encode(message))
    end
  end
  return {answer, EVENTS, changed}
end
