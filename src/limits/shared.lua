-- Per-key limits shared by every replica, decided atomically in Redis.
-- The GCRA math is that of gcra.rs, in microseconds of Redis server time:
-- a key's TAT (theoretical arrival time) is stored as a decimal integer and
-- expires when its bucket would be full again. Concurrency is a sorted set of
-- lease ids scored by their expiry (milliseconds), so leases of a replica that
-- died go away on their own.
--
-- The file defines functions only; shared.rs appends the entry point
-- (`admit(server_now())`, or an explicit `now` in its tests).

local PERIOD = 60000000

local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Whole microseconds per cell, as gcra.rs (so `limit` cells never exceed PERIOD).
local function interval_of(limit)
  local interval = math.floor(PERIOD / limit)
  if interval < 1 then
    return 1
  end
  return interval
end

local function tat_of(key, now)
  local tat = tonumber(redis.call('GET', key))
  if tat == nil or tat < now then
    return now
  end
  return tat
end

local function store(key, tat, now)
  if tat <= now then
    redis.call('DEL', key)
  else
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
  end
end

-- The current TAT, the TAT after charging `cost` cells (nil if refused), and
-- the wait (µs) until they would fit. More than the limit is charged as the limit.
local function charge(key, limit, cost, now)
  local tat = tat_of(key, now)
  if cost > limit then
    cost = limit
  end
  local new_tat = tat + cost * interval_of(limit)
  if new_tat - now > PERIOD then
    return tat, nil, new_tat - now - PERIOD
  end
  return tat, new_tat, 0
end

local function remaining(limit, tat, now)
  local free = math.floor((PERIOD - (tat - now)) / interval_of(limit))
  if free < 0 then
    return 0
  end
  if free > limit then
    return limit
  end
  return free
end

-- KEYS: requests TAT, tokens TAT, concurrency leases.
-- ARGV: requests/min, tokens/min, tokens to charge, max concurrent (0 = no
-- such limit), lease id, lease length (ms).
-- Returns {refused_by (0 admitted, 1 requests, 2 tokens, 3 concurrency),
-- wait ms, requests remaining, requests reset ms, tokens remaining, tokens
-- reset ms}; remaining is -1 for a limit the key does not have.
local function admit(now)
  local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
  local max_concurrent, lease, lease_ms = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
  local refused_by, wait = 0, 0
  local r_tat, r_new, r_wait, t_tat, t_new, t_wait
  if rpm > 0 then
    r_tat, r_new, r_wait = charge(KEYS[1], rpm, 1, now)
    if r_new == nil and r_wait > wait then
      refused_by, wait = 1, r_wait
    end
  end
  if tpm > 0 then
    t_tat, t_new, t_wait = charge(KEYS[2], tpm, cost, now)
    if t_new == nil and t_wait > wait then
      refused_by, wait = 2, t_wait
    end
  end
  local now_ms = math.floor(now / 1000)
  if refused_by == 0 and max_concurrent > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%.0f', now_ms))
    if redis.call('ZCARD', KEYS[3]) >= max_concurrent then
      refused_by = 3
    end
  end
  if refused_by == 0 then
    if rpm > 0 then
      store(KEYS[1], r_new, now)
      r_tat = r_new
    end
    if tpm > 0 then
      store(KEYS[2], t_new, now)
      t_tat = t_new
    end
    if max_concurrent > 0 then
      redis.call('ZADD', KEYS[3], string.format('%.0f', now_ms + lease_ms), lease)
      redis.call('PEXPIRE', KEYS[3], lease_ms)
    end
  end
  local r_rem, r_reset, t_rem, t_reset = -1, 0, -1, 0
  if rpm > 0 then
    r_rem, r_reset = remaining(rpm, r_tat, now), math.ceil((r_tat - now) / 1000)
  end
  if tpm > 0 then
    t_rem, t_reset = remaining(tpm, t_tat, now), math.ceil((t_tat - now) / 1000)
  end
  return {refused_by, math.ceil(wait / 1000), r_rem, r_reset, t_rem, t_reset}
end

-- KEYS: tokens TAT. ARGV: tokens/min, tokens to charge (negative: refund).
-- Refunds stop at a full bucket; charges may go into debt.
local function reconcile(now)
  local limit, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
  local tat = tat_of(KEYS[1], now) + delta * interval_of(limit)
  store(KEYS[1], tat, now)
  return 1
end
