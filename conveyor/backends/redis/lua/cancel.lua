-- cancel: end a job that has not ended as cancelled, with the cascade (ARGV from A: id,
-- reason). Answer: {'unknown'}, {'ended'} (already ended), or {'cancelled', slot or false}.
local id, reason = ARGV[A], ARGV[A + 1]
tick(NOW)
local r = row(id, unpack(HELD))
if not r.status then return finish({'unknown'}) end
if TERMINAL[r.status] then return finish({'ended'}) end
local slot = false
if r.status == 'running' then
  release(r)
  slot = r.worker
  STOPS[#STOPS + 1] = id
  STOPS[#STOPS + 1] = slot
end
end_(id, 'cancelled', {error = reason, row = r})
return finish({'cancelled', slot})
