-- read: apply the timers due, then read (ARGV from A: what, then its arguments):
-- 'ids' id... -> snapshots (a flat HGETALL, or 0 for a job that does not exist; a job not
-- ended is marked as waited for, field w: the message of its end carries its snapshot);
-- 'watch' token id -> as 'ids' for one job, and the thread of `token` gets a note of its end
-- (n:<token>, see event);
-- 'status' s -> snapshots of its jobs in submission order; 'all' -> every job's, in
-- submission order; 'counts' -> the count of each status; 'outcomes' id... -> per job
-- status, result, error (false for a job that does not exist); 'timer' -> the next timer.
local what = ARGV[A]
tick(NOW)
local STATUSES = {'waiting', 'scheduled', 'running', 'finished', 'failed', 'cancelled'}
local answer = {}
local first = A + 1
if what == 'watch' then first = A + 2 end
if what == 'ids' or what == 'watch' then
  for i = first, #ARGV do
    local snapshot = redis.call('HGETALL', jkey(ARGV[i]))
    if #snapshot == 0 then
      snapshot = 0
    else
      local status, waited = nil, false
      for j = 1, #snapshot, 2 do
        if snapshot[j] == 'status' then status = snapshot[j + 1] end
        if snapshot[j] == 'w' then waited = true end
      end
      if not waited and not TERMINAL[status] then redis.call('HSET', jkey(ARGV[i]), 'w', '1') end
      if what == 'watch' and not TERMINAL[status] then
        redis.call('SADD', P .. 'w:' .. ARGV[i], ARGV[A + 1])
      end
    end
    answer[#answer + 1] = snapshot
  end
elseif what == 'outcomes' then
  for i = A + 1, #ARGV do
    local r = redis.call('HMGET', jkey(ARGV[i]), 'status', 'result', 'error')
    answer[#answer + 1] = r[1]
    answer[#answer + 1] = r[2]
    answer[#answer + 1] = r[3]
  end
elseif what == 'status' or what == 'all' then
  local ids = {}
  if what == 'status' then
    ids = redis.call('ZRANGE', P .. 's:' .. ARGV[A + 1], 0, -1)
  else
    local all = {}
    for _, status in ipairs(STATUSES) do
      local found = redis.call('ZRANGE', P .. 's:' .. status, 0, -1, 'WITHSCORES')
      for j = 1, #found, 2 do all[#all + 1] = {tonumber(found[j + 1]), found[j]} end
    end
    table.sort(all, function(a, b) return a[1] < b[1] end)
    for j, pair in ipairs(all) do ids[j] = pair[2] end
  end
  for _, id in ipairs(ids) do answer[#answer + 1] = redis.call('HGETALL', jkey(id)) end
elseif what == 'counts' then
  for _, status in ipairs(STATUSES) do
    answer[#answer + 1] = status
    answer[#answer + 1] = redis.call('ZCARD', P .. 's:' .. status)
  end
elseif what == 'timer' then
  local due = redis.call('ZRANGE', P .. 'due', 0, 0, 'WITHSCORES')[2]
  local expiry = redis.call('ZRANGE', P .. 'expiry', 0, 0, 'WITHSCORES')[2]
  local timer = due
  if expiry and (not timer or tonumber(expiry) < tonumber(timer)) then timer = expiry end
  if timer then answer[1] = timer end
end
return finish(answer)
