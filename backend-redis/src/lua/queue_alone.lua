-- queue.lua's first step, before rules.lua: the session must live, and on an empty queue its
-- entry holds at once (the path of every uncontended lock, which needs no walk of the queue).
-- ARGV as queue.lua's; sets Q, sid, mode, recipe, value and session_ttl for it.
local Q = queue(ARGV[2], ARGV[3])
local sid, mode, recipe, value = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
-- The session's remaining life (-2: gone, so expired); its queues live at least as long.
local session_ttl = redis.call('PTTL', session_key(sid))
if session_ttl == -2 then return 'expired' end
if mode ~= 'check' and redis.call('ZCARD', Q.q) == 0 then
  local token = add(Q, sid, recipe .. '1' .. value, session_ttl, true)
  -- Nobody led an empty election: its first candidate does now.
  if Q.kind == 'elect' then tell_observers(Q, leader_text(token, value)) end
  return token
end
