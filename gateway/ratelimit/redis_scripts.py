"""Lua scripts of the Redis backend; each runs atomically in one round trip.

Keys of one subject (all share a ``{subject}`` hash tag):

- ``r``: ZSET of admitted requests, member slot id, score expiry (admitted + window);
- ``t``: ZSET of token entries, member slot id (or ``<slot>:x`` for usage charged at
  release beyond the estimate), score expiry;
- ``a``: HASH entry id -> tokens, plus ``_sum``, the total of the entries in ``t``;
- ``c``: ZSET of concurrency slots, member slot id, score lease expiry.

Times are seconds (floats). ``ARGV[1]`` is the clock: empty means Redis ``TIME``, the
one clock every gateway process shares; tests pass their own. Numbers going back are
strings where they are fractional, because Redis truncates Lua numbers to integers.
"""

from __future__ import annotations

_COMMON = """
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function ttl_ms(seconds)
  return math.ceil(seconds * 1000) + 1000
end

-- Drop token entries that left the window, keeping _sum in step.
local function prune_tokens(tok, amt, now)
  while true do
    local old = redis.call('ZRANGEBYSCORE', tok, '-inf', now, 'LIMIT', 0, 500)
    if #old == 0 then return end
    local amounts = redis.call('HMGET', amt, unpack(old))
    local freed = 0
    for i = 1, #amounts do freed = freed + (tonumber(amounts[i]) or 0) end
    if freed ~= 0 then redis.call('HINCRBY', amt, '_sum', -freed) end
    redis.call('HDEL', amt, unpack(old))
    redis.call('ZREM', tok, unpack(old))
    if #old < 500 then return end
  end
end

-- Seconds until the oldest entries free `need` tokens (window if they never do).
local function tokens_retry(tok, amt, need, now, window)
  local freed = 0
  local start = 0
  while true do
    local batch = redis.call('ZRANGE', tok, start, start + 199, 'WITHSCORES')
    if #batch == 0 then return window end
    local ids = {}
    for i = 1, #batch, 2 do ids[#ids + 1] = batch[i] end
    local amounts = redis.call('HMGET', amt, unpack(ids))
    for i = 1, #ids do
      freed = freed + (tonumber(amounts[i]) or 0)
      if freed >= need then return math.max(0, tonumber(batch[2 * i]) - now) end
    end
    start = start + 200
  end
end

local function newest_in(key, now)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if newest[2] and tonumber(newest[2]) > now then return tonumber(newest[2]) - now end
  return 0
end
"""

# KEYS: r, t, a, c. ARGV: clock, window, lease, rpm, tpm, concurrent, estimate, slot id,
# concurrent retry-after. Returns {allowed, verdict, retry_after, in_use, requests,
# tokens, requests_reset, tokens_reset}.
ACQUIRE = _COMMON + """
local now = clock(ARGV[1])
local window = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local rpm, tpm, climit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local est = tonumber(ARGV[7])
local slot = ARGV[8]

redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
prune_tokens(KEYS[2], KEYS[3], now)
local in_use = redis.call('ZCARD', KEYS[4])
local nreq = redis.call('ZCARD', KEYS[1])
local used = tonumber(redis.call('HGET', KEYS[3], '_sum') or '0')

local verdict = ''
local retry = 0
if est > tpm then
  verdict = 'too_large'
  retry = window
elseif in_use >= climit then
  verdict = 'concurrent'
  retry = tonumber(ARGV[9])
elseif nreq >= rpm then
  verdict = 'requests'
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] then retry = math.max(0, tonumber(oldest[2]) - now) else retry = window end
elseif used + est > tpm then
  verdict = 'tokens'
  retry = tokens_retry(KEYS[2], KEYS[3], used + est - tpm, now, window)
else
  local expiry = now + window
  redis.call('ZADD', KEYS[1], expiry, slot)
  redis.call('ZADD', KEYS[2], expiry, slot)
  redis.call('HSET', KEYS[3], slot, est)
  redis.call('HINCRBY', KEYS[3], '_sum', est)
  redis.call('ZADD', KEYS[4], now + lease, slot)
  local ttl = ttl_ms(window)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl_ms(lease))
  -- The entry just added is the newest: both windows are empty again in `window` s.
  local tokens_reset = 0
  if used + est > 0 then tokens_reset = window end
  return {1, '', '0', in_use + 1, nreq + 1, used + est, tostring(window),
          tostring(tokens_reset)}
end

local requests_reset = 0
if nreq > 0 then requests_reset = newest_in(KEYS[1], now) end
local tokens_reset = 0
if used > 0 then tokens_reset = newest_in(KEYS[2], now) end
return {0, verdict, tostring(retry), in_use, nreq, used,
        tostring(requests_reset), tostring(tokens_reset)}
"""

# KEYS: t, a, c. ARGV: clock, window, slot id, actual tokens, reserved tokens.
# Setting the entry to `actual` (not adding the difference) makes a second call a no-op.
RELEASE = _COMMON + """
local now = clock(ARGV[1])
local window = tonumber(ARGV[2])
local slot = ARGV[3]
local actual, reserved = tonumber(ARGV[4]), tonumber(ARGV[5])
local held = redis.call('ZREM', KEYS[3], slot)
local expiry = redis.call('ZSCORE', KEYS[1], slot)
if expiry and tonumber(expiry) > now then
  local current = tonumber(redis.call('HGET', KEYS[2], slot) or '0')
  if current ~= actual then
    redis.call('HSET', KEYS[2], slot, actual)
    redis.call('HINCRBY', KEYS[2], '_sum', actual - current)
  end
elseif held == 1 and actual > reserved then
  -- The call outlived the window: charge what it used beyond its estimate now.
  local excess = slot .. ':x'
  if redis.call('ZADD', KEYS[1], 'NX', now + window, excess) == 1 then
    redis.call('HSET', KEYS[2], excess, actual - reserved)
    redis.call('HINCRBY', KEYS[2], '_sum', actual - reserved)
    redis.call('PEXPIRE', KEYS[1], ttl_ms(window))
    redis.call('PEXPIRE', KEYS[2], ttl_ms(window))
  end
end
return held
"""

# KEYS: the c key of each lease. ARGV: clock, lease seconds, then the slot ids in KEYS'
# order. Only slots still held are extended: a reclaimed slot is not brought back.
RENEW = _COMMON + """
local now = clock(ARGV[1])
local lease = tonumber(ARGV[2])
local renewed = 0
for i = 1, #KEYS do
  local current = redis.call('ZSCORE', KEYS[i], ARGV[i + 2])
  if current and tonumber(current) > now then
    redis.call('ZADD', KEYS[i], 'XX', now + lease, ARGV[i + 2])
    redis.call('PEXPIRE', KEYS[i], ttl_ms(lease))
    renewed = renewed + 1
  end
end
return renewed
"""

# KEYS: r, t, a, c. ARGV: clock. Writes nothing.
# Returns {in_use, requests, tokens, requests_reset, tokens_reset}.
STATUS = _COMMON + """
local now = clock(ARGV[1])
local after = '(' .. string.format('%.6f', now)
local in_use = redis.call('ZCOUNT', KEYS[4], after, '+inf')
local nreq = redis.call('ZCOUNT', KEYS[1], after, '+inf')
local used = tonumber(redis.call('HGET', KEYS[3], '_sum') or '0')
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for i = 1, #old do
  used = used - (tonumber(redis.call('HGET', KEYS[3], old[i])) or 0)
end
local requests_reset = 0
if nreq > 0 then requests_reset = newest_in(KEYS[1], now) end
local tokens_reset = 0
if used > 0 then tokens_reset = newest_in(KEYS[2], now) end
return {in_use, nreq, used, tostring(requests_reset), tostring(tokens_reset)}
"""

# KEYS: the attempt log. ARGV: clock, window, limit, member. Returns {allowed, retry}.
HIT = _COMMON + """
local now = clock(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now + window, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ttl_ms(window))
  return {1, '0'}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then return {0, tostring(math.max(0, tonumber(oldest[2]) - now))} end
return {0, tostring(window)}
"""
