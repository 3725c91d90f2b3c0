package backlog

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The channel registry, which bounds how many channels the Redis backlog
// holds (RedisConfig.MaxChannels), as MemoryConfig.MaxChannels bounds the
// memory one. It is the sorted set "<prefix>channels": one member per
// channel, scored with the Unix millisecond (Redis's clock) at which a
// gateway checks that the channel still exists: for an expiring channel,
// the earliest its keys can expire; for the others, channelRecheck after
// its last create or check. Its size is the count.
//
// A counter changed in the create and delete scripts would not do: the
// registry lives in its own Cluster slot, which no script on a channel's
// slot may touch, and an expiring channel goes by its keys' TTL, with no
// script to count it out. So Create reserves the channel's member first,
// atomically with the limit check (a registry script), then runs the
// create script; Delete, and TrimExpired for channels whose check is due,
// remove a member whose meta is gone. Drift is bounded: a member left by a
// create that failed, or by a channel an operator deleted by hand, goes at
// its next check; a channel made by hand is counted from its first create
// through the gateway, or by the recount in docs/redis.md.
//
// A check reads the meta's PTTL, then removes or reschedules the member
// only if its score is still the one it saw: a reservation always raises
// the score, so a channel created again between the two steps is never
// removed.

// channelRecheck is how long a member of a channel without expiry waits
// between checks that it still exists.
const channelRecheck = time.Hour

// checkBatch is how many due members one round of checkDue checks.
const checkBatch = 256

// channelsKey is the registry: a single key in its own slot.
func (r *Redis) channelsKey() string { return r.cfg.KeyPrefix + "channels" }

// reserveScript registers channel ARGV[1] in the registry KEYS[1], its
// check due ARGV[3] milliseconds from now, unless it is not registered yet
// and the registry holds ARGV[2] members already, which ARGV[4] = '1'
// overrides. A registered member's score always rises, so that a check in
// flight sees that it was claimed again. Returns 1 when registered, 0 at
// the limit.
var reserveScript = redis.NewScript(`
local t = redis.call('TIME')
local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if old then
  old = tonumber(old)
  if old >= at then at = old + 1 end
elseif ARGV[4] ~= '1' and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%d', at), ARGV[1])
return 1
`)

// dueScript returns up to ARGV[1] members of the registry KEYS[1] whose
// check is due, with their scores: member, score, member, score...
var dueScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGE', KEYS[1], '-inf', string.format('%d', now), 'BYSCORE', 'LIMIT', 0, ARGV[1], 'WITHSCORES')
`)

// settleScript ends the check of member ARGV[1] of the registry KEYS[1],
// seen with score ARGV[2], whose meta's PTTL was ARGV[3]: unless the score
// changed since (the channel was created again), it removes the member of
// a channel gone (-2), or schedules its next check when its keys expire,
// or ARGV[4] milliseconds from now for a channel without expiry. Returns
// 1 when it removed the member.
var settleScript = redis.NewScript(`
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not cur or tonumber(cur) ~= tonumber(ARGV[2]) then return 0 end
local pttl = tonumber(ARGV[3])
if pttl == -2 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
if pttl < 0 then pttl = tonumber(ARGV[4]) end
local t = redis.call('TIME')
local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + pttl
redis.call('ZADD', KEYS[1], string.format('%d', at), ARGV[1])
return 0
`)

// reserve registers channel before its create script runs, expiryMs > 0
// for an expiring channel. At the limit it first frees the members of
// channels that are gone and whose check is due (expired ones, mostly),
// as Memory drops its expired channels; existingOnly then reports that
// the limit stands, so that only a channel that exists may be refreshed.
func (r *Redis) reserve(ctx context.Context, channel string, expiryMs int64) (existingOnly bool, err error) {
	for attempt := 0; ; attempt++ {
		ok, err := r.register(ctx, channel, expiryMs, false)
		if err != nil || ok {
			return false, err
		}
		if attempt > 0 {
			return true, nil
		}
		freed, err := r.checkDue(ctx)
		if err != nil {
			return false, err
		}
		if freed == 0 {
			return true, nil
		}
	}
}

// register runs reserveScript; force registers channel whatever the limit.
func (r *Redis) register(ctx context.Context, channel string, expiryMs int64, force bool) (bool, error) {
	delay := expiryMs
	if delay <= 0 {
		delay = channelRecheck.Milliseconds()
	}
	forced := "0"
	if force {
		forced = "1"
	}
	n, err := reserveScript.Run(ctx, r.client, []string{r.channelsKey()}, channel, r.cfg.MaxChannels, delay, forced).Int64()
	if err != nil {
		return false, r.wrap(ctx, err)
	}
	return n == 1, nil
}

// dueMember is a registry member whose check is due, with the score seen.
type dueMember struct {
	channel string
	score   string
}

// checkDue checks the members whose check is due, in rounds of
// checkBatch, and returns how many it removed. Each round moves every
// member it saw out of the due range (or out of the registry), so the
// rounds end; a bound keeps one call short all the same.
func (r *Redis) checkDue(ctx context.Context) (freed int, err error) {
	for range 64 {
		vals, err := dueScript.Run(ctx, r.client, []string{r.channelsKey()}, checkBatch).StringSlice()
		if err != nil {
			return freed, r.wrap(ctx, err)
		}
		due := make([]dueMember, 0, len(vals)/2)
		for i := 0; i+1 < len(vals); i += 2 {
			due = append(due, dueMember{channel: vals[i], score: vals[i+1]})
		}
		n, err := r.settle(ctx, due)
		freed += n
		if err != nil || len(due) < checkBatch {
			return freed, err
		}
	}
	return freed, nil
}

// forget checks channel's member now, after its delete.
func (r *Redis) forget(ctx context.Context, channel string) error {
	score, err := r.client.ZScore(ctx, r.channelsKey(), channel).Result()
	if err != nil {
		return r.wrap(ctx, err) // redis.Nil: not registered
	}
	_, err = r.settle(ctx, []dueMember{{channel: channel, score: strconv.FormatFloat(score, 'f', -1, 64)}})
	return err
}

// settle reads the PTTL of each member's meta in one pipeline, then runs
// settleScript for each in another, and returns how many it removed.
func (r *Redis) settle(ctx context.Context, due []dueMember) (int, error) {
	if len(due) == 0 {
		return 0, nil
	}
	pipe := r.client.Pipeline()
	ttls := make([]*redis.Cmd, len(due))
	for i, m := range due {
		ttls[i] = pipe.Do(ctx, "pttl", r.metaKey(m.channel))
	}
	pipe.Exec(ctx) // errors are read per command
	calls := make([]scriptCall, len(due))
	for i, m := range due {
		pttl, err := ttls[i].Int64() // -2: no meta; -1: no expiry
		if err != nil {
			return 0, r.wrap(ctx, err)
		}
		calls[i] = scriptCall{keys: []string{r.channelsKey()}, args: []any{m.channel, m.score, pttl, channelRecheck.Milliseconds()}}
	}
	removed := 0
	for _, cmd := range evalPipelined(ctx, r.client, settleScript, calls) {
		n, err := cmd.Int64()
		if err != nil {
			return removed, r.wrap(ctx, err)
		}
		removed += int(n)
	}
	return removed, nil
}
