"""The Lua scripts of `RedisCounters`: each operation is one script, atomic in Redis.

Time is Redis's own clock (`TIME`), so every gateway process agrees on windows and leases.
Money is integer nano-USD. A bucket is a hash (`spent`, `reserved`, `h:<reservation id>` the
amount held) beside a sorted set of its reservation ids by lease deadline.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "ONCE", "RECORD", "RESERVE", "SETTLE", "USAGE"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# Frees the holds of bucket i whose lease has ended.
_FREE = """
local function free_expired(h, z)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, r in ipairs(gone) do
    local amount = redis.call('HGET', h, 'h:' .. r)
    if amount then
      redis.call('HINCRBY', h, 'reserved', -tonumber(amount))
      redis.call('HDEL', h, 'h:' .. r)
    end
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
end
"""

# KEYS: log_1, sum_1, ..., log_n, sum_n   ARGV: id, then limit, window_s, cost per key
# -> {1, states...} or {0, index, retry_after, states...}; a state is limit, remaining, reset
ACQUIRE = (
    _NOW
    + """
local n = #KEYS / 2
local function trim(log, sum, window)
  local old = redis.call('ZRANGEBYSCORE', log, '-inf', now - window)
  if #old > 0 then
    local gone = 0
    for _, m in ipairs(old) do gone = gone + tonumber(string.match(m, ':(%d+)$')) end
    redis.call('DECRBY', sum, gone)
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
  end
  return tonumber(redis.call('GET', sum) or '0')
end
local totals, refused, retry = {}, 0, 0
for i = 1, n do
  local limit, window, cost = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  local total = trim(KEYS[2*i-1], KEYS[2*i], window)
  totals[i] = total
  if refused == 0 and total + cost > limit then
    refused = i
    retry = window
    local need, freed = total + cost - limit, 0
    local entries = redis.call('ZRANGE', KEYS[2*i-1], 0, -1, 'WITHSCORES')
    for j = 1, #entries, 2 do
      freed = freed + tonumber(string.match(entries[j], ':(%d+)$'))
      if freed >= need then retry = tonumber(entries[j+1]) + window - now break end
    end
  end
end
local out = {}
if refused == 0 then
  out[1] = 1
  for i = 1, n do
    local window, cost = tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
    redis.call('ZADD', KEYS[2*i-1], now, ARGV[1] .. ':' .. i .. ':' .. cost)
    totals[i] = redis.call('INCRBY', KEYS[2*i], cost)
    local ms = math.ceil(window * 1000)
    redis.call('PEXPIRE', KEYS[2*i-1], ms)
    redis.call('PEXPIRE', KEYS[2*i], ms)
  end
else
  out[1] = 0
  out[2] = refused
  out[3] = tostring(math.max(retry, 0))
end
for i = 1, n do
  local newest = redis.call('ZRANGE', KEYS[2*i-1], -1, -1, 'WITHSCORES')
  local reset = 0
  if #newest == 2 then reset = math.max(tonumber(newest[2]) + tonumber(ARGV[3*i]) - now, 0) end
  table.insert(out, math.max(tonumber(ARGV[3*i-1]) - totals[i], 0))
  table.insert(out, tostring(reset))
end
return out
"""
)

# KEYS: log_1, sum_1, ...   ARGV: id, then window_s, cost per key
RECORD = (
    _NOW
    + """
for i = 1, #KEYS / 2 do
  local window, cost = tonumber(ARGV[2*i]), tonumber(ARGV[2*i+1])
  redis.call('ZADD', KEYS[2*i-1], now, ARGV[1] .. ':r' .. i .. ':' .. cost)
  redis.call('INCRBY', KEYS[2*i], cost)
  local ms = math.ceil(window * 1000)
  redis.call('PEXPIRE', KEYS[2*i-1], ms)
  redis.call('PEXPIRE', KEYS[2*i], ms)
end
return 1
"""
)

# KEYS: hash_1, leases_1, ..., hash_n, leases_n, res
# ARGV: id, fixed, unit, max_units, min_units, lease_s, then limit, ttl_s, seed ('' none) per
# bucket.  -> {'seed', i...} | {'over', i, free} | {'ok', units, amount}
RESERVE = (
    _NOW
    + _FREE
    + """
local n = (#KEYS - 1) / 2
local rid = ARGV[1]
local fixed, unit = tonumber(ARGV[2]), tonumber(ARGV[3])
local units, min_units, lease = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local missing = {'seed'}
for i = 1, n do
  local h = KEYS[2*i-1]
  if redis.call('HEXISTS', h, 'spent') == 0 then
    local seed = ARGV[6 + 3*i]
    if seed == '' then table.insert(missing, i)
    else
      redis.call('HSET', h, 'spent', seed, 'reserved', 0)
      redis.call('PEXPIRE', h, math.ceil(tonumber(ARGV[5 + 3*i]) * 1000))
    end
  end
end
if #missing > 1 then return missing end
for i = 1, n do
  local h, z = KEYS[2*i-1], KEYS[2*i]
  free_expired(h, z)
  local free = tonumber(ARGV[4 + 3*i]) - tonumber(redis.call('HGET', h, 'spent'))
    - tonumber(redis.call('HGET', h, 'reserved') or '0')
  local afford = -1
  if free >= fixed then
    if unit <= 0 then afford = units else afford = math.floor((free - fixed) / unit) end
  end
  if afford < units then units = afford end
  if units < min_units then return {'over', i, tostring(free)} end
end
local amount = math.ceil(fixed + unit * units - 1e-6)
for i = 1, n do
  local h, z = KEYS[2*i-1], KEYS[2*i]
  local ms = math.ceil(tonumber(ARGV[5 + 3*i]) * 1000)
  redis.call('HINCRBY', h, 'reserved', amount)
  redis.call('HSET', h, 'h:' .. rid, amount)
  redis.call('ZADD', z, now + lease, rid)
  redis.call('PEXPIRE', h, ms)
  redis.call('PEXPIRE', z, ms)
end
redis.call('SET', KEYS[#KEYS], 1, 'PX', math.ceil((lease + 86400) * 1000))
return {'ok', units, amount}
"""
)

# KEYS: hash_1, leases_1, ..., res   ARGV: id, actual (nano-USD)  -> {spent_1, ...} or {}
SETTLE = """
local n = (#KEYS - 1) / 2
local rid = ARGV[1]
if redis.call('DEL', KEYS[#KEYS]) == 0 then return {} end
local out = {}
for i = 1, n do
  local h, z = KEYS[2*i-1], KEYS[2*i]
  local amount = redis.call('HGET', h, 'h:' .. rid)
  if amount then
    redis.call('HINCRBY', h, 'reserved', -tonumber(amount))
    redis.call('HDEL', h, 'h:' .. rid)
    redis.call('ZREM', z, rid)
  end
  if redis.call('HEXISTS', h, 'spent') == 1 then
    out[i] = redis.call('HINCRBY', h, 'spent', ARGV[2])
  else
    out[i] = -1  -- gone: seeded again from the store, which has this call
  end
end
return out
"""

# KEYS: hash, leases  -> {spent, reserved, holds}
USAGE = (
    _NOW
    + _FREE
    + """
free_expired(KEYS[1], KEYS[2])
return {tonumber(redis.call('HGET', KEYS[1], 'spent') or '0'),
        tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0'),
        redis.call('ZCARD', KEYS[2])}
"""
)

# KEYS: key  ARGV: ttl_ms  -> 1 the first time
ONCE = """
if redis.call('SET', KEYS[1], 1, 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""
