package backlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The request queue of a channel is the stream "<prefix>req:{<channel>}"
// (reqKey), whose entries have the fields reply_to, deadline_ms (Unix
// milliseconds) and data. Workers are Redis consumer groups on it, so an
// internal app may consume with XREADGROUP, XACK and XAUTOCLAIM directly;
// the scripts below only add what a worker needs not know: the channel
// must exist, and the queue is bounded.
//
// Trimming: deleting entries on XACK would take them from groups that did
// not get them yet, so an entry goes once every group is done with it:
// trimAcked trims (XTRIM MINID) up to the oldest entry any group still has
// pending or not yet delivered. Ack runs it, and Enqueue when the queue is
// full. Expired entries are dropped by Enqueue with XDEL: from the head at
// every call (cheap: it stops at the first live entry), from the whole
// queue when it is full. A dropped entry may stay in a group's pending
// list, where Reclaim (XAUTOCLAIM) forgets it.

var _ Requests = (*Redis)(nil)

// reqKey is "<prefix>req:{<channel>}", the channel's request queue, in the
// channel's hash slot so that scripts may check its meta.
func (r *Redis) reqKey(channel string) string {
	return r.cfg.KeyPrefix + "req:{" + channel + "}"
}

// luaReqHelpers are the Lua functions the request scripts share.
const luaReqHelpers = `
local function deadline(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'deadline_ms' then return tonumber(fields[i + 1]) end
  end
end
local function dropexpired(key, now, all)
  local start = '-'
  -- Most calls find the head alive: read it alone, and more only while
  -- entries turn out expired, so that the common case costs one entry.
  local count = all and 100 or 1
  while true do
    local es = redis.call('XRANGE', key, start, '+', 'COUNT', count)
    for _, e in ipairs(es) do
      local dl = deadline(e[2])
      if dl and dl > now then
        if not all then return end
      else
        redis.call('XDEL', key, e[1])
      end
    end
    if #es < count then return end
    start = '(' .. es[#es][1]
    count = math.min(count * 4, 100)
  end
end
local function expirewith(meta, key)
  local ex = redis.call('HGET', meta, 'expiry_ms')
  if ex and (tonumber(ex) or 0) > 0 then
    local at = redis.call('PEXPIRETIME', meta)
    if at > 0 then redis.call('PEXPIREAT', key, at) end
  end
end
local function idparts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function trimacked(key)
  if redis.call('EXISTS', key) == 0 then return end
  local groups = redis.call('XINFO', 'GROUPS', key)
  if #groups == 0 then return end
  local fms, fseq
  for _, g in ipairs(groups) do
    local name, pending, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1]
      elseif g[i] == 'pending' then pending = g[i + 1]
      elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    local ms, seq
    if pending > 0 then
      ms, seq = idparts(redis.call('XPENDING', key, name)[2])
    else
      ms, seq = idparts(last)
      seq = seq + 1
    end
    if not fms or ms < fms or (ms == fms and seq < fseq) then
      fms, fseq = ms, seq
    end
  end
  redis.call('XTRIM', key, 'MINID', string.format('%d-%d', fms, fseq))
end
`

// enqueueScript adds a request to KEYS[2] if the channel's meta KEYS[1]
// exists. ARGV: now_ms, max_requests, reply_to, deadline_ms, data. The
// queue of an expiring channel gets the meta's TTL (expirewith): an
// enqueue does not restart the countdown, but a queue it made must go
// with the channel. Returns the new ID, -1 when the queue is full, nil
// when the channel does not exist.
var enqueueScript = redis.NewScript(luaReqHelpers + `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local now, max = tonumber(ARGV[1]), tonumber(ARGV[2])
dropexpired(KEYS[2], now, false)
if redis.call('XLEN', KEYS[2]) >= max then
  trimacked(KEYS[2])
  dropexpired(KEYS[2], now, true)
  if redis.call('XLEN', KEYS[2]) >= max then return -1 end
end
local id = redis.call('XADD', KEYS[2], '*', 'reply_to', ARGV[3], 'deadline_ms', ARGV[4], 'data', ARGV[5])
expirewith(KEYS[1], KEYS[2])
return id
`)

// groupScript creates group ARGV[1] on KEYS[2] from its beginning, if the
// channel's meta KEYS[1] exists: XGROUP CREATE MKSTREAM alone would make a
// queue for a deleted channel. A group that exists already (a racing
// Claim) is fine. A queue it makes has the channel's TTL, as in
// enqueueScript. Returns 1, or nil when the channel does not exist.
var groupScript = redis.NewScript(luaReqHelpers + `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local r = redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
if type(r) == 'table' and r['err'] and not string.find(r['err'], '^BUSYGROUP') then
  return r
end
expirewith(KEYS[1], KEYS[2])
return 1
`)

// ackScript acks the IDs ARGV[2...] for group ARGV[1] and trims what every
// group is done with. Returns how many were pending, nil when the channel
// does not exist.
var ackScript = redis.NewScript(luaReqHelpers + `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('XACK', KEYS[2], ARGV[1], ARGV[i])
end
if n > 0 then trimacked(KEYS[2]) end
return n
`)

// reclaimScript runs XAUTOCLAIM for group ARGV[1] and consumer ARGV[2],
// min idle ARGV[3] ms, along the pending list until ARGV[4] live requests
// are found or the list ends. Expired ones (deadline ARGV[5] ms or
// earlier) are acked instead of handed out; entries deleted meanwhile come
// back apart in XAUTOCLAIM's third element and are skipped. Returns
// {{id, reply_to, deadline_ms, data, deliveries}, ...}, or nil when the
// channel does not exist.
var reclaimScript = redis.NewScript(luaReqHelpers + `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local g, c, idle, n, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local out, start, acked = {}, '0-0', false
repeat
  local res = redis.pcall('XAUTOCLAIM', KEYS[2], g, c, idle, start, 'COUNT', n - #out)
  if res['err'] then return out end -- no queue or no group: nothing pending
  start = res[1]
  for _, e in ipairs(res[2]) do
    local f = e[2]
    if f then
      local dl = deadline(f)
      if not dl or dl <= now then
        redis.call('XACK', KEYS[2], g, e[1])
        acked = true
      else
        local rt, data, dls = '', '', ''
        for i = 1, #f, 2 do
          if f[i] == 'reply_to' then rt = f[i + 1]
          elseif f[i] == 'data' then data = f[i + 1]
          elseif f[i] == 'deadline_ms' then dls = f[i + 1] end
        end
        local p = redis.call('XPENDING', KEYS[2], g, e[1], e[1], 1)
        out[#out + 1] = {e[1], rt, dls, data, p[1][4]}
      end
    end
  end
until #out >= n or start == '0-0'
if acked then trimacked(KEYS[2]) end
return out
`)

// releaseScript makes the IDs ARGV[3...] pending for group ARGV[1] idle
// for ARGV[2] ms, on consumer releasedConsumer, with XCLAIM ... JUSTID,
// which leaves their delivery counts alone: the next XAUTOCLAIM with any
// smaller min idle takes them and counts the delivery. IDs not pending are
// ignored; pending ones whose entry was deleted XCLAIM drops from the
// pending list. At most 100 IDs per XCLAIM, so that unpack stays far
// within Lua's stack. Returns how many were pending (and are now
// released), nil when the channel does not exist.
var releaseScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n = 0
for i = 3, #ARGV, 100 do
  local args = {'XCLAIM', KEYS[2], ARGV[1], '` + releasedConsumer + `', '0'}
  for j = i, math.min(i + 99, #ARGV) do args[#args + 1] = ARGV[j] end
  args[#args + 1] = 'IDLE'
  args[#args + 1] = ARGV[2]
  args[#args + 1] = 'JUSTID'
  local res = redis.pcall(unpack(args))
  if res['err'] then
    if string.find(res['err'], '^NOGROUP') then return 0 end -- no queue or no group
    return res
  end
  n = n + #res
end
return n
`)

// leaveScript deletes consumer ARGV[2] of group ARGV[1] on KEYS[2] when it
// has nothing pending, in one step, so that no request can become pending
// on it in between and be lost with it. Returns 1 when the consumer is gone
// (or the group never was), 0 when it stays, nil when the channel does not
// exist.
var leaveScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local p = redis.pcall('XPENDING', KEYS[2], ARGV[1], '-', '+', 1, ARGV[2])
if p['err'] then
  if string.find(p['err'], '^NOGROUP') then return 1 end
  return p
end
if #p > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[2], ARGV[1], ARGV[2])
return 1
`)

// Enqueue runs on the writer: a re-sent enqueue would queue the request
// twice.
func (r *Redis) Enqueue(ctx context.Context, channel string, req Request) (ID, error) {
	now := r.cfg.Now()
	if err := CheckRequest(req, now); err != nil {
		return ID{}, err
	}
	if r.isClosed() {
		return ID{}, ErrClosed
	}
	v, err := enqueueScript.Run(ctx, r.writer, []string{r.metaKey(channel), r.reqKey(channel)},
		now.UnixMilli(), r.cfg.MaxRequests, req.ReplyTo, req.Deadline.UnixMilli(), req.Data).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return ID{}, ErrNotFound
	case err != nil:
		return ID{}, r.wrap(ctx, err)
	}
	switch v := v.(type) {
	case int64:
		return ID{}, ErrLimit
	case string:
		id, err := ParseID(v)
		if err != nil {
			return ID{}, fmt.Errorf("backlog: redis returned id %q: %w", v, err)
		}
		return id, nil
	}
	return ID{}, fmt.Errorf("backlog: enqueue script returned %v", v)
}

// Claim runs XREADGROUP, blocking on a dedicated connection to the node
// that serves the queue when block is positive (see blockOn), so that ctx
// cancels it at once with CLIENT UNBLOCK. A missing group (NOGROUP, also
// when the queue does not exist yet) is created and the read tried again;
// so is one dropped while blocked (Redis 7 fails the read when the key is
// deleted), which finds the channel gone. On a Cluster, a blocked read
// that meets the queue's slot moving or its master replaced (errMoving)
// polls through the cluster client, which follows the redirections, until
// the slot map settles.
func (r *Redis) Claim(ctx context.Context, channel, group, consumer string, n int, block time.Duration) ([]Request, error) {
	if err := checkWorker(group, consumer, n); err != nil {
		return nil, err
	}
	if r.isClosed() {
		return nil, ErrClosed
	}
	key := r.reqKey(channel)
	var until time.Time
	if block > 0 {
		until = time.Now().Add(block)
	}
	for creates := 0; ; {
		wait := time.Duration(-1) // XReadGroupArgs: no BLOCK
		if block > 0 {
			if wait = time.Until(until); wait <= 0 {
				return nil, nil
			}
		}
		xs, err := r.xreadgroup(ctx, key, group, consumer, n, wait)
		if errors.Is(err, errMoving) {
			t := time.NewTimer(min(movingPause, wait))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
			continue
		}
		if redis.HasErrorPrefix(err, "NOGROUP") || redis.HasErrorPrefix(err, "UNBLOCKED") {
			// Bounded: a group that vanishes again and again (a channel
			// deleted and created in a loop) is a failure to report.
			if creates++; creates > 3 {
				return nil, err
			}
			if err := r.createGroup(ctx, channel, group); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(xs) == 0 {
			return nil, nil
		}
		live, dead := r.splitExpired(xs)
		if len(dead) > 0 {
			if err := r.client.XAck(ctx, key, group, dead...).Err(); err != nil {
				return nil, r.wrap(ctx, err)
			}
		}
		if len(live) > 0 {
			return live, nil
		}
		// Everything read had expired: read on, within block.
	}
}

func (r *Redis) createGroup(ctx context.Context, channel, group string) error {
	err := groupScript.Run(ctx, r.client, []string{r.metaKey(channel), r.reqKey(channel)}, group).Err()
	if errors.Is(err, redis.Nil) {
		return ErrNotFound
	}
	return r.wrap(ctx, err)
}

// xreadgroup reads up to n new entries for consumer; wait < 0 does not
// block. A blocking read on a reused connection that failed (it may have
// died with a restarted Redis while idle) is tried once more on another.
func (r *Redis) xreadgroup(ctx context.Context, key, group, consumer string, n int, wait time.Duration) ([]redis.XMessage, error) {
	args := &redis.XReadGroupArgs{Group: group, Consumer: consumer, Streams: []string{key, ">"}, Count: int64(n), Block: -1}
	var res []redis.XStream
	var err error
	if wait < 0 {
		res, err = r.client.XReadGroup(ctx, args).Result()
		err = r.wrap(ctx, err)
	} else {
		args.Block = max(wait.Truncate(time.Millisecond), time.Millisecond) // never BLOCK 0
		for attempt := 0; ; attempt++ {
			var retry bool
			retry, err = r.blockOn(ctx, key, func(ctx context.Context, conn *redis.Conn) (err error) {
				res, err = conn.XReadGroup(ctx, args).Result()
				return err
			})
			if !retry || attempt > 0 {
				break
			}
		}
		if isMoving(err) {
			// Not blocking: the cluster client follows MOVED and ASK,
			// and a MOVED makes it reload the slot map for the next
			// blockOn.
			args.Block = -1
			res, err = r.client.XReadGroup(ctx, args).Result()
			if errors.Is(err, redis.Nil) || (err == nil && len(res) == 0) {
				return nil, errMoving
			}
		}
		err = r.wrap(ctx, err)
	}
	if errors.Is(err, redis.Nil) || (err == nil && len(res) == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return res[0].Messages, nil
}

// splitExpired converts entries claimed for the first time, setting apart
// the IDs of those past their deadline.
func (r *Redis) splitExpired(xs []redis.XMessage) (live []Request, dead []string) {
	now := r.cfg.Now()
	for _, x := range xs {
		req, ok := requestOf(x.ID, x.Values)
		if !ok || expired(req.Deadline, now) {
			dead = append(dead, x.ID)
			continue
		}
		req.Deliveries = 1
		live = append(live, req)
	}
	return live, dead
}

// requestOf reads an entry's fields; ok is false for a malformed ID. A
// missing or malformed deadline reads as zero: expired.
func requestOf(id string, fields map[string]any) (Request, bool) {
	pid, err := ParseID(id)
	if err != nil {
		return Request{}, false
	}
	req := Request{ID: pid}
	req.ReplyTo, _ = fields["reply_to"].(string)
	data, _ := fields["data"].(string)
	req.Data = []byte(data)
	dl, _ := fields["deadline_ms"].(string)
	if ms, err := strconv.ParseInt(dl, 10, 64); err == nil {
		req.Deadline = time.UnixMilli(ms)
	}
	return req, true
}

// Ack runs on the shared client: XACK and the trim are safe to repeat, so
// a retried Ack at worst reports fewer acked than it acked.
func (r *Redis) Ack(ctx context.Context, channel, group string, ids ...ID) (int, error) {
	if err := checkGroup(group); err != nil {
		return 0, err
	}
	if r.isClosed() {
		return 0, ErrClosed
	}
	args := make([]any, 0, len(ids)+1)
	args = append(args, group)
	for _, id := range ids {
		args = append(args, id.String())
	}
	n, err := ackScript.Run(ctx, r.client, []string{r.metaKey(channel), r.reqKey(channel)}, args...).Int()
	if errors.Is(err, redis.Nil) {
		return 0, ErrNotFound
	}
	return n, r.wrap(ctx, err)
}

// Reclaim runs reclaimScript: XAUTOCLAIM and, for the delivery counts it
// raised, XPENDING on each entry claimed, in one atomic step.
func (r *Redis) Reclaim(ctx context.Context, channel, group, consumer string, minIdle time.Duration, n int) ([]Request, error) {
	if err := checkWorker(group, consumer, n); err != nil {
		return nil, err
	}
	if r.isClosed() {
		return nil, ErrClosed
	}
	vals, err := reclaimScript.Run(ctx, r.client, []string{r.metaKey(channel), r.reqKey(channel)},
		group, consumer, max(minIdle.Milliseconds(), 0), n, r.cfg.Now().UnixMilli()).Slice()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, r.wrap(ctx, err)
	}
	out := make([]Request, 0, len(vals))
	for _, v := range vals {
		e, _ := v.([]any)
		if len(e) != 5 {
			return nil, fmt.Errorf("backlog: reclaim script returned %v", v)
		}
		id, _ := e[0].(string)
		rt, _ := e[1].(string)
		dl, _ := e[2].(string)
		data, _ := e[3].(string)
		req, ok := requestOf(id, map[string]any{"reply_to": rt, "deadline_ms": dl, "data": data})
		if !ok {
			continue
		}
		req.Deliveries, _ = e[4].(int64)
		out = append(out, req)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// Release runs releaseScript on the shared client: XCLAIM is safe to
// repeat, so a retried Release at worst reports fewer released than it
// released, as Ack does.
func (r *Redis) Release(ctx context.Context, channel, group string, ids ...ID) (int, error) {
	if err := checkGroup(group); err != nil {
		return 0, err
	}
	if r.isClosed() {
		return 0, ErrClosed
	}
	ids = uniqueIDs(ids)
	args := make([]any, 0, len(ids)+2)
	args = append(args, group, releasedIdle.Milliseconds())
	for _, id := range ids {
		args = append(args, id.String())
	}
	n, err := releaseScript.Run(ctx, r.client, []string{r.metaKey(channel), r.reqKey(channel)}, args...).Int()
	if errors.Is(err, redis.Nil) {
		return 0, ErrNotFound
	}
	return n, r.wrap(ctx, err)
}

// touchScript claims again, for consumer ARGV[2], the IDs ARGV[3...]
// pending for group ARGV[1] on that very consumer: XCLAIM with min idle 0
// takes an entry from whoever has it, hence the XPENDING check first, in
// the same atomic step. XCLAIM resets the idle time, and with JUSTID it
// leaves the delivery count alone; a pending entry deleted meanwhile it
// drops from the pending list and does not return. Returns how many were
// touched, nil when the channel does not exist.
var touchScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local g, c, n = ARGV[1], ARGV[2], 0
for i = 3, #ARGV do
  local p = redis.pcall('XPENDING', KEYS[2], g, ARGV[i], ARGV[i], 1)
  if p['err'] then
    if string.find(p['err'], '^NOGROUP') then return 0 end -- no queue or no group
    return p
  end
  if p[1] and p[1][2] == c then
    n = n + #redis.call('XCLAIM', KEYS[2], g, c, 0, ARGV[i], 'JUSTID')
  end
end
return n
`)

// Touch runs touchScript on the shared client: a retried Touch claims
// again what it claimed, which is harmless.
func (r *Redis) Touch(ctx context.Context, channel, group, consumer string, ids ...ID) (int, error) {
	if err := checkGroup(group); err != nil {
		return 0, err
	}
	if err := checkConsumer(consumer); err != nil {
		return 0, err
	}
	if r.isClosed() {
		return 0, ErrClosed
	}
	ids = uniqueIDs(ids)
	args := make([]any, 0, len(ids)+2)
	args = append(args, group, consumer)
	for _, id := range ids {
		args = append(args, id.String())
	}
	n, err := touchScript.Run(ctx, r.client, []string{r.metaKey(channel), r.reqKey(channel)}, args...).Int()
	if errors.Is(err, redis.Nil) {
		return 0, ErrNotFound
	}
	return n, r.wrap(ctx, err)
}

// Leave runs leaveScript; it is safe to repeat.
func (r *Redis) Leave(ctx context.Context, channel, group, consumer string) (bool, error) {
	if err := checkWorker(group, consumer, 1); err != nil {
		return false, err
	}
	if r.isClosed() {
		return false, ErrClosed
	}
	n, err := leaveScript.Run(ctx, r.client, []string{r.metaKey(channel), r.reqKey(channel)}, group, consumer).Int()
	if errors.Is(err, redis.Nil) {
		return false, ErrNotFound
	}
	return n == 1, r.wrap(ctx, err)
}
