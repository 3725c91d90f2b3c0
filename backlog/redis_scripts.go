package backlog

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// The Lua scripts behind Create, Info, Append, AppendIdempotent, Delete,
// Range's proof, Before, TailStart and TrimExpired, and the proving read
// behind a follower's catch-up. A script that only looks answers IDs and counts, never an
// entry's payload, unless returning entries is its purpose. Each touches
// only keys of one channel, which share a Cluster hash tag, so every
// script is Cluster-safe: KEYS[1] is the meta hash, KEYS[2] the stream (the read
// takes them the other way round), then the request queue and an
// idempotency key where a script needs them.
//
// A channel with expiry_ms > 0 in its meta (ChannelConfig.Expiry) keeps
// the same TTL on its meta, its stream and its request queue: every
// script that sets it sets it on all three (PEXPIRE on a missing key does
// nothing), so that they go together and a channel created again under
// the name never finds a predecessor's queue. Channels without expiry pay
// one more HMGET field per append for it.

// luaNotify tells followers (redis_follow.go) of a new entry of stream
// (a key "<prefix>ch:{<name>}") on the shard channel "<prefix>n:{<name>}",
// which shares the stream's hash tag: in Cluster a script may publish only
// to its own slot. The payload is "<id> <prev> <data>", prev being the ID
// of the newest entry held before id, or "-" when the stream held none:
// a follower whose cursor is prev takes the entry as is, with no read,
// since nothing lies between them. prev must be read before the XADD.
// A channel name has no braces (ValidChannel), so the match is exact.
const luaNotify = `
local function prevOf(stream)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if last[1] then return last[1][1] end
  return '-'
end
local function notify(stream, id, prev, data)
  local p, name = string.match(stream, '^(.*)ch:{([^{}]*)}$')
  if p then
    redis.call('SPUBLISH', p .. 'n:{' .. name .. '}', id .. ' ' .. prev .. ' ' .. data)
  end
end
`

// luaRefresh restarts the countdown of an expiring channel: meta, stream
// and request queue expire ex milliseconds from now (ex is a string from
// the meta, or false when absent; a no-op unless ex > 0). One absolute
// instant for all three, from one TIME, not three PEXPIREs: Redis 7.0
// reads the clock per PEXPIRE, so the stream could outlive its meta by a
// millisecond, and a reply XADD ... NOMKSTREAM landing in it would
// succeed into a channel that no longer exists.
const luaRefresh = `
local function refresh(ex, meta, stream, req)
  if ex and (tonumber(ex) or 0) > 0 then
    local t = redis.call('TIME')
    local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ex)
    redis.call('PEXPIREAT', meta, at)
    redis.call('PEXPIREAT', stream, at)
    redis.call('PEXPIREAT', req, at)
  end
end
`

// createScript makes the meta hash unless it exists. KEYS[3] is the
// request queue. ARGV: max_len, retention_ms, expiry_ms, and '1' to only
// refresh a channel that exists (the channel limit is reached). created_ms is
// Redis's clock, the same clock as entry IDs.
// A stream without meta is no channel's (a deleted channel's tombstone, or
// entries a publisher added after the delete): the new channel starts
// empty, and it keeps the stream's last generated ID, so that its IDs go
// on after the old channel's even within one millisecond (a client holding
// an old ID must never find it held again), with entries-added reset, so
// that a resume from 0-0 is proved as on any new channel. Its created_ms
// is after that last ID too: appendOnceScript tells the two channels'
// idempotency keys apart by it.
//
// An expiring channel (expiry_ms > 0) needs its stream from the start, to
// carry the TTL, or a publisher's XADD would make one that outlives the
// meta: made with an entry at once removed, then XSETID back to 0-0 with
// entries-added 0, it is a stream that never held anything (Info's
// LastID stays 0-0, a resume from 0-0 is proved). Create of an existing
// expiring channel restarts its countdown, whatever ARGV says.
// Returns {1, retention_ms} when created, {0, the stored retention_ms}
// when the channel existed, {-1, '0'} when it did not and ARGV[4] is '1'.
var createScript = redis.NewScript(luaRefresh + `
if redis.call('EXISTS', KEYS[1]) == 1 then
  local m = redis.call('HMGET', KEYS[1], 'retention_ms', 'expiry_ms')
  refresh(m[2], KEYS[1], KEYS[2], KEYS[3])
  return {0, m[1] or '0'}
end
if ARGV[4] == '1' then return {-1, '0'} end
local ex = tonumber(ARGV[3])
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local info = redis.pcall('XINFO', 'STREAM', KEYS[2])
if not info['err'] then
  local last
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
  local lms = tonumber(string.match(last, '^(%d+)-'))
  if lms >= ms then ms = lms + 1 end
  redis.call('XTRIM', KEYS[2], 'MAXLEN', 0)
  redis.call('XSETID', KEYS[2], last, 'ENTRIESADDED', 0)
  redis.call('PERSIST', KEYS[2])
elseif ex > 0 then
  redis.call('XADD', KEYS[2], '*', 'created', '1')
  redis.call('XTRIM', KEYS[2], 'MAXLEN', 0)
  redis.call('XSETID', KEYS[2], '0-0', 'ENTRIESADDED', 0, 'MAXDELETEDID', '0-0')
end
if ex > 0 then
  redis.call('HSET', KEYS[1], 'max_len', ARGV[1], 'retention_ms', ARGV[2],
    'created_ms', string.format('%d', ms), 'expiry_ms', ARGV[3])
  refresh(ARGV[3], KEYS[1], KEYS[2], KEYS[3])
else
  redis.call('HSET', KEYS[1], 'max_len', ARGV[1], 'retention_ms', ARGV[2],
    'created_ms', string.format('%d', ms))
end
return {1, ARGV[2]}
`)

// appendScript adds ARGV[1] as field data, trims to max_len exactly,
// restarts an expiring channel's countdown (KEYS[3] is the request queue)
// and notifies followers (luaNotify). Returns the new ID, or nil when the
// channel does not exist. It is also the body of the tslm_publish
// function (redis_function.go).
var appendScript = redis.NewScript(luaRefresh + luaNotify + luaAppendBody)

const luaAppendBody = `
local m = redis.call('HMGET', KEYS[1], 'max_len', 'expiry_ms')
local ml = m[1]
if not ml then return false end
local prev = prevOf(KEYS[2])
local id
if tonumber(ml) <= 0 then
  id = redis.call('XADD', KEYS[2], '*', 'data', ARGV[1])
else
  id = redis.call('XADD', KEYS[2], 'MAXLEN', ml, '*', 'data', ARGV[1])
end
refresh(m[2], KEYS[1], KEYS[2], KEYS[3])
notify(KEYS[2], id, prev, ARGV[1])
return id
`

// appendOnceScript is appendScript with the idempotency key KEYS[3]
// (and the request queue KEYS[4]): when it holds an ID appended to this
// channel (the created_ms recorded with it is the meta's: a channel
// created again after a delete is another channel), it returns that ID
// and appends nothing, restarting no countdown; otherwise it appends
// ARGV[1] and remembers the ID for ARGV[2] milliseconds. Returns {id, 1}
// for a duplicate, {id, 0} for a new entry, nil when the channel does not
// exist.
var appendOnceScript = redis.NewScript(luaRefresh + luaNotify + `
local m = redis.call('HMGET', KEYS[1], 'max_len', 'created_ms', 'expiry_ms')
local ml = m[1]
if not ml then return false end
local epoch = m[2] or ''
local prev = redis.call('GET', KEYS[3])
if prev then
  local sp = string.find(prev, ' ', 1, true)
  if sp and string.sub(prev, 1, sp - 1) == epoch then
    return {string.sub(prev, sp + 1), 1}
  end
end
local before = prevOf(KEYS[2])
local id
if tonumber(ml) <= 0 then
  id = redis.call('XADD', KEYS[2], '*', 'data', ARGV[1])
else
  id = redis.call('XADD', KEYS[2], 'MAXLEN', ml, '*', 'data', ARGV[1])
end
redis.call('SET', KEYS[3], epoch .. ' ' .. id, 'PX', ARGV[2])
refresh(m[3], KEYS[1], KEYS[2], KEYS[4])
notify(KEYS[2], id, before, ARGV[1])
return {id, 0}
`)

// deleteScript removes the meta and replaces the stream's entries with a
// tombstone, an entry with the field deleted, and notifies followers with
// prev "-", which no cursor matches: their catch-up read then finds the
// meta gone. XADD after the last ID keeps the tombstone after every
// cursor, so that the safety poll finds it too. The
// stream expires after ARGV[1] milliseconds, or goes when the channel is
// created again. KEYS[3], the request queue, goes at once: nobody is owed
// a reply on a deleted channel. Returns 1, or 0 when the channel does not
// exist.
var deleteScript = redis.NewScript(luaNotify + `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[3])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '1', '*', 'deleted', '1')
redis.call('PEXPIRE', KEYS[2], ARGV[1])
notify(KEYS[2], id, '-', '')
return 1
`)

// trimScript drops entries older than the channel's retention_ms, judged by
// Redis's clock, except the newest entry, which stays however old: a
// client that saw it can then always prove it resumes right after it.
// Returns the number dropped, -1 when the channel is gone, -2 when it has
// no retention.
var trimScript = redis.NewScript(`
local r = redis.call('HGET', KEYS[1], 'retention_ms')
if not r then return -1 end
r = tonumber(r)
if r <= 0 then return -2 end
local t = redis.call('TIME')
local minms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - r
if minms <= 0 then return 0 end
local minid = string.format('%d-0', minms)
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #newest == 0 then return 0 end
if tonumber(string.match(newest[1][1], '^(%d+)-')) < minms then
  minid = newest[1][1]
end
return redis.call('XTRIM', KEYS[2], 'MINID', minid)
`)

// tailStartScript returns the ID of the oldest of the newest ARGV[1]
// entries, '0-0' when the stream holds none (or ARGV[1] is 0), or nil when
// the channel does not exist. It walks back in chunks so that Redis never
// materializes more than tailStartChunk entries at once, and returns no
// payload: the broker reads those forward, a page at a time.
var tailStartScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n, chunk = tonumber(ARGV[1]), ` + tailStartChunk + `
local id, before = '0-0', '+'
while n > 0 do
  local c = math.min(n, chunk)
  local es = redis.call('XREVRANGE', KEYS[2], before, '-', 'COUNT', c)
  if #es == 0 then break end
  id = es[#es][1]
  n = n - #es
  if #es < c then break end
  before = '(' .. id
end
return id
`)

// beforeScript answers Before for entry ARGV[1]: {} when it is not held,
// {id} when it is the oldest held, {id, prev} otherwise, or nil when the
// channel does not exist. One XREVRANGE, so both come from one state; no
// payload crosses the network.
var beforeScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local es = redis.call('XREVRANGE', KEYS[2], ARGV[1], '-', 'COUNT', 2)
if #es == 0 or es[1][1] ~= ARGV[1] then return {} end
if #es == 1 then return {es[1][1]} end
return {es[1][1], es[2][1]}
`)

// luaStreamInfo returns the fields of XINFO STREAM key named in want (a
// set of field names) as a table, so that a script hands the client only
// those, and the ID of the stream's oldest entry as 'first-entry-id'.
// XINFO STREAM copies the entries it shows into the script, at about
// 1.4 ns a byte, more than sending them would cost Redis (docs/redis.md,
// "What a subscribe costs"), so it runs in FULL form with COUNT 1, which
// shows the oldest entry only, rather than in the plain form, which shows
// the oldest and the newest. A channel's stream has no consumer groups, so the FULL
// form adds nothing else.
const luaStreamInfo = `
local function streamInfo(key, want)
  local info = redis.call('XINFO', 'STREAM', key, 'FULL', 'COUNT', 1)
  local out = {}
  for i = 1, #info, 2 do
    local k, v = info[i], info[i + 1]
    if k == 'entries' then
      if #v > 0 then out['first-entry-id'] = v[1][1] end
    elseif want[k] then
      out[k] = v
    end
  end
  return out
end
`

// infoScript answers Info with counts and IDs, no payload: {max_len,
// retention_ms, created_ms, expiry_ms, length, first ID, last generated
// ID}, each meta field nil when unset, '0-0' for IDs the stream has not
// (a channel whose stream does not exist yet is empty), or nil when the
// meta KEYS[1] does not exist. KEYS[2] is the stream. The last generated
// ID, which Info's LastID is (it stays when a publisher's trim or a loss
// removed the newest entries), is only in XINFO STREAM.
var infoScript = redis.NewScript(luaStreamInfo + `
local m = redis.call('HMGET', KEYS[1], 'max_len', 'retention_ms', 'created_ms', 'expiry_ms')
if not (m[1] or m[2] or m[3] or m[4]) then return false end
local len, first, last = 0, '0-0', '0-0'
if redis.call('EXISTS', KEYS[2]) == 1 then
  local info = streamInfo(KEYS[2], {['length'] = true, ['last-generated-id'] = true})
  len, last = info['length'], info['last-generated-id']
  first = info['first-entry-id'] or '0-0'
end
return {m[1], m[2], m[3], m[4], len, first, last}
`)

// continuityScript is Range's proof, run after its XRANGE: 1 when the
// entry ARGV[1] is held in stream KEYS[2] (Redis removes only from a
// stream's head, so whatever followed it then is held too), or ARGV[1] is
// 0-0 and nothing was ever removed (entries-added equals length, or the
// stream does not exist); else 0. Only that answer crosses the network,
// not the entry it looks at.
var continuityScript = redis.NewScript(luaStreamInfo + `
local after = ARGV[1]
if after ~= '0-0' then
  return #redis.call('XRANGE', KEYS[2], after, after) > 0 and 1 or 0
end
if redis.call('EXISTS', KEYS[2]) == 0 then return 1 end
local info = streamInfo(KEYS[2], {['entries-added'] = true, ['length'] = true})
return info['entries-added'] == info['length'] and 1 or 0
`)

// tailStartChunk bounds the entries one step of tailStartScript reads.
const tailStartChunk = "64"

// readScript reads stream KEYS[1] after cursor ARGV[1] for a follower's
// catch-up, up to
// ARGV[2] entries (0 = no limit), and tells in the same atomic step whether
// that proves nothing after the cursor was lost: the cursor entry is held
// (Redis removes only from the head, so everything after it is too), or
// the cursor is 0-0 and nothing was ever removed (entries-added == length).
// Returns {1 when proved else 0, entries after the cursor}, or {2, {}}
// when the meta KEYS[2] is gone but the stream is not: the channel was
// deleted (its tombstone), or a publisher XADDed to a stream without
// meta, breaking the contract. With neither, nothing is known to have
// happened to the channel: a Redis restarted empty, or a tombstone that
// expired before this follower looked, so nothing is reported until the
// channel is created again and its next entry shows the loss as a gap,
// as an entry is needed to show any loss.
var readScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {1, {}} end
  return {2, {}}
end
local cur, n = ARGV[1], tonumber(ARGV[2])
local proved, start
if cur == '0-0' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {1, {}} end
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local added, len
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then added = info[i + 1]
    elseif info[i] == 'length' then len = info[i + 1] end
  end
  proved, start = added == len, '-'
else
  proved = #redis.call('XRANGE', KEYS[1], cur, cur) > 0
  start = '(' .. cur
end
local entries
if n > 0 then
  entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', n)
else
  entries = redis.call('XRANGE', KEYS[1], start, '+')
end
return {proved and 1 or 0, entries}
`)

// scriptCall is one invocation in evalPipelined.
type scriptCall struct {
	keys []string
	args []any
}

// evalPipelined runs script once per call in one pipeline by EVALSHA.
// When Redis lost the script (a restart, SCRIPT FLUSH), it loads it and
// runs the pipeline again; the scripts are safe to repeat.
func evalPipelined(ctx context.Context, c redis.UniversalClient, script *redis.Script, calls []scriptCall) []*redis.Cmd {
	for attempt := 0; ; attempt++ {
		pipe := c.Pipeline()
		cmds := make([]*redis.Cmd, len(calls))
		for i, call := range calls {
			cmds[i] = script.EvalSha(ctx, pipe, call.keys, call.args...)
		}
		pipe.Exec(ctx) // errors are read per command
		if attempt > 0 || !anyNoScript(cmds) {
			return cmds
		}
		if err := script.Load(ctx, c).Err(); err != nil {
			return cmds
		}
	}
}

func anyNoScript(cmds []*redis.Cmd) bool {
	for _, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			return true
		}
	}
	return false
}
