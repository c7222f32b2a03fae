"""The Lua scripts of the job queue: each state change of a job is one atomic step.

Every key a script touches lives in the slot of the queue's stream (see
:mod:`streamflow.keys`: the job hashes, their ``:done`` lists and ``:dependents`` sets,
and the scheduled set all carry the stream's hash tag). Keys a script finds through a
job hash (a dependent's hash, the stream a promoted job goes to) are therefore in the
same slot as the keys it was given.

A job hash holds: ``id task args kwargs queue stream zset`` (what to run and where),
``status`` (queued, scheduled, deferred, succeeded, failed, cancelled), ``entry`` (its
stream entry id once added), ``enqueued_at queued_at scheduled_for started_at ended_at``
(ms), ``worker attempt``, ``result`` (JSON) or ``error_type error traceback``,
``reason`` (why cancelled), ``deps_left``, ``qttl fttl`` (seconds its state lives while
waiting / after failing), ``waiting`` (set while someone awaits the result).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

__all__ = ["CANCEL", "ENQUEUE", "FAIL", "FINISH", "PROMOTE", "REQUEUE", "WAIT_PREP", "call",
           "sha"]

_SHAS: dict[str, str] = {}


async def call(client: Any, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """Run ``script`` by its digest (EVALSHA), sending its text once if the server lacks it."""
    try:
        return await client.evalsha(sha(script), len(keys), *keys, *args)
    except NoScriptError:  # a new or restarted server
        return await client.eval(script, len(keys), *keys, *args)


def sha(script: str) -> str:
    """The SHA1 digest EVALSHA names ``script`` by."""
    digest = _SHAS.get(script)
    if digest is None:
        digest = _SHAS[script] = hashlib.sha1(script.encode()).hexdigest()
    return digest

# Functions the scripts share (prepended to each).
_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Someone waits for h's result: push its status (and result) to h's :done list.
local function notify(h, status, payload, ttl)
  if redis.call('HGET', h, 'waiting') then
    local done = h .. ':done'
    redis.call('DEL', done)
    redis.call('RPUSH', done, status .. '\\n' .. (payload or ''))
    redis.call('EXPIRE', done, ttl)
  end
end

-- Add h's entry to its stream now.
local function enqueue_now(h, now)
  local f = redis.call('HMGET', h, 'stream', 'task', 'id', 'args', 'kwargs', 'qttl')
  local eid = redis.call('XADD', f[1], '*', 'sf:task', f[2], 'sf:job', f[3],
                         'sf:args', f[4] or '[]', 'sf:kwargs', f[5] or '{}')
  redis.call('HSET', h, 'status', 'queued', 'entry', eid, 'queued_at', now)
  redis.call('EXPIRE', h, tonumber(f[6] or '2592000'))
  return eid
end

-- h's dependencies all succeeded: schedule it, or add it to its stream now.
local function make_ready(h, now)
  local f = redis.call('HMGET', h, 'scheduled_for', 'zset', 'id')
  local due = tonumber(f[1] or '0')
  if due > now then
    redis.call('ZADD', f[2], due, f[3])
    redis.call('HSET', h, 'status', 'scheduled')
  else
    enqueue_now(h, now)
  end
end

-- h succeeded: the jobs for which it was the last dependency become ready.
local function release(h, now)
  local dk = h .. ':dependents'
  for _, d in ipairs(redis.call('SMEMBERS', dk)) do
    local left = redis.call('HINCRBY', d, 'deps_left', -1)
    if left <= 0 and redis.call('HGET', d, 'status') == 'deferred' then
      make_ready(d, now)
    end
  end
  redis.call('DEL', dk)
end

-- h failed or was cancelled: so are the jobs waiting for it, and theirs.
local function cascade(h, now, why)
  local todo = {h}
  local i = 1
  while i <= #todo do
    local x = todo[i]
    local dk = x .. ':dependents'
    local xid = redis.call('HGET', x, 'id') or x
    local reason = 'dependency ' .. xid .. ' ' .. (i == 1 and why or 'was cancelled')
    i = i + 1
    for _, d in ipairs(redis.call('SMEMBERS', dk)) do
      if redis.call('HGET', d, 'status') == 'deferred' then
        local ttl = tonumber(redis.call('HGET', d, 'fttl') or '604800')
        redis.call('HSET', d, 'status', 'cancelled', 'reason', reason, 'ended_at', now)
        redis.call('EXPIRE', d, ttl)
        notify(d, 'cancelled', '', ttl)
        todo[#todo + 1] = d
      end
    end
    redis.call('DEL', dk)
  end
end
"""

#: Enqueue one job unless a job with its id exists (dedup).
#: KEYS[1] stream, KEYS[2] job hash, KEYS[3] scheduled set, KEYS[4..] dependencies' hashes.
#: ARGV[1] id, [2] task, [3] args JSON, [4] kwargs JSON, [5] queue, [6] due: '' (now),
#: '+<ms>' (from the server's clock) or ms since the epoch,
#: [7] qttl, [8] fttl. Returns {1, status, entry id} for a new job, {0, status, entry id}
#: for an existing one, {-1, key} when a dependency has no state.
ENQUEUE = _LIB + """
local h = KEYS[2]
local st = redis.call('HGET', h, 'status')
if st then
  return {0, st, redis.call('HGET', h, 'entry') or ''}
end
local failed = nil
local pending = {}
for i = 4, #KEYS do
  local dst = redis.call('HGET', KEYS[i], 'status')
  if not dst then
    return {-1, KEYS[i]}
  end
  if dst == 'failed' or dst == 'cancelled' then
    failed = failed or {KEYS[i], dst}
  elseif dst ~= 'succeeded' then
    pending[#pending + 1] = KEYS[i]
  end
end
local now = now_ms()
local qttl = tonumber(ARGV[7])
local due = nil
if string.sub(ARGV[6], 1, 1) == '+' then
  due = now + tonumber(string.sub(ARGV[6], 2))
elseif ARGV[6] ~= '' then
  due = tonumber(ARGV[6])
end
redis.call('HSET', h, 'id', ARGV[1], 'task', ARGV[2], 'args', ARGV[3], 'kwargs', ARGV[4],
           'queue', ARGV[5], 'stream', KEYS[1], 'zset', KEYS[3], 'enqueued_at', now,
           'qttl', qttl, 'fttl', ARGV[8])
local wait = 0
if due then
  redis.call('HSET', h, 'scheduled_for', due)
  if due > now then wait = math.ceil((due - now) / 1000) end
end
if failed then
  local did = redis.call('HGET', failed[1], 'id') or failed[1]
  local why = failed[2] == 'failed' and 'failed' or 'was cancelled'
  redis.call('HSET', h, 'status', 'cancelled', 'reason', 'dependency ' .. did .. ' ' .. why,
             'ended_at', now)
  redis.call('EXPIRE', h, tonumber(ARGV[8]))
  return {1, 'cancelled', ''}
end
if #pending > 0 then
  for _, d in ipairs(pending) do
    local dk = d .. ':dependents'
    redis.call('SADD', dk, h)
    local ttl = redis.call('TTL', d)
    if ttl < qttl then ttl = qttl end
    redis.call('EXPIRE', dk, ttl)
  end
  redis.call('HSET', h, 'status', 'deferred', 'deps_left', #pending)
  redis.call('EXPIRE', h, qttl + wait)
  return {1, 'deferred', ''}
end
if wait > 0 then
  redis.call('ZADD', KEYS[3], due, ARGV[1])
  redis.call('HSET', h, 'status', 'scheduled')
  redis.call('EXPIRE', h, qttl + wait)
  return {1, 'scheduled', ''}
end
return {1, 'queued', enqueue_now(h, now)}
"""

#: Move the delayed jobs that are due to their streams (each exactly once: ZREM first).
#: KEYS[1] scheduled set; ARGV[1] job hash prefix, [2] most jobs per call.
#: Returns {jobs promoted, score of the next one or false, server time ms}.
PROMOTE = _LIB + """
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local n = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local h = ARGV[1] .. id
    if redis.call('HGET', h, 'status') == 'scheduled' then
      enqueue_now(h, now)
      n = n + 1
    end
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {n, nxt[2] or false, now}
"""

#: Ack handled job entries and store their results (the first result of a job wins; a
#: cancelled job keeps its status and its result is discarded).
#: KEYS[1] the stream key the entries are pending in, KEYS[2..n-1] their job hashes, KEYS[n]
#: the queue's totals hash (``HINCRBY succeeded``).
#: ARGV[1] group, [2] worker; then 8 per job: entry id, outcome ('succeeded' or
#: 'discard'), result JSON, started ms, attempt, task, job id, result ttl.
#: Returns how many entries were acked (or had been, by a cancel).
FINISH = _LIB + """
local now = now_ms()
local acked = 0
local succeeded = 0
for i = 2, #KEYS - 1 do
  local b = 3 + (i - 2) * 8
  local eid = ARGV[b]
  local n = redis.call('XACK', KEYS[1], ARGV[1], eid)
  if n == 1 or ARGV[b + 1] == 'discard' then  -- (a cancelled job's entry: acked by CANCEL)
    acked = acked + 1
  end
  if n == 1 then
    local h = KEYS[i]
    local st = redis.call('HGET', h, 'status')
    if ARGV[b + 1] == 'succeeded' and st ~= 'succeeded' and st ~= 'cancelled' then
      local ttl = tonumber(ARGV[b + 7])
      redis.call('HSET', h, 'status', 'succeeded', 'result', ARGV[b + 2],
                 'started_at', ARGV[b + 3], 'ended_at', now, 'worker', ARGV[2],
                 'attempt', ARGV[b + 4], 'task', ARGV[b + 5], 'id', ARGV[b + 6], 'entry', eid)
      redis.call('HDEL', h, 'error_type', 'error', 'traceback')
      redis.call('EXPIRE', h, ttl)
      notify(h, 'succeeded', ARGV[b + 2], ttl)
      release(h, now)
      succeeded = succeeded + 1
    end
  end
end
if succeeded > 0 then redis.call('HINCRBY', KEYS[#KEYS], 'succeeded', succeeded) end
return acked
"""

#: Record that a job failed for good (its entry was dead-lettered).
#: KEYS[1] job hash; ARGV[1] id, [2] task, [3] error type, [4] error, [5] traceback,
#: [6] attempt, [7] worker, [8] ttl, [9] entry id, [10] stream, [11] args, [12] kwargs,
#: [13] started ms, [14] dead-letter stream, [15] its record of the job (so that a requeue
#: can delete it). Returns 1, or 0 when the job had succeeded or was cancelled.
FAIL = _LIB + """
local h = KEYS[1]
local st = redis.call('HGET', h, 'status')
if st == 'succeeded' or st == 'cancelled' then return 0 end
local now = now_ms()
local ttl = tonumber(ARGV[8])
redis.call('HSET', h, 'status', 'failed', 'id', ARGV[1], 'task', ARGV[2],
           'error_type', ARGV[3], 'error', ARGV[4], 'traceback', ARGV[5], 'attempt', ARGV[6],
           'worker', ARGV[7], 'entry', ARGV[9], 'stream', ARGV[10], 'started_at', ARGV[13],
           'ended_at', now, 'dlq', ARGV[14], 'dlq_record', ARGV[15])
if not redis.call('HGET', h, 'args') then
  redis.call('HSET', h, 'args', ARGV[11], 'kwargs', ARGV[12], 'fttl', ttl)
end
redis.call('EXPIRE', h, ttl)
notify(h, 'failed', '', ttl)
cascade(h, now, 'failed')
return 1
"""

#: Cancel a job that has not finished. A scheduled job leaves the scheduled set; a queued
#: entry nobody read yet is deleted; one a worker read (running, or parked for a retry) is
#: acked, so no worker runs it again, and its id is published so a running one is
#: cancelled. KEYS[1] job hash, KEYS[2] stream, KEYS[3] scheduled set; ARGV[1] group,
#: [2] reason, [3] channel, [4] the retry consumer's name.
#: Returns {status} (unchanged: missing or already finished) or {'cancelled', was}.
CANCEL = _LIB + """
local h = KEYS[1]
local f = redis.call('HMGET', h, 'status', 'entry', 'id', 'fttl')
local st = f[1]
if not st then return {'missing'} end
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return {st} end
local now = now_ms()
local ttl = tonumber(f[4] or '604800')
local was = st
if st == 'scheduled' then
  redis.call('ZREM', KEYS[3], f[3])
elseif st == 'queued' and f[2] then
  local p = redis.pcall('XPENDING', KEYS[2], ARGV[1], f[2], f[2], 1)
  if type(p) == 'table' and p.err then
    if string.find(p.err, 'NOGROUP', 1, true) then
      p = {}  -- no worker has read the queue yet: the entry is not pending anywhere
    else
      return redis.error_reply(p.err)
    end
  end
  if #p == 1 then
    redis.call('XACK', KEYS[2], ARGV[1], f[2])
    redis.call('PUBLISH', ARGV[3], f[3])
    if p[1][2] == ARGV[4] then was = 'retrying' else was = 'started' end
  else
    redis.call('XDEL', KEYS[2], f[2])
  end
end
redis.call('HSET', h, 'status', 'cancelled', 'reason', ARGV[2], 'ended_at', now)
redis.call('EXPIRE', h, ttl)
notify(h, 'cancelled', '', ttl)
cascade(h, now, 'was cancelled')
return {'cancelled', was}
"""

#: Before waiting for a result: mark the job awaited, so its worker pushes the outcome to
#: its :done list; for a job that finished already, push the outcome now. Either way the
#: BLMOVE sent in the same round trip right after this script returns when the outcome is
#: there. A job with no state yet (written by a producer that keeps none, e.g. a plain
#: XADD) gets the mark alone, living ARGV[1] seconds. KEYS[1] job hash.
#: Returns {status or '', result or ''}.
WAIT_PREP = """
local f = redis.call('HMGET', KEYS[1], 'status', 'result')
if f[1] == 'succeeded' or f[1] == 'failed' or f[1] == 'cancelled' then
  local done = KEYS[1] .. ':done'
  if redis.call('EXISTS', done) == 0 then
    redis.call('RPUSH', done, f[1] .. '\\n' .. (f[2] or ''))
    local ttl = redis.call('TTL', KEYS[1])
    if ttl < 1 then ttl = 60 end
    redis.call('EXPIRE', done, ttl)
  end
  return {f[1], f[2] or ''}
end
redis.call('HSET', KEYS[1], 'waiting', '1')
if not f[1] then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]), 'GT')
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])) end
end
return {f[1] or '', ''}
"""

#: Run a failed or cancelled job again, with its arguments, as a new attempt 1; a failed
#: job's dead-letter record is deleted (a later ``dlq replay`` must not run it once more).
#: KEYS[1] job hash. Returns {status before, entry id or ''}.
REQUEUE = _LIB + """
local h = KEYS[1]
local f = redis.call('HMGET', h, 'status', 'stream', 'task', 'args')
if not f[1] then return {'missing', ''} end
if f[1] ~= 'failed' and f[1] ~= 'cancelled' then return {f[1], ''} end
if not f[2] or not f[3] or not f[4] then return {'incomplete', ''} end
local dlq = redis.call('HMGET', h, 'dlq', 'dlq_record')
if dlq[1] and dlq[2] and dlq[2] ~= '' then redis.call('XDEL', dlq[1], dlq[2]) end
redis.call('HDEL', h, 'result', 'error_type', 'error', 'traceback', 'reason', 'ended_at',
           'started_at', 'worker', 'attempt', 'waiting', 'dlq', 'dlq_record')
redis.call('DEL', h .. ':done')
return {f[1], enqueue_now(h, now_ms())}
"""
