-- requeue: put a running attempt back to waiting, uncounted (ARGV from A: id, attempt).
-- Answer: 1 if it was put back, 0 if the attempt no longer held the job.
return finish(put_back(ARGV[A], tonumber(ARGV[A + 1])) and 1 or 0)
