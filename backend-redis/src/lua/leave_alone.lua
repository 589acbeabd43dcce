-- leave.lua's first step, before rules.lua: the fenced removal; a lock's, a read-write lock's
-- or a semaphore's queue left empty needs no walk (the path of every uncontended release).
-- ARGV as leave.lua's; sets Q and sid for it.
local Q = queue(ARGV[2], ARGV[3])
local sid, token = ARGV[4], tonumber(ARGV[5])
local score = redis.call('ZSCORE', Q.q, sid)
if not score or (token ~= 0 and tonumber(score) ~= token) then return 0 end
-- An election's observers hear of the change: leave.lua removes its entry after reading the
-- leader it had.
if Q.kind ~= 'elect' then
  remove(Q, sid)
  if redis.call('EXISTS', Q.q) == 0 then return 1 end
end
