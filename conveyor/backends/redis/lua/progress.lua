-- progress: record how far a running attempt got (ARGV from A: id, attempt, fraction as text,
-- '1' and the message, or '0' for none). Answer: 1 if recorded, 0 if the attempt no longer
-- held the job (nothing changed). The 'progress' event goes out as every step's events do.
local id = ARGV[A]
if not holding(id, tonumber(ARGV[A + 1]), {'status', 'attempts'}) then return finish(0) end
if ARGV[A + 3] == '1' then
  redis.call('HSET', jkey(id), 'progress', ARGV[A + 2], 'progress_message', ARGV[A + 4])
else
  redis.call('HSET', jkey(id), 'progress', ARGV[A + 2])
  redis.call('HDEL', jkey(id), 'progress_message')
end
event('progress', id)
return finish(1)
