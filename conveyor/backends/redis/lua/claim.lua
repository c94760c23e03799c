-- report and claim, one step: the jobs claimed ahead that slots started, the reports, then a
-- claim (first the job handed to the slot while it idled, if any). ARGV from A: worker, mode,
-- limit, ahead, n started, (id, attempt) * n, n reports, (kind F|X, id, attempt, result,
-- started, ended, error, traceback, final) * n.
-- Answer: {recorded (per report: '0' dropped, '1' recorded, else the retry time), claimed
-- (per job: id, attempt, task, mode, ref, payload, timeout, mac)}.
local worker, mode = ARGV[A], ARGV[A + 1]
local limit, ahead = tonumber(ARGV[A + 2]), tonumber(ARGV[A + 3])
-- the slot idles no more (idle.lua); a job handed to it meanwhile is claimed first
if redis.call('ZREM', P .. 'i:' .. mode, worker) == 1 then
  redis.call('HDEL', P .. 'il', worker)
end
local handed = redis.call('ZRANGE', P .. 'h:' .. worker, 0, -1)
if #handed > 0 then redis.call('DEL', P .. 'h:' .. worker) end
local i = A + 4
local started = tonumber(ARGV[i])
i = i + 1
if started > 0 then
  local owner = string.match(worker, '^(.*/)') or ''
  for _ = 1, started do
    local id, attempt = ARGV[i], tonumber(ARGV[i + 1])
    i = i + 2
    local r = row(id, 'status', 'attempts', 'worker')
    if r.status == 'running' and tonumber(r.attempts) == attempt
        and string.sub(r.worker or '', 1, #owner) == owner then
      redis.call('HSET', jkey(id), 'ahead', '0')
    end
  end
end
local recorded = {}
local reports = tonumber(ARGV[i])
i = i + 1
for _ = 1, reports do
  local kind, id, attempt = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local result, began, ended = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local error, traceback, final = ARGV[i + 6], ARGV[i + 7], ARGV[i + 8] == '1'
  i = i + 9
  local at = nil
  if ended ~= '' then at = tonumber(ended) end
  if traceback == '' then traceback = nil end
  local r = holding(id, attempt, kind == 'F' and FINISHING or HELD)
  if not r then
    recorded[#recorded + 1] = '0'  -- cancelled, recovered or timed out meanwhile: dropped
  else
    release(r)
    if began == '' then began = nil end
    if kind == 'F' then
      end_(id, 'finished', {result = result, at = at, started = began, row = r})
      recorded[#recorded + 1] = '1'
    elseif not final and tonumber(r.attempts) <= tonumber(r.retries or '0') then
      if began then redis.call('HSET', jkey(id), 'started', began) end
      recorded[#recorded + 1] = num(schedule_retry(r, error, traceback))
    else
      end_(id, 'failed', {error = error, traceback = traceback, at = at, started = began, row = r})
      recorded[#recorded + 1] = '1'
    end
  end
end
local claimed = {}
local count = 0
for _, packed in ipairs(handed) do
  local job = cmsgpack.unpack(packed)  -- as hand_over packed it: the fields claimed lists
  if count < limit then
    if holding(job[1], job[2], {'status', 'attempts'}) then
      count = count + 1
      append(claimed, job)
    end
  else
    put_back(job[1], job[2])  -- the slot claims nothing now
  end
end
if limit > 0 then
  tick(NOW)
  while count < limit do
    local r = next_startable(mode)
    if not r then break end
    count = count + 1
    local attempt = start(r, worker, count > limit - ahead)
    claimed[#claimed + 1] = r.id
    claimed[#claimed + 1] = attempt
    claimed[#claimed + 1] = r.task
    claimed[#claimed + 1] = r.mode
    claimed[#claimed + 1] = r.ref
    claimed[#claimed + 1] = r.payload
    claimed[#claimed + 1] = r.timeout
    claimed[#claimed + 1] = r.mac
  end
  -- nothing more may start: the markers left would wake claimers for nothing
  if count < limit then
    redis.call('DEL', P .. 'k:' .. mode)
    READY[mode] = nil
  end
end
return finish({recorded, claimed})
