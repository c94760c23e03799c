-- idle: a slot about to block for a job of its mode (ARGV from A: slot, mode, seconds):
-- registered as idle for that long (server time), with its worker's lease (il), so that a job
-- of its mode made ready is handed to it (hand_over); not if a job was handed to it already
-- (it takes that one). Answer: 1 registered, else 0.
local slot, mode = ARGV[A], ARGV[A + 1]
if redis.call('EXISTS', P .. 'h:' .. slot) == 1 then return finish(0) end
local until_ = tonumber(redis.call('TIME')[1]) + tonumber(ARGV[A + 2])
redis.call('ZADD', P .. 'i:' .. mode, until_, slot)
redis.call('HSET', P .. 'il', slot, LEASE)
return finish(1)
