-- submit: store a batch of jobs, all or none (ARGV[A]: max_size or -1, ARGV[A+1]: how many,
-- then FIELDS arguments per job, in the order of SPEC below).
-- Answer: {'ok', id...} (each job's id, or the id of the job holding its unique key),
-- {'full', pending} (no room under max_size: nothing stored), or {'duplicate', id} /
-- {'unknown', dependency, id} (nothing stored).
local SPEC = {'id', 'task', 'mode', 'ref', 'payload', 'priority', 'rank', 'lane', 'stop', 'after',
  'exclusive', 'incompatible', 'timeout', 'retries', 'retry_delay', 'backoff', 'at',
  'expires_at', 'unique_key', 'unique_for', 'meta', 'mac', 'needs', 'holds', 'frees', 'caps'}
local max_size = tonumber(ARGV[A])
local count = tonumber(ARGV[A + 1])
local specs, in_batch = {}, {}
local base = A + 2
for i = 1, count do
  local s = {}
  for j, name in ipairs(SPEC) do s[name] = ARGV[base + (i - 1) * #SPEC + j - 1] end
  specs[i] = s
  in_batch[s.id] = true
end

tick(NOW)
-- unique keys: the holder of each (an earlier job of the batch holds it too)
local holders, taken = {}, {}
for i, s in ipairs(specs) do
  local key = s.unique_key
  if key ~= '' then
    local holder = taken[key]
    if not holder then
      local id = redis.call('HGET', P .. 'unique', key)
      if id then
        local status = redis.call('HGET', jkey(id), 'status')
        local untl = redis.call('HGET', P .. 'unique_until', key)
        if status and (not TERMINAL[status] or (untl and tonumber(untl) > NOW)) then holder = id end
      end
    end
    if holder then holders[i] = holder else taken[key] = s.id end
  end
end
local fresh, seen, aliases = {}, {}, {}
for i, s in ipairs(specs) do
  if holders[i] then aliases[s.id] = holders[i] else fresh[#fresh + 1] = s end
end
for _, s in ipairs(fresh) do
  if seen[s.id] or redis.call('EXISTS', jkey(s.id)) == 1 then
    return finish({'duplicate', s.id})
  end
  seen[s.id] = true
end
for _, s in ipairs(fresh) do
  for _, dep in ipairs(cjson.decode(s.after)) do
    if not in_batch[dep] and redis.call('EXISTS', jkey(dep)) == 0 then
      return finish({'unknown', dep, s.id})
    end
  end
end
if max_size >= 0 and #fresh > 0 then
  local pending = redis.call('ZCARD', P .. 's:waiting') + redis.call('ZCARD', P .. 's:scheduled')
  if pending > 0 and pending + #fresh > max_size then return finish({'full', pending}) end
end
local seq = redis.call('INCRBY', P .. 'seq', #fresh) - #fresh
for _, s in ipairs(fresh) do
  seq = seq + 1
  local deps, once = {}, {}
  for _, dep in ipairs(cjson.decode(s.after)) do
    dep = aliases[dep] or dep
    if not once[dep] then
      once[dep] = true
      deps[#deps + 1] = dep
    end
  end
  if s.after == '[]' then s.after = '' end
  insert(s, deps, seq)
end
cascade(advance_joined())
local answer = {'ok'}
for i, s in ipairs(specs) do answer[#answer + 1] = holders[i] or s.id end
return finish(answer)
