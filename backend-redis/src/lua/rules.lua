-- The grant rules and the walk of a queue (after lib.lua).
local function is_exclusive(recipe) return recipe == 'L' or recipe == 'E' or recipe == 'W' end

-- The grant rules: whether an entry with `record` is admitted with `ahead` live entries before
-- it, `exclusive` telling whether one of those is exclusive.
local function admits(record, ahead, exclusive)
  local recipe = string.sub(record, 1, 1)
  if recipe == 'R' then return not exclusive end
  if recipe == 'P' then return ahead < tonumber(string.sub(record, 3)) end
  return ahead == 0
end

local function is_granted(record) return string.sub(record, 2, 2) == '1' end

-- Walks the queue from its head: removes entries whose session is gone, marks each entry the
-- grant rules now admit as granted and tells its session (all but `quiet`'s), and stops at the
-- first entry not admitted. A release thus wakes exactly the entries it admits. It reads the
-- queue in batches of 2, 4, ... 32 entries: a lock's walk, which mostly ends at the second
-- entry, reads two.
local function settle(Q, quiet)
  local ahead, exclusive, start, size = 0, false, 0, 2
  while true do
    local batch = redis.call('ZRANGE', Q.q, start, start + size - 1, 'WITHSCORES')
    if size < 32 then size = size * 2 end
    if #batch == 0 then return end
    local removed = 0
    for i = 1, #batch, 2 do
      local sid, token = batch[i], batch[i + 1]
      local record = redis.call('HGET', Q.e, sid)
      if not record or redis.call('EXISTS', session_key(sid)) == 0 then
        remove(Q, sid)
        removed = removed + 1
      else
        if not admits(record, ahead, exclusive) then return end
        if not is_granted(record) then
          redis.call('HSET', Q.e, sid, string.sub(record, 1, 1) .. '1' .. string.sub(record, 3))
          if sid ~= quiet then
            redis.call('PUBLISH', P .. 'w:' .. sid, 'g ' .. token_text(token) .. ' ' .. Q.q)
          end
        end
        ahead = ahead + 1
        exclusive = exclusive or is_exclusive(string.sub(record, 1, 1))
      end
    end
    start = start + #batch / 2 - removed
  end
end

-- An election's leader as observers see it: '<token> <value>' of the queue's head if granted,
-- '' if there is none; nil for the other queues (only elections have observers).
local function leader_of(Q)
  if Q.kind ~= 'elect' then return nil end
  local head = redis.call('ZRANGE', Q.q, 0, 0, 'WITHSCORES')
  if #head == 0 then return '' end
  local record = redis.call('HGET', Q.e, head[1])
  if not record or not is_granted(record) then return '' end
  return leader_text(head[2], string.sub(record, 3))
end

-- After a change: tells observers if the leader changed from `before`.
local function announce(Q, before)
  local after = leader_of(Q)
  if after ~= before then tell_observers(Q, after) end
end
