"""Lua scripts that make multi-step stream operations atomic (one key slot each)."""

from __future__ import annotations

__all__ = [
    "CLAIM_IF_OWNED",
    "DEAD_LETTER",
    "DELETE_IDLE_CONSUMER",
    "MAX_SCRIPT_ARGS",
    "NAME_RELEASE",
    "NAME_RENEW",
    "NAME_TAKE",
    "OWNER_RELEASE",
    "OWNER_TAKE",
    "REPLAY",
]

#: Move pending entries owned by ARGV[2] to consumer ARGV[3], resetting their idle time,
#: without counting a delivery. Entries another consumer took over are left alone.
#: KEYS[1] stream; ARGV[1] group, ARGV[2] owner, ARGV[3] new owner, ARGV[4..] ids.
#: Returns the ids moved (an entry deleted from the stream is not: Redis 7 drops it from
#: the PEL instead). Used to renew leases (owner == new owner) and to park a
#: failed entry on the retry consumer until its backoff has elapsed.
CLAIM_IF_OWNED = """
local moved = {}
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p == 1 then
    local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[i], 'JUSTID')
    if #c == 1 then
      moved[#moved + 1] = ARGV[i]
    end
  end
end
return moved
"""

#: Add an entry's dead-letter record and ack it in one step, only if it is still pending
#: (so an entry is never both acked and lost, nor dead-lettered twice). The XADD comes
#: first: if it fails (scripts do not roll back), nothing has been acked.
#: KEYS[1] stream, KEYS[2] dead-letter stream; ARGV[1] group, ARGV[2] id,
#: ARGV[3..] field/value pairs of the record (at most MAX_SCRIPT_ARGS of them: Lua's
#: unpack() limit). Returns the record id, or false.
DEAD_LETTER = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then
  return false
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
"""

#: Most values a script may pass to one command with unpack() (Lua's C stack is 8000).
MAX_SCRIPT_ARGS = 7000

#: Delete consumer ARGV[2] of group ARGV[1] only if it has no pending entries and has
#: been idle at least ARGV[3] ms (checked and deleted atomically, so no pending entry
#: is ever thrown away). KEYS[1] stream. Returns 1 if deleted.
DELETE_IDLE_CONSUMER = """
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
for _, c in ipairs(consumers) do
  local info = {}
  for j = 1, #c, 2 do info[c[j]] = c[j + 1] end
  if info['name'] == ARGV[2] then
    if tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
    return 0
  end
end
return 0
"""

#: Re-publish a dead-letter record to its original stream and delete it from the
#: dead-letter stream, atomically; the XADD comes first, so a failure loses nothing.
#: KEYS[1] dead-letter stream, KEYS[2] original stream; ARGV[1] record id, ARGV[2..]
#: original field/value pairs. Returns the new id or false (record not found).
REPLAY = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return false
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""

# -- consumer-name leases (streamflow.name_lease) ------------------------------------------
#
# KEYS[1] is the lease hash of one stream and group (keys.consumer_leases_key); a field
# per consumer name, its value "<expires ms>:<token>:<holder JSON>" in server time
# (TIME), so the clocks of the workers never matter. Hash commands only: under a flat
# ACL rule a worker may run them on its stream keys too, where they fail (WRONGTYPE)
# instead of overwriting or expiring the stream as SET, DEL or PEXPIRE could.

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: Take the lease of name ARGV[1] for token ARGV[2] (holder JSON ARGV[3], ARGV[4] ms)
#: unless another token's lease is stored for it, expired or not - unless that lease's
#: value is exactly ARGV[5] (compare-and-swap: a holder the caller judged gone; ""
#: for none). Whether an expired holder may be replaced is the caller's decision (it
#: may know the holder lives). Expired fields of other names are deleted on the way.
#: Returns {1, now} or {0, now, current value}.
NAME_TAKE = _NOW + """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[5] and string.match(cur, '^%d+:(%x+):') ~= ARGV[2] then
  return {0, now, cur}
end
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[4])) .. ':' .. ARGV[2] .. ':' .. ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local exp = string.match(all[i + 1], '^(%d+):')
  if all[i] ~= ARGV[1] and (not exp or tonumber(exp) <= now) then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return {1, now}
"""

#: Renew the lease of name ARGV[1] held by token ARGV[2] (arguments as NAME_TAKE).
#: Returns {1, now} renewed, {3, now} renewed although it had expired (nobody took it
#: meanwhile), {2, now} taken again because the field was gone (server data lost, or
#: pruned after it expired), {0, now, value} lost: another token holds the name now.
NAME_RENEW = _NOW + """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local state = 2
if cur then
  local exp, tok = string.match(cur, '^(%d+):(%x+):')
  if tok ~= ARGV[2] then
    return {0, now, cur}
  end
  state = 1
  if tonumber(exp) <= now then state = 3 end
end
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[4])) .. ':' .. ARGV[2] .. ':' .. ARGV[3])
return {state, now}
"""

#: Delete the lease of name ARGV[1] if token ARGV[2] still holds it. Returns 1 or 0.
NAME_RELEASE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.match(cur, '^%d+:(%x+):') == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

#: Take or renew the ownership of a partition (``ordered=True`` handlers): KEYS[1] the
#: owner key, ARGV[1] the consumer name, ARGV[2] the lease in ms, ARGV[3..] the names of
#: the group's live consumers (an owner not among them is dead: its lease is taken over).
#: Returns 2 taken (free, or a dead consumer's), 1 renewed (ours already: also after a
#: restart under the same name), 0 a live consumer owns it.
OWNER_TAKE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  for i = 3, #ARGV do
    if ARGV[i] == cur then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
if cur == ARGV[1] then return 1 end
return 2
"""

#: Give up the ownership of KEYS[1] if consumer ARGV[1] still holds it. Returns 1 or 0.
OWNER_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
