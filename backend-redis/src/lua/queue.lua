-- Queues a session for a name, or looks at its entry again.
-- ARGV: P, kind, name, sid, mode ('queue' | 'try' | 'check'), recipe char, value.
-- 'queue' adds the entry unless the session has one (a retry after a lost reply finds it);
-- 'try' adds it but removes it again unless granted at once; 'check' only looks.
-- Replies: token (an integer: granted) | 'waiting <token> <ms>' (ms: when an entry it waits behind
-- could die with its session, the time to check again) | 'busy' | 'gone' | 'expired' |
-- 'permits <the number the queue's entries carry>'. One string, not an array: cheaper for a
-- client to parse.
-- (queue_alone.lua, before, has refused an expired session and granted on an empty queue.)
local before = leader_of(Q)
local token = redis.call('ZSCORE', Q.q, sid)
if not token then
  if mode == 'check' then return 'gone' end
  if recipe == 'P' then
    -- Dead entries go first, so that the permits compared are a live holder's (the settle
    -- below, with our entry in the queue, does this for the other recipes).
    settle(Q, sid)
    local head = redis.call('ZRANGE', Q.q, 0, 0)
    local record = head[1] and redis.call('HGET', Q.e, head[1])
    if record and string.sub(record, 3) ~= value then return 'permits ' .. string.sub(record, 3) end
  end
  token = token_text(add(Q, sid, recipe .. '0' .. value, session_ttl, false))
else
  token = token_text(token)
end
-- Up to a few rounds: each finds the entries this one waits behind; dead ones are removed,
-- which may admit it.
for _ = 1, 8 do
  settle(Q, sid)
  if is_granted(redis.call('HGET', Q.e, sid)) then
    announce(Q, before)
    return tonumber(token)
  end
  if mode == 'try' then
    remove(Q, sid)
    settle(Q, sid)
    announce(Q, before)
    return 'busy'
  end
  -- The first waiter may be admitted by any entry ahead going; a later one waits for its
  -- predecessor to go (then it looks again, perhaps as the first waiter).
  local rank = redis.call('ZRANK', Q.q, sid)
  local predecessor = redis.call('ZRANGE', Q.q, rank - 1, rank - 1)
  local watched = predecessor
  if is_granted(redis.call('HGET', Q.e, predecessor[1]) or '') then
    watched = redis.call('ZRANGE', Q.q, 0, math.min(rank, 64) - 1)
  end
  local soonest, dead = nil, {}
  for _, other in ipairs(watched) do
    local ttl = redis.call('PTTL', session_key(other))
    if ttl == -2 then
      table.insert(dead, other)
    elseif ttl >= 0 and (not soonest or ttl < soonest) then
      soonest = ttl
    end
  end
  if #dead == 0 then
    announce(Q, before)
    return 'waiting ' .. token .. ' ' .. token_text(soonest or 1000)
  end
  for _, other in ipairs(dead) do remove(Q, other) end
end
announce(Q, before)
return 'waiting ' .. token .. ' 0'
