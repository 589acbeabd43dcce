-- The leader of election `name`: {token, value}, or {} if nobody leads. Removes dead entries it
-- meets at the head first (and admits whoever is next). ARGV: P, name.
local Q = queue('elect', ARGV[2])
local before = leader_of(Q)
settle(Q, '')
announce(Q, before)
local head = redis.call('ZRANGE', Q.q, 0, 0, 'WITHSCORES')
if #head == 0 then return {} end
local record = redis.call('HGET', Q.e, head[1])
if not record then return {} end
return { token_text(head[2]), string.sub(record, 3) }
