package responder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig configures ServeRedis. Zero fields take the defaults named.
type RedisConfig struct {
	// Client reaches the gateway's Redis. It must allow one connection per
	// channel served, each blocked for up to Block, on top of the handlers'
	// replies: size its pool accordingly.
	Client redis.UniversalClient
	// Prefix is the gateway's TSLM_REDIS_PREFIX; default "tslm:".
	Prefix string
	// Group is the consumer group: every group receives every request.
	// Default "tslm", the group of the apps serving through the gateway's
	// WebSocket, so that they and this worker share the requests; use a
	// name of your own for a group that answers apart from them (only the
	// first answer reaches the requester).
	Group string
	// Consumer names this worker within Group; default "<hostname>-<pid>".
	// Workers must have distinct names.
	Consumer string
	// ReclaimAfter is how long a request taken by a worker that gives no
	// sign of life (it stopped, or lost Redis) waits before another worker
	// takes it over. A worker claims the requests it is handling again
	// every ReclaimAfter/3, so a slow handler keeps its requests. Give
	// every worker of a group the same value (the gateway's is
	// TSLM_REQUEST_RECLAIM_AFTER). Default 10s.
	ReclaimAfter time.Duration
	// Concurrency bounds the handlers running at once, across all
	// channels. Default 16.
	Concurrency int
	// Block is how long one read waits for requests. It bounds how long
	// ServeRedis takes to notice that ctx is done, and how often it looks
	// for requests to reclaim. Default 1s.
	Block time.Duration
}

// Defaults of RedisConfig.
const (
	DefaultPrefix       = "tslm:"
	DefaultGroup        = "tslm"
	DefaultReclaimAfter = 10 * time.Second
	DefaultConcurrency  = 16
	DefaultBlock        = time.Second
)

// publishFunction is the gateway's append for direct publishers
// (docs/redis.md, "Publishing directly"), with which replies are written.
const publishFunction = "tslm_publish"

// functionRetry is how long replies append plainly after publishFunction
// was found missing before one tries it again. A gateway loads the
// function at its start, retrying up to 30 s apart while Redis is down,
// so it may appear a little after this worker started; a try per reply
// would cost a refused round trip on every reply of a Redis that will
// never have it (before 7, or without FUNCTION), a try per 30 s costs
// nothing, and replies meanwhile are still delivered, by the poll. On a
// Cluster with one master still without the library, replies to every
// master fall back for the while: the state is per worker, not per node,
// which keeps it simple for a state that lasts until a gateway restarts.
var functionRetry = 30 * time.Second

// replyMaxLen trims an inbox as the documented plain reply command does
// (docs/redis.md) when the function is missing; the function trims it
// exactly, to the inbox's max_len.
const replyMaxLen = 1000

// releasedConsumer owns requests given up for others to take at once
// (docs/redis.md): the gateway's Release uses the same name.
const releasedConsumer = "released"

// releasedIdle is the idle time a released request is given, more than
// any worker's ReclaimAfter, so that the next XAUTOCLAIM takes it.
const releasedIdle = 30 * 24 * time.Hour

// writeTimeout bounds a reply, ack or release: they run on after ctx is
// done, so that an answer computed during shutdown still reaches Redis.
const writeTimeout = 5 * time.Second

func (c RedisConfig) withDefaults() RedisConfig {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.Consumer == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "responder"
		}
		c.Consumer = host + "-" + strconv.Itoa(os.Getpid())
	}
	if c.ReclaimAfter == 0 {
		c.ReclaimAfter = DefaultReclaimAfter
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Block == 0 {
		c.Block = DefaultBlock
	}
	return c
}

func (c RedisConfig) check() error {
	switch {
	case c.Client == nil:
		return errors.New("responder: RedisConfig.Client is nil")
	case !validPrefix(c.Prefix):
		// The channel must stay each key's Cluster hash tag.
		return fmt.Errorf("responder: prefix %q must be 1-64 bytes of visible ASCII without { or }", c.Prefix)
	case c.Consumer == releasedConsumer:
		return fmt.Errorf("responder: consumer name %q is reserved for released requests", c.Consumer)
	case c.ReclaimAfter < 0:
		return fmt.Errorf("responder: ReclaimAfter %v is negative", c.ReclaimAfter)
	case c.Concurrency < 0:
		return fmt.Errorf("responder: Concurrency %d is negative", c.Concurrency)
	case c.Block < time.Millisecond:
		// BLOCK 0 would wait forever, and ctx would never be noticed.
		return fmt.Errorf("responder: Block %v is below 1ms", c.Block)
	}
	return nil
}

// validPrefix is the rule of TSLM_REDIS_PREFIX (docs/redis.md).
func validPrefix(p string) bool {
	if len(p) == 0 || len(p) > 64 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x21 || c > 0x7e || c == '{' || c == '}' {
			return false
		}
	}
	return true
}

// ServeRedis answers the requests of channels from Redis, following the
// layout of docs/redis.md, until ctx is done; then it waits for the
// handlers running (their contexts are cancelled) and returns nil. Other
// errors are about cfg or channels; Redis failures are logged and retried
// with backoff.
//
// Each channel has its own loop, so that it works on Redis Cluster too (a
// channel's keys share one slot, different channels' keys do not): it joins
// Group on the request stream "<prefix>req:{<channel>}", waiting for that
// stream to appear if no request was ever sent to the channel, and reads
// new requests with XREADGROUP; every Block it also takes over requests
// idle for ReclaimAfter on any consumer of the group (XAUTOCLAIM), those of
// a worker that died. Requests past their deadline are acked unanswered.
// The handler's reply is appended to the request's reply_to inbox with
// FCALL tslm_publish, the gateway's own append, which the gateway hears of
// at once; then the request is acked. On a Redis without that function (no
// gateway could load it) the reply is a plain XADD, which reaches the
// requester with the gateway's poll (TSLM_POLL_INTERVAL), seconds later.
// A handler cut short by ctx leaves its request to the group's other
// workers at once.
func ServeRedis(ctx context.Context, cfg RedisConfig, h Handler, channels ...string) error {
	cfg = cfg.withDefaults()
	if err := cfg.check(); err != nil {
		return err
	}
	if h == nil {
		return errors.New("responder: nil Handler")
	}
	if err := checkChannels(channels); err != nil {
		return err
	}
	s := &redisServer{
		cfg:   cfg,
		h:     h,
		log:   slog.Default().With("component", "responder", "group", cfg.Group, "consumer", cfg.Consumer),
		slots: newSlots(cfg.Concurrency),

		functionRetry: functionRetry,
	}
	var loops sync.WaitGroup
	joined := make([]*redisChannel, 0, len(channels))
	for _, ch := range channels {
		c := &redisChannel{redisServer: s, channel: ch, key: cfg.Prefix + "req:{" + ch + "}",
			log: s.log.With("channel", ch), held: make(map[string]time.Time)}
		joined = append(joined, c)
		loops.Go(func() { c.serve(ctx) })
	}
	loops.Wait()
	s.handlers.Wait()
	for _, c := range joined {
		c.leave()
	}
	return nil
}

// leave deletes this worker's consumer from the group once it holds
// nothing (every request answered or released): Redis keeps a consumer
// for good otherwise, and a worker named after its host and pid is a new
// consumer at every start. Only this worker claims for its name, so
// nothing can become pending on it between the check and the delete.
func (c *redisChannel) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	pending, err := c.cfg.Client.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: c.key, Group: c.cfg.Group, Start: "-", End: "+", Count: 1, Consumer: c.cfg.Consumer,
	}).Result()
	if err != nil || len(pending) > 0 {
		return // no group (nothing to leave), or requests still held: keep it
	}
	if err := c.cfg.Client.XGroupDelConsumer(ctx, c.key, c.cfg.Group, c.cfg.Consumer).Err(); err != nil {
		c.log.Debug("responder: leaving the consumer group failed", "err", err)
	}
}

type redisServer struct {
	cfg      RedisConfig
	h        Handler
	log      *slog.Logger
	slots    *slots
	handlers sync.WaitGroup

	functionRetry time.Duration // functionRetry's value at the start
	// functionRetryAt is when a reply next tries publishFunction (Unix
	// ns) after it was found missing; 0 while it answers.
	functionRetryAt  atomic.Int64
	warnedNoFunction atomic.Bool
}

// redisChannel is the loop of one channel.
type redisChannel struct {
	*redisServer
	channel string
	key     string // the request stream
	log     *slog.Logger

	failing bool // a Redis failure was logged and is not over yet

	mu sync.Mutex
	// held are the requests taken and not yet answered or released, each
	// with when this worker last claimed it.
	held map[string]time.Time
}

func (c *redisChannel) serve(ctx context.Context) {
	var touching sync.WaitGroup
	defer touching.Wait()
	touching.Go(func() {
		t := time.NewTicker(max(c.cfg.ReclaimAfter/3, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				c.touch(ctx)
			}
		}
	})
	for c.join(ctx) {
		c.consume(ctx)
	}
}

// join creates the group on the request stream, from its beginning so
// that it sees every request still held, as the gateway's own group does.
// Not with MKSTREAM: that would make a request stream for a channel that
// may not exist; the stream appears with the channel's first request, so
// join waits for it. It returns false when ctx is done.
func (c *redisChannel) join(ctx context.Context) bool {
	waitMissing := backoff{min: 50 * time.Millisecond, max: time.Second}
	waitErr := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	logged := false
	for ctx.Err() == nil {
		err := c.cfg.Client.XGroupCreate(ctx, c.key, c.cfg.Group, "0").Err()
		switch {
		case err == nil, redis.HasErrorPrefix(err, "BUSYGROUP"):
			c.recovered()
			if logged {
				c.log.Info("responder: request stream found, serving")
			}
			return true
		case ctx.Err() != nil:
			return false
		case strings.Contains(err.Error(), "requires the key to exist"):
			c.recovered()
			if !logged {
				c.log.Info("responder: waiting for the channel's first request (no request stream yet)", "key", c.key)
				logged = true
			}
			sleep(ctx, waitMissing.delay())
		default:
			c.failed("XGROUP CREATE", err)
			sleep(ctx, waitErr.delay())
		}
	}
	return false
}

// consume reads and reclaims requests until ctx is done or the group is
// gone (the channel was deleted: its request stream went with it).
func (c *redisChannel) consume(ctx context.Context) {
	waitErr := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	var lastReclaim time.Time
	for ctx.Err() == nil {
		if c.slots.wait(ctx) != nil {
			return
		}
		n := c.slots.available()
		if n == 0 {
			continue // taken by another channel meanwhile
		}
		if time.Since(lastReclaim) >= c.cfg.Block {
			lastReclaim = time.Now()
			got, err := c.reclaim(ctx, n)
			if gone(err) {
				return
			}
			if err != nil {
				c.failed("XAUTOCLAIM", err)
				sleep(ctx, waitErr.delay())
				continue
			}
			if n -= got; n <= 0 {
				continue
			}
		}
		// Not cancelled with ctx: an XREADGROUP cut off in flight may
		// have handed requests to this consumer that nobody would see
		// until ReclaimAfter. Block bounds the wait instead.
		res, err := c.cfg.Client.XReadGroup(context.WithoutCancel(ctx), &redis.XReadGroupArgs{
			Group:    c.cfg.Group,
			Consumer: c.cfg.Consumer,
			Streams:  []string{c.key, ">"},
			Count:    int64(n),
			Block:    c.cfg.Block,
		}).Result()
		received := time.Now()
		switch {
		case errors.Is(err, redis.Nil):
			c.recovered()
			continue
		case gone(err):
			c.log.Info("responder: request stream or group gone (channel deleted?); joining again")
			return
		case err != nil:
			c.failed("XREADGROUP", err)
			sleep(ctx, waitErr.delay())
			continue
		}
		c.recovered()
		waitErr.reset()
		for _, st := range res {
			c.dispatch(ctx, st.Messages, nil, received)
		}
	}
}

// gone reports the errors of a group or stream that no longer exists:
// NOGROUP, or UNBLOCKED for a read blocked when the stream was deleted.
func gone(err error) bool {
	return redis.HasErrorPrefix(err, "NOGROUP") || redis.HasErrorPrefix(err, "UNBLOCKED")
}

// reclaim takes over up to n requests idle for ReclaimAfter and hands
// them to handlers. It returns how many it took.
func (c *redisChannel) reclaim(ctx context.Context, n int) (int, error) {
	// Not cancelled with ctx, like XREADGROUP: what is claimed is handed
	// out, or released at once if ctx is done.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	var xs []redis.XMessage
	start := "0-0"
	// A few pages at most: a long pending list of live requests of other
	// consumers is walked over the next rounds.
	for page := 0; page < 10 && len(xs) < n; page++ {
		msgs, next, err := c.cfg.Client.XAutoClaim(wctx, &redis.XAutoClaimArgs{
			Stream:   c.key,
			Group:    c.cfg.Group,
			Consumer: c.cfg.Consumer,
			MinIdle:  c.cfg.ReclaimAfter,
			Start:    start,
			Count:    int64(n - len(xs)),
		}).Result()
		if err != nil {
			if len(xs) > 0 {
				break // hand out what was claimed; the error comes back next round
			}
			return 0, err
		}
		xs = append(xs, msgs...)
		if start = next; start == "0-0" {
			break
		}
	}
	if len(xs) == 0 {
		return 0, nil
	}
	received := time.Now()
	// XAUTOCLAIM does not say how often an entry was delivered; XPENDING
	// does. Deliveries is advice, so a failure here only leaves it at 2.
	deliveries := make(map[string]int64, len(xs))
	cmds := make([]*redis.XPendingExtCmd, len(xs))
	_, _ = c.cfg.Client.Pipelined(wctx, func(p redis.Pipeliner) error {
		for i, x := range xs {
			cmds[i] = p.XPendingExt(wctx, &redis.XPendingExtArgs{Stream: c.key, Group: c.cfg.Group, Start: x.ID, End: x.ID, Count: 1})
		}
		return nil
	})
	for i, x := range xs {
		deliveries[x.ID] = 2
		if ps, err := cmds[i].Result(); err == nil && len(ps) == 1 {
			deliveries[x.ID] = ps[0].RetryCount
		}
	}
	c.log.Info("responder: took over requests another worker left (it stopped, or was silent past ReclaimAfter)", "count", len(xs))
	c.dispatch(ctx, xs, deliveries, received)
	return len(xs), nil
}

// dispatch starts a handler for each live request of xs, as slots free
// up, and acks the rest: expired, or unanswerable. deliveries is nil for
// first deliveries. Taking the slots here, rather than in the handlers'
// goroutines, keeps consume from reading more than it can handle.
func (c *redisChannel) dispatch(ctx context.Context, xs []redis.XMessage, deliveries map[string]int64, received time.Time) {
	var dead []string
	live := make([]Request, 0, len(xs))
	replyTo := make([]string, 0, len(xs))
	now := time.Now()
	c.mu.Lock()
	for _, x := range xs {
		r, to, why := c.parse(x, now)
		if why != "" {
			dead = append(dead, x.ID)
			continue
		}
		r.Deliveries = 1
		if deliveries != nil {
			r.Deliveries = deliveries[x.ID]
		}
		live = append(live, r)
		replyTo = append(replyTo, to)
		c.held[r.ID] = received
	}
	c.mu.Unlock()
	if len(dead) > 0 {
		c.ack(ctx, dead...)
	}
	for i, r := range live {
		if c.slots.acquire(ctx) != nil {
			c.release(ctx, r.ID)
			continue
		}
		c.handlers.Go(func() {
			defer c.slots.release()
			c.run(ctx, r, replyTo[i])
		})
	}
}

// parse reads a request entry (fields reply_to, deadline_ms, data). why
// says why it is not to be handled: expired, or with no valid reply
// address. A missing deadline counts as expired, as the gateway's own
// workers count it: nobody can be waiting for it.
func (c *redisChannel) parse(x redis.XMessage, now time.Time) (r Request, replyTo, why string) {
	replyTo, _ = x.Values["reply_to"].(string)
	if !validChannel(replyTo) {
		c.log.Warn("responder: request with no valid reply_to (not a channel name); acked unanswered", "id", x.ID, "reply_to", replyTo)
		return r, "", "reply_to"
	}
	dl, _ := x.Values["deadline_ms"].(string)
	ms, err := strconv.ParseInt(dl, 10, 64)
	if err != nil {
		c.log.Debug("responder: request with no valid deadline_ms counts as expired; acked", "id", x.ID, "deadline_ms", dl)
		return r, "", "deadline_ms"
	}
	r.Deadline = time.UnixMilli(ms)
	if !r.Deadline.After(now) {
		c.log.Debug("responder: request expired before it was handled; acked", "id", x.ID)
		return r, "", "expired"
	}
	data, _ := x.Values["data"].(string)
	r.Channel, r.ID, r.Data = c.channel, x.ID, jsonData([]byte(data))
	return r, replyTo, ""
}

// run handles one request in a slot taken for it, then replies and acks.
func (c *redisChannel) run(ctx context.Context, r Request, replyTo string) {
	hctx, cancel := context.WithDeadline(ctx, r.Deadline)
	a, err := handle(hctx, c.log, c.h, r)
	cancel()
	if err != nil && ctx.Err() != nil {
		c.log.Debug("responder: handler stopped by shutdown; request left to other workers", "id", r.ID, "err", err)
		c.release(ctx, r.ID)
		return
	}
	c.mu.Lock()
	delete(c.held, r.ID)
	c.mu.Unlock()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && !time.Now().Before(r.Deadline) {
			// The requester has had its timeout: an answer would be
			// dropped.
			c.log.Debug("responder: handler ran past the request's deadline", "id", r.ID)
			c.ack(ctx, r.ID)
			return
		}
		c.log.Error("responder: handler failed; answering internal", "id", r.ID, "err", err)
	}
	if c.reply(ctx, replyTo, a.envelope(r)) {
		c.ack(ctx, r.ID)
	}
}

// reply appends env to the inbox replyTo as the gateway appends its own
// replies: FCALL tslm_publish (docs/redis.md, "Publishing directly"), which
// trims the inbox to its meta's max_len, restarts its expiry countdown and
// notifies the gateways following it, so that the requester gets the reply
// at once. A plain XADD notifies nobody: its reply waits for the gateway's
// poll (TSLM_POLL_INTERVAL, seconds). It reports whether the request is
// done with: false leaves it pending, to be answered again once reclaimed.
func (c *redisChannel) reply(ctx context.Context, replyTo string, env envelope) bool {
	b, err := json.Marshal(env)
	if err != nil { // handle checked data; cannot happen
		c.log.Error("responder: reply not encodable", "id", env.ID, "err", err)
		return true
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	inbox := c.cfg.Prefix + "ch:{" + replyTo + "}"
	if c.fcallDue() {
		keys := []string{c.cfg.Prefix + "meta:{" + replyTo + "}", inbox, c.cfg.Prefix + "req:{" + replyTo + "}"}
		err = c.cfg.Client.FCall(wctx, publishFunction, keys, b).Err()
		if noFunction(err) {
			c.functionMissing(err)
			err = c.appendPlain(wctx, inbox, b)
		} else if err == nil || inboxGone(err) {
			c.functionFound()
		}
	} else {
		err = c.appendPlain(wctx, inbox, b)
	}
	switch {
	case inboxGone(err):
		c.log.Debug("responder: reply inbox gone (requester's session expired); request acked unanswered", "id", env.ID)
	case err != nil:
		c.log.Warn("responder: reply not written; the request stays pending and will be handled again", "id", env.ID, "err", err)
		return false
	}
	return true
}

// appendPlain is the reply without the function: NOMKSTREAM, so that an
// inbox that expired (its requester gone) is not made again as garbage.
func (c *redisChannel) appendPlain(ctx context.Context, inbox string, b []byte) error {
	return c.cfg.Client.XAdd(ctx, &redis.XAddArgs{
		Stream:     inbox,
		NoMkStream: true,
		MaxLen:     replyMaxLen,
		Approx:     true,
		Values:     []any{"data", b},
	}).Err()
}

// inboxGone reports the answers of a reply to an inbox that expired:
// the function's refusal of a channel without meta, or NOMKSTREAM's nil.
func inboxGone(err error) bool {
	return errors.Is(err, redis.Nil) || redis.HasErrorPrefix(err, "tslm: no such channel")
}

// noFunction reports the errors of a Redis where this worker cannot use
// tslm_publish, though a plain XADD may work: the library is not loaded
// (no gateway could load it there, or a master added to a Cluster has none
// yet), FCALL is unknown (Redis before 7), the ACL user may not call it,
// or the function failed on a command the ACL user may not run. The last
// is mostly SPUBLISH: Redis 7 gives new ACL users no pub/sub channels
// (acl-pubsub-default resetchannels). A script is not undone when it
// fails, so the reply may already be stored then: the plain append that
// follows stores it twice, and the requester's session drops the second
// copy as it drops any later answer to one request, which is cheaper than
// a reply lost because its place within the function was guessed.
func noFunction(err error) bool {
	return redis.HasErrorPrefix(err, "Function not found") ||
		redis.HasErrorPrefix(err, "unknown command") ||
		(redis.HasErrorPrefix(err, "NOPERM") && strings.Contains(strings.ToLower(err.Error()), "fcall")) ||
		// Redis 7.0's wording, then 7.2's.
		redis.HasErrorPrefix(err, "The user executing the script") ||
		redis.HasErrorPrefix(err, "ACL failure in script")
}

// fcallDue reports whether this reply uses the function: always while it
// answers, else once per functionRetry, for one reply only (the one that
// wins the swap), the others appending plainly meanwhile.
func (s *redisServer) fcallDue() bool {
	at := s.functionRetryAt.Load()
	if at == 0 {
		return true
	}
	now := time.Now().UnixNano()
	return now >= at && s.functionRetryAt.CompareAndSwap(at, now+int64(s.functionRetry))
}

// functionMissing makes replies append plainly for functionRetry, and
// warns once per responder: the replies are still delivered, late.
func (s *redisServer) functionMissing(err error) {
	s.functionRetryAt.Store(time.Now().Add(s.functionRetry).UnixNano())
	if s.warnedNoFunction.CompareAndSwap(false, true) {
		s.log.Warn("responder: cannot use the Redis function "+publishFunction+" (not loaded: a gateway loads it at its start, "+
			"and it needs Redis 7; or the ACL user may not FCALL, or not SPUBLISH to "+s.cfg.Prefix+"n:{...}): "+
			"replies are appended with a plain XADD and wait for the gateway's poll (TSLM_POLL_INTERVAL) "+
			"to reach their requesters", "err", err, "retry_every", s.functionRetry)
	}
}

// functionFound ends a fallback to plain appends.
func (s *redisServer) functionFound() {
	if s.functionRetryAt.Load() != 0 && s.functionRetryAt.Swap(0) != 0 {
		s.log.Info("responder: the Redis function " + publishFunction + " is available again: replies reach requesters at once")
	}
}

// ack acks requests done with. One that fails to is reclaimed later and
// handled again: its second answer is dropped by the requester's session,
// or it has expired by then and is acked unanswered.
func (c *redisChannel) ack(ctx context.Context, ids ...string) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	if err := c.cfg.Client.XAck(wctx, c.key, c.cfg.Group, ids...).Err(); err != nil {
		c.log.Warn("responder: XACK failed; the requests will be reclaimed", "ids", ids, "err", err)
	}
}

// release hands a request this worker will not answer to the group's
// other workers at once, as the gateway's Release does: XCLAIM to the
// consumer "released" with a huge idle time, which any XAUTOCLAIM then
// takes.
func (c *redisChannel) release(ctx context.Context, id string) {
	c.mu.Lock()
	claimed, ok := c.held[id]
	delete(c.held, id)
	c.mu.Unlock()
	if !ok {
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	err := c.cfg.Client.Do(wctx, "XCLAIM", c.key, c.cfg.Group, releasedConsumer, minIdle(claimed).Milliseconds(), id,
		"IDLE", releasedIdle.Milliseconds(), "JUSTID").Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		c.log.Warn("responder: releasing an unanswered request failed; another worker takes it after ReclaimAfter", "id", id, "err", err)
	}
}

// minIdle is the min-idle argument of an XCLAIM of a request this worker
// last claimed at claimed: Redis has counted its idle time since a moment
// just before, unless another worker took it over meanwhile, which
// restarted its idle time; then the XCLAIM leaves it to that worker.
func minIdle(claimed time.Time) time.Duration {
	return max(time.Since(claimed)-5*time.Millisecond, 0).Truncate(time.Millisecond)
}

// touch claims the requests being handled again, for this consumer: that
// restarts their idle time, so that no worker takes over a request whose
// handler is merely slow, only those of a worker that stopped.
func (c *redisChannel) touch(ctx context.Context) {
	if ctx.Err() != nil {
		return // releases may be under way: touching could take them back
	}
	c.mu.Lock()
	ids := make([]string, 0, len(c.held))
	idles := make([]time.Duration, 0, len(c.held))
	for id, claimed := range c.held {
		ids = append(ids, id)
		idles = append(idles, minIdle(claimed))
	}
	c.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	cmds := make([]*redis.StringSliceCmd, len(ids))
	_, _ = c.cfg.Client.Pipelined(wctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.XClaimJustID(wctx, &redis.XClaimArgs{
				Stream: c.key, Group: c.cfg.Group, Consumer: c.cfg.Consumer, MinIdle: idles[i], Messages: []string{id},
			})
		}
		return nil
	})
	// Redis restarted the idle times when it ran the XCLAIMs, between the
	// send and now: now, taken after, is never before that, so the next
	// touch's min-idle stays below the idle time Redis counts. Taken
	// before the send, it was early by a round trip, which on a busy
	// machine exceeds minIdle's slack: every later touch then failed, and
	// another worker took over a request that was merely slow.
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, id := range ids {
		got, err := cmds[i].Result()
		if err != nil {
			c.log.Debug("responder: touching a request being handled failed", "id", id, "err", err)
			continue
		}
		if _, ok := c.held[id]; ok && len(got) == 1 {
			c.held[id] = now
		}
	}
}

// failed logs a Redis failure once per outage; recovered logs its end.
func (c *redisChannel) failed(op string, err error) {
	if c.failing {
		c.log.Debug("responder: Redis still failing", "op", op, "err", err)
		return
	}
	c.failing = true
	c.log.Warn("responder: Redis failed; retrying with backoff", "op", op, "err", err)
}

func (c *redisChannel) recovered() {
	if c.failing {
		c.failing = false
		c.log.Info("responder: Redis answers again")
	}
}
