-- Ends a session: deletes it and removes every entry it has, admitting whoever is next.
-- ARGV: P, sid. Reply: the number of entries removed.
local sid = ARGV[2]
local own = entries_key(sid)
local entries = redis.call('HGETALL', own)
redis.call('DEL', session_key(sid), own)
local removed = 0
for i = 1, #entries, 2 do
  if entries[i] ~= '' then
    local Q = queue_of(entries[i])
    local before = leader_of(Q)
    local score = redis.call('ZSCORE', Q.q, sid)
    if score and tonumber(score) == tonumber(entries[i + 1]) then
      remove(Q, sid)
      removed = removed + 1
    end
    settle(Q, '')
    announce(Q, before)
  end
end
return removed
