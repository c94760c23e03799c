-- The Redis engine: the rules of conveyor.rules on the keys of conveyor/backends/redis/keys.py.
--
-- The head of conveyor's function library: scripts.py registers each entry script
-- (lua/<entry>.lua) as a function of it that first calls begin(), so every state change is one
-- function call, atomic across every client. It mirrors the SQLite and memory engines step by
-- step, under the names of rules.ENGINE_STEPS ("end" is a Lua keyword: end_). The library is
-- loaded once per server: its functions are built once, not at every call. It knows keys, not exclusive groups, incompatible names or limits: a job's plan (needs, holds,
-- frees) was compiled by conveyor/rules/plan.py at submit and stored in the job's hash.
--
-- The arguments of every call (begin): prefix, now, lease, result ttl (-1: none), wanted events
-- (a comma list: the events the caller emits locally, whose job snapshots the reply carries),
-- origin (the calling backend's id, so its own events published on the channel are not relayed
-- back to it), the queue's channel (its name holds the database number: pub/sub channels are
-- shared by every database of a server); the entry's own arguments start at ARGV[A].

-- the step's arguments and what it collects, set by begin() at the start of every call
local P, NOW, LEASE, TTL, WANT, ORIGIN, CHANNEL
local A = 8
local EVENTS    -- name, id, snapshot (a flat HGETALL, or 0), ...
local WOKEN     -- modes whose claimers a change may let start a job (all of them look again)
local READY     -- mode -> the jobs of it this step made ready (each wakes one claimer)
local CHANGED   -- whether anything changed (a message is published)
local LOUD      -- whether it ended a job or changed an ended one, or set no event at all
local JOINED    -- lanes joined in this step, advanced once all have joined
local STOPS     -- job, worker slot: running jobs cancelled (their workers stop them)
local ENDS      -- job, snapshot: the ended jobs someone waits for (field w), in the message

--: 100 years, the longest delay (conveyor.job.MAX_SECONDS)
local MAX_SECONDS = 100 * 365.25 * 86400
--: a job whose worker vanished this many times more than its retries allow is failed
local LOST_LEASE_ALLOWANCE = 5
--: the most timers of each kind one script applies (the rest: the next call)
local TICK_BATCH = 1000
--: the most wake-up markers of a mode at a time (its marker key's members: job ids)
local MARKERS = 64
local MODES_ALL = {'thread', 'process', 'async', 'inline'}
local TERMINAL = {finished = true, failed = true, cancelled = true}
--: the events of changes that end no job and touch no ended one: a step made of them alone is
--: published only while some process needs every change (key `all`, see finish)
local QUIET = {queued = true, started = true, progress = true}
--: milliseconds a note of a job's end waits for the thread it was left for (n:<token>)
local NOTE_TTL_MS = 60000

local function begin(args)
  P, NOW, LEASE, TTL = args[1], tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  WANT = {}
  for name in string.gmatch(args[5], '[^,]+') do WANT[name] = true end
  ORIGIN, CHANNEL = args[6], args[7]
  EVENTS, WOKEN, READY, CHANGED, JOINED, STOPS, ENDS = {}, {}, {}, false, {}, {}, {}
  LOUD = false
end

local function num(x) return string.format('%.17g', x) end
local function jkey(id) return P .. 'j:' .. id end
local function append(list, more) for _, v in ipairs(more) do list[#list + 1] = v end return list end

local function row(id, ...)
  local names = {...}
  local values = redis.call('HMGET', jkey(id), unpack(names))
  local r = {id = id}
  for i, name in ipairs(names) do r[name] = values[i] end
  return r
end

local function event(name, id)
  CHANGED = true
  if not QUIET[name] then LOUD = true end
  local snapshot = 0
  if WANT[name] then snapshot = redis.call('HGETALL', jkey(id)) end
  if TERMINAL[name] and redis.call('HGET', jkey(id), 'w') then
    if snapshot == 0 then snapshot = redis.call('HGETALL', jkey(id)) end
    ENDS[#ENDS + 1] = id
    ENDS[#ENDS + 1] = snapshot
    -- the threads that wait for it (read.lua, 'watch') each get a note of its end
    local waiters = P .. 'w:' .. id
    local tokens = redis.call('SMEMBERS', waiters)
    if #tokens > 0 then
      local note = cjson.encode({id, snapshot})
      for _, token in ipairs(tokens) do
        redis.call('ZADD', P .. 'n:' .. token, 0, note)
        redis.call('PEXPIRE', P .. 'n:' .. token, NOTE_TTL_MS)
      end
      redis.call('DEL', waiters)
    end
  end
  EVENTS[#EVENTS + 1] = name
  EVENTS[#EVENTS + 1] = id
  EVENTS[#EVENTS + 1] = snapshot
end

-- Python's repr of a str, as rules.cascade_reason and rules.lane_reason write it
local function pyrepr(s)
  local quote = "'"
  if string.find(s, "'", 1, true) and not string.find(s, '"', 1, true) then quote = '"' end
  local out = string.gsub(s, "[%z\1-\31\127\\'\"]", function(c)
    if c == '\\' then return '\\\\' end
    if c == '\n' then return '\\n' end
    if c == '\r' then return '\\r' end
    if c == '\t' then return '\\t' end
    if c == quote then return '\\' .. c end
    if c == "'" or c == '"' then return c end
    return string.format('\\x%02x', string.byte(c))
  end)
  return quote .. out .. quote
end

local function cascade_reason(dependency, status)
  return 'dependency ' .. pyrepr(dependency) .. ' ' .. status
end

local function lane_name(lane)  -- a lane's JSON text as Python's repr shows it
  if string.sub(lane, 1, 1) == '"' then return pyrepr(cjson.decode(lane)) end
  return lane
end

-- the job's place in the ready index, a park key's set or its lane: (priority, seq) in the
-- first 28 characters of the member (score 0: lexicographic order), then the id
local function member(r) return (r.o or '') .. r.id end
local function id_of(m) return string.sub(m, 29) end

-- a job's status changes: its status sets, and its hash in one HSET (the status and the flat
-- list `fields`) and one HDEL (the fields of `drop`)
local function set_status(id, seq, old, new, fields, drop)
  if old then redis.call('ZREM', P .. 's:' .. old, id) end
  redis.call('ZADD', P .. 's:' .. new, seq, id)
  local key = jkey(id)
  if fields then
    redis.call('HSET', key, 'status', new, unpack(fields))
  else
    redis.call('HSET', key, 'status', new)
  end
  if drop and #drop > 0 then redis.call('HDEL', key, unpack(drop)) end
end

-- take a job out of every index its status put it in (before it changes status); return the
-- fields of its hash that go with them (for set_status to drop)
local function unindex(r)
  local drop = {}
  if r.status == 'waiting' then
    redis.call('ZREM', P .. 'r:' .. r.mode, member(r))
    drop[1] = 'due'  -- when a delayed job fell due (tick keeps it until it leaves waiting)
    if r.parked then
      redis.call('ZREM', P .. 'p:' .. r.mode .. ':' .. r.parked, member(r))
      redis.call('DECR', P .. 'parked')
      drop[2] = 'parked'
    end
  elseif r.status == 'scheduled' then
    redis.call('ZREM', P .. 'due', r.id)
    drop[1] = 'due'
  elseif r.status == 'running' then
    redis.call('ZREM', P .. 'leases', r.id)
    drop[1] = 'lease_until'
  end
  if r.expires_at then redis.call('ZREM', P .. 'expiry', r.id) end
  return drop
end

local INDEXED = {'status', 'mode', 'o', 'seq', 'parked', 'expires_at'}

-- ------------------------------------------------------------------ lanes, ready
local function made_ready(mode, id)  -- a marker of the job (see finish), up to MARKERS
  local ready = READY[mode]
  if not ready then
    ready = {}
    READY[mode] = ready
  end
  if #ready < 2 * MARKERS then
    ready[#ready + 1] = 0
    ready[#ready + 1] = id
  end
end

local function lane_top(lane)
  local m = redis.call('ZRANGE', P .. 'lm:' .. lane, 0, 0)[1]
  if m then return m, id_of(m) end
  return nil, nil
end

local function lane_allows(lane, id)
  local state = redis.call('HMGET', P .. 'lane:' .. lane, 'failed', 'current')
  if not state[1] then return false end
  if state[2] then return state[2] == id end
  local _, top = lane_top(lane)
  return top == id
end

local function consider(id)
  local r = row(id, 'status', 'pending', 'parked', 'lane', 'mode', 'o')
  if r.status ~= 'waiting' or (r.pending and tonumber(r.pending) > 0) or r.parked then return end
  if r.lane and not lane_allows(r.lane, id) then return end
  redis.call('ZADD', P .. 'r:' .. r.mode, 0, member(r))
  made_ready(r.mode, id)
end

local function join_lane(r)
  redis.call('ZADD', P .. 'lm:' .. r.lane, 0, member(r))
  redis.call('HSETNX', P .. 'lane:' .. r.lane, 'failed', '0')
  for _, lane in ipairs(JOINED) do if lane == r.lane then return {} end end
  JOINED[#JOINED + 1] = r.lane
  return {}
end

local function deps_done(r)
  if not r.lane then
    consider(r.id)
    return {}
  end
  return join_lane(r)
end

local function cancel_quietly(id, reason)
  local r = row(id, unpack(INDEXED))
  local drop = unindex(r)
  drop[#drop + 1] = 'traceback'
  drop[#drop + 1] = 'result'
  set_status(id, r.seq, r.status, 'cancelled', {'ended', num(NOW), 'error', reason}, drop)
  redis.call('ZADD', P .. 'ended', NOW, string.sub(r.o, 17) .. id)
end

local function advance_lane(lane)
  local key = P .. 'lane:' .. lane
  local state = redis.call('HMGET', key, 'failed', 'current', 'previous')
  if not state[1] or state[2] then return {} end
  local previous, failed = state[3], state[1] == '1'
  local doomed = {}
  while true do
    local m, top = lane_top(lane)
    if not m then break end
    local r = row(top, 'status', 'stop')
    if not r.status or TERMINAL[r.status] then
      redis.call('ZREM', P .. 'lm:' .. lane, m)
      previous, failed = top, true
    elseif failed and r.stop then
      cancel_quietly(top, 'previous job ' .. pyrepr(previous or '?') .. ' in lane '
        .. lane_name(lane) .. ' failed or was cancelled')
      doomed[#doomed + 1] = top
    else
      consider(top)
      break
    end
  end
  if previous then redis.call('HSET', key, 'previous', previous) end
  redis.call('HSET', key, 'failed', failed and '1' or '0')
  if not failed and redis.call('ZCARD', P .. 'lm:' .. lane) == 0 then
    -- an empty lane whose last job failed is kept, so that a stop_on_lane_error job put later
    -- still sees the failure
    redis.call('DEL', key)
  end
  return doomed
end

local function advance_joined()
  local doomed = {}
  while #JOINED > 0 do
    append(doomed, advance_lane(table.remove(JOINED, 1)))
  end
  return doomed
end

-- ------------------------------------------------------- start: ready, parked, held
local function held(key)
  return tonumber(redis.call('HGET', P .. 'held', key) or '0')
end

local function is_free(park)
  if string.sub(park, 1, 4) == 'job:' then
    return redis.call('HGET', jkey(string.sub(park, 5)), 'status') ~= 'running'
  end
  local capacity = redis.call('HGET', P .. 'caps', park)
  if not capacity then return held(park) < 1 end
  local bar = string.find(capacity, '|', 1, true)
  return held(string.sub(capacity, bar + 1)) < tonumber(string.sub(capacity, 1, bar - 1))
end

local function conflict(r)
  local needs, counted, at = cjson.decode(r.needs), {}, {}
  for i, need in ipairs(needs) do
    local key = need
    if type(need) == 'table' then key = need[1] end
    if string.sub(key, 1, 4) ~= 'job:' then
      counted[#counted + 1] = key
      at[i] = #counted
    end
  end
  local counts = {}
  if #counted > 0 then counts = redis.call('HMGET', P .. 'held', unpack(counted)) end
  for i, need in ipairs(needs) do
    local key, capacity, park = need, 1, need
    if type(need) == 'table' then key, capacity, park = need[1], need[2], need[3] end
    if not at[i] then
      if redis.call('HGET', jkey(string.sub(key, 5)), 'status') == 'running' then return park end
    elseif tonumber(counts[at[i]] or '0') >= capacity then
      return park
    end
  end
  return nil
end

local function park(r, blocker)
  redis.call('ZREM', P .. 'r:' .. r.mode, member(r))
  if r.parked then
    redis.call('ZREM', P .. 'p:' .. r.mode .. ':' .. r.parked, member(r))
    redis.call('DECR', P .. 'parked')
  end
  if blocker then
    redis.call('ZADD', P .. 'p:' .. r.mode .. ':' .. blocker, 0, member(r))
    redis.call('INCR', P .. 'parked')
    redis.call('HSET', jkey(r.id), 'parked', blocker)
  elseif r.parked then
    redis.call('HDEL', jkey(r.id), 'parked')
  end
end

local CLAIMED = {'status', 'mode', 'o', 'seq', 'parked', 'expires_at', 'lane', 'needs', 'holds',
  'attempts', 'task', 'ref', 'payload', 'timeout', 'mac', 'due'}

local function next_startable(mode)
  while true do
    local best = redis.call('ZRANGE', P .. 'r:' .. mode, 0, 0)[1]
    for _, key in ipairs(redis.call('SMEMBERS', P .. 'freed:' .. mode)) do
      local top = redis.call('ZRANGE', P .. 'p:' .. mode .. ':' .. key, 0, 0)[1]
      if not top or not is_free(key) then
        redis.call('SREM', P .. 'freed:' .. mode, key)
      elseif not best or string.sub(top, 1, 28) < string.sub(best, 1, 28) then
        best = top
      end
    end
    if not best then return nil end
    local r = row(id_of(best), unpack(CLAIMED))
    local stale = r.status ~= 'waiting' or r.mode ~= mode or member(r) ~= best
      or (r.lane and not lane_allows(r.lane, r.id))
    local blocker = nil
    if not stale then blocker = conflict(r) end
    if not stale and not blocker then return r end
    if r.status and member(r) == best then
      park(r, blocker)
    else  -- an entry of a job gone or changed: drop it wherever it is
      redis.call('ZREM', P .. 'r:' .. mode, best)
      if r.parked then redis.call('ZREM', P .. 'p:' .. mode .. ':' .. r.parked, best) end
    end
  end
end

local function hold(keys, delta)
  for _, key in ipairs(keys) do redis.call('HINCRBY', P .. 'held', key, delta) end
end

-- lease: the claiming worker's (default: the caller's, LEASE)
local function start(r, worker, ahead, lease)
  local id = r.id
  local drop = unindex(r)
  drop[#drop + 1] = 'progress'  -- a new attempt: the last one's progress is cleared
  drop[#drop + 1] = 'progress_message'
  local attempts = tonumber(r.attempts or '0') + 1
  local until_ = NOW + (lease or LEASE)
  -- a step's NOW is its caller's clock when it sent the step: a step sent before a delayed job
  -- fell due may run after another step made it due, and it starts no earlier than that
  local started = NOW
  if r.due and tonumber(r.due) > NOW then started = tonumber(r.due) end
  set_status(id, r.seq, r.status, 'running', {'attempts', attempts, 'ahead', ahead and '1' or '0',
    'started', num(started), 'worker', worker, 'lease_until', num(until_)}, drop)
  redis.call('ZADD', P .. 'leases', until_, id)
  hold(cjson.decode(r.holds), 1)
  if r.lane then
    local key = P .. 'lane:' .. r.lane
    if redis.call('HGET', key, 'current') ~= id then
      redis.call('ZREM', P .. 'lm:' .. r.lane, member(r))
      redis.call('HSET', key, 'current', id, 'failed', redis.call('HGET', key, 'failed') or '0')
    end
  end
  event('started', id)
  return attempts
end

local function release(r)
  hold(cjson.decode(r.holds), -1)
  if tonumber(redis.call('GET', P .. 'parked') or '0') <= 0 then return end  -- nothing to wake
  for _, key in ipairs(cjson.decode(r.frees)) do
    for _, mode in ipairs(MODES_ALL) do
      if redis.call('EXISTS', P .. 'p:' .. mode .. ':' .. key) == 1 then
        redis.call('SADD', P .. 'freed:' .. mode, key)
        WOKEN[mode] = true
      end
    end
  end
end

local HELD = {'status', 'mode', 'o', 'seq', 'parked', 'expires_at', 'attempts', 'holds', 'frees',
  'retries', 'retry_delay', 'backoff', 'worker', 'ahead', 'lost', 'task', 'lease_until',
  'unique_key', 'unique_for', 'lane'}

-- what ending a finished attempt reads (HELD: any attempt)
local FINISHING = {'status', 'attempts', 'holds', 'frees', 'o', 'seq', 'unique_key', 'unique_for',
  'lane'}

local function holding(id, attempt, fields)
  local r = row(id, unpack(fields or HELD))
  if r.status ~= 'running' or tonumber(r.attempts) ~= attempt then return nil end
  return r
end

