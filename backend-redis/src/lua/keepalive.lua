-- Renews a session for `ttl` ms, and the queues it is in, and reports its entries that are no
-- longer in their queues (deleted by an operator), removing what is left of them. ARGV: P, sid, ttl.
-- Reply: {'expired'} | {'alive', queue key, token, queue key, token, ...} (the missing entries).
local sid, ttl = ARGV[2], ARGV[3]
if redis.call('PEXPIRE', session_key(sid), ttl) == 0 then return { 'expired' } end
local own = entries_key(sid)
redis.call('PEXPIRE', own, ttl)
local reply = { 'alive' }
local entries = redis.call('HGETALL', own)
for i = 1, #entries, 2 do
  if entries[i] ~= '' then
    local score = redis.call('ZSCORE', entries[i], sid)
    if score then
      -- the queue lives as long as its longest-lived session
      extend(entries[i], ttl)
      extend(queue_of(entries[i]).e, ttl)
    end
    if not score or tonumber(score) ~= tonumber(entries[i + 1]) then
      redis.call('HDEL', own, entries[i])
      -- the record an operator's ZREM left behind
      if not score then redis.call('HDEL', queue_of(entries[i]).e, sid) end
      table.insert(reply, entries[i])
      table.insert(reply, entries[i + 1])
    end
  end
end
return reply
