"""The Lua scripts of :class:`~signaling.redis_store.RedisStore`: each runs atomically in Redis,
so a check and the write it guards (capacity at admission, a resume secret, a meeting's state
change, the open-meetings quota) can never interleave with another worker's.

Keys and arguments are documented at each script's call in ``redis_store.py``.
"""

from __future__ import annotations

ADMIT = """
local room = redis.call('GET', KEYS[1])
if not room then return {'err', 'not-found'} end
room = cjson.decode(room)
if room.state == 'ended' then return {'err', 'room-ended'} end
if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then return {'err', 'removed'} end
local all = redis.call('HGETALL', KEYS[2])
local replaced, people, taps = {}, 0, 0
for i = 1, #all, 2 do
  local s = cjson.decode(all[i + 1])
  -- one seat per user (memory_store._replaces): a person's other seat; a dropped tap's seat
  if s.user_id == ARGV[2] and ((ARGV[3] ~= 'tap' and s.role ~= 'tap')
                               or (ARGV[3] == 'tap' and s.role == 'tap' and s.connected == false)) then
    table.insert(replaced, all[i])
    table.insert(replaced, all[i + 1])
  elseif s.role == 'tap' then taps = taps + 1
  else people = people + 1 end
end
if ARGV[3] == 'tap' then
  if taps > 0 then return {'err', 'tap-present'} end
elseif people >= room.capacity then
  return {'err', 'room-full', tostring(room.capacity)}
end
for i = 1, #replaced, 2 do redis.call('HDEL', KEYS[2], replaced[i]) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
if ARGV[3] ~= 'tap' then redis.call('HSET', KEYS[4], ARGV[2], 'joined') end
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
local out = {'ok', #replaced / 2}
for i = 2, #replaced, 2 do table.insert(out, replaced[i]) end
local seats = redis.call('HVALS', KEYS[2])
for i = 1, #seats do table.insert(out, seats[i]) end
return out
"""

REATTACH = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local s = cjson.decode(raw)
if s.resume_hash ~= ARGV[2] or s.user_id ~= ARGV[3] then return false end
s.connected = true
s.detached_at = nil
s.worker_id = ARGV[4]
raw = cjson.encode(s)
redis.call('HSET', KEYS[1], ARGV[1], raw)
return raw
"""

DETACH = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local s = cjson.decode(raw)
if ARGV[3] ~= '' and s.worker_id ~= ARGV[3] then return false end
s.connected = false
s.detached_at = tonumber(ARGV[2])
raw = cjson.encode(s)
redis.call('HSET', KEYS[1], ARGV[1], raw)
return raw
"""

REMOVE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local s = cjson.decode(raw)
if ARGV[2] ~= '' and (s.connected or s.detached_at ~= tonumber(ARGV[2])) then return false end
if ARGV[3] ~= '' and s.worker_id ~= ARGV[3] then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
return raw
"""

MEDIA = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local s = cjson.decode(raw)
s.media = cjson.decode(ARGV[2])
raw = cjson.encode(s)
redis.call('HSET', KEYS[1], ARGV[1], raw)
return raw
"""

END_ROOM = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local room = cjson.decode(raw)
if room.state == 'ended' then return false end
room.state = 'ended'
room.ended_at = tonumber(ARGV[2])
room.end_reason = ARGV[1]
raw = cjson.encode(room)
redis.call('SET', KEYS[1], raw, 'KEEPTTL')
redis.call('DEL', KEYS[2])
if KEYS[3] then redis.call('DEL', KEYS[3]) end
return raw
"""

# KEYS: room, banned, waiting. ARGV: peer id, user id, entry (JSON), most waiting, key ttl (s).
# The user's earlier knocks are replaced (and returned, to be closed).
KNOCK = """
local room = redis.call('GET', KEYS[1])
if not room then return {'err', 'not-found'} end
room = cjson.decode(room)
if room.state == 'ended' then return {'err', 'room-ended'} end
if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then return {'err', 'removed'} end
local all = redis.call('HGETALL', KEYS[3])
local replaced = {}
for i = 1, #all, 2 do
  if cjson.decode(all[i + 1]).user_id == ARGV[2] then
    table.insert(replaced, all[i])
    table.insert(replaced, all[i + 1])
  end
end
if #all / 2 - #replaced / 2 >= tonumber(ARGV[4]) then return {'err', 'waiting-room-full'} end
local out = {'ok'}
for i = 1, #replaced, 2 do
  redis.call('HDEL', KEYS[3], replaced[i])
  table.insert(out, replaced[i + 1])
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return out
"""

# KEYS: waiting. ARGV: peer id. The entry, taken out (false: not there).
UNKNOCK = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
return raw
"""

TRANSITION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'err', 'not-found'} end
local state = redis.call('HGET', KEYS[1], 'state')
if state == ARGV[1] then return {'ok'} end
local allowed = false
for s in string.gmatch(ARGV[2], '[^,]+') do if s == state then allowed = true end end
if not allowed then return {'err', 'conflict', state} end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[3])
if ARGV[1] == 'active' and not redis.call('HGET', KEYS[1], 'started_at') then
  redis.call('HSET', KEYS[1], 'started_at', ARGV[3])
end
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return {'ok'}
"""

# The time in the scripts below is Redis' own (TIME), so workers' clocks cannot skew the quota.
NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: the user's open set. ARGV: meeting id, most open meetings (0: no limit), key ttl (s).
# 0: over the quota; 1: counted now; 2: already counted.
RESERVE_OPEN = NOW_MS + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 2 end
local limit = tonumber(ARGV[2])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]) * 1000, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: the user's open set. ARGV: meeting id, key ttl (s). A meeting still open whose key was
# renewed: its entry lives as long.
RENEW_OPEN = NOW_MS + """
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]) * 1000, ARGV[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""

ATTACH_ROOM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'err', 'not-found'} end
local existing = redis.call('HGET', KEYS[1], 'room_id')
if existing then return {'ok', redis.call('GET', KEYS[2])} end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
redis.call('HSET', KEYS[1], 'room_id', ARGV[2])
return {'ok', ARGV[1]}
"""
