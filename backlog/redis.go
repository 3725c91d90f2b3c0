package backlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig configures Redis. Zero values mean the documented defaults.
type RedisConfig struct {
	// KeyPrefix starts every key; "" means "tslm:". It must pass
	// CheckKeyPrefix. The layout under it is a public contract for
	// publishers: see docs/redis.md.
	KeyPrefix string
	// BlockInterval bounds how long a cancelled blocking Claim is sent
	// CLIENT UNBLOCK; 0 means 5s.
	BlockInterval time.Duration
	// PollInterval is how often a follower asks, without blocking,
	// whether a followed stream holds an entry it was not notified of
	// (a publisher's plain XADD, a notification lost), and pings its
	// pub/sub connections; 0 means 2s. It is the longest such an entry
	// waits.
	PollInterval time.Duration
	// MaxRequests bounds each channel's request queue (see Requests);
	// 0 means DefaultMaxRequests. Enqueue past it fails with ErrLimit.
	MaxRequests int
	// MaxChannels bounds how many channels may exist, counted in the
	// registry shared by every replica (see redis_channels.go); 0 means
	// 100 000. Creating one more fails with ErrLimit.
	MaxChannels int
	// Now is the clock that judges request deadlines, injectable for
	// tests; nil means time.Now. It is the gateway's clock, not Redis's,
	// since deadlines are set by it; idle times (Reclaim) are Redis's.
	Now func() time.Time
	// Hooks are added to the client NewRedis derives from the one it is
	// given, which runs the scripts that change channels (see
	// Redis.writer), so that they see every command; the caller adds them
	// to its own client, whose hooks the followers' and Claims'
	// connections inherit.
	Hooks []redis.Hook
}

// MaxKeyPrefixLen is the longest RedisConfig.KeyPrefix in bytes.
const MaxKeyPrefixLen = 64

// CheckKeyPrefix reports why prefix cannot be a RedisConfig.KeyPrefix: it
// must be 1–64 bytes of visible ASCII without braces, so that the Cluster
// hash tag of every key stays the channel name.
func CheckKeyPrefix(prefix string) error {
	if len(prefix) == 0 || len(prefix) > MaxKeyPrefixLen {
		return fmt.Errorf("key prefix must be 1-%d bytes, not %d", MaxKeyPrefixLen, len(prefix))
	}
	for i := 0; i < len(prefix); i++ {
		switch c := prefix[i]; {
		case c == '{' || c == '}':
			return fmt.Errorf("key prefix %q must not hold braces: the channel name is the Cluster hash tag", prefix)
		case c < 0x21 || c > 0x7e:
			return fmt.Errorf("key prefix %q must be visible ASCII", prefix)
		}
	}
	return nil
}

// Redis is the backlog on Redis Streams: one stream and one meta hash per
// channel, shared by every gateway replica and by trusted publishers that
// XADD directly (docs/redis.md). It is safe for concurrent use.
//
// Every method works on a standalone Redis, a Sentinel set or a Cluster
// (*redis.Client, the client NewRedisClient makes for Sentinel,
// *redis.ClusterClient): each command or script touches the keys of one
// channel, which share its hash slot, or a registry key alone. Followers
// (NewFollower) learn of new entries by notification: see
// redis_follow.go.
type Redis struct {
	client redis.UniversalClient
	// writer runs the scripts that change a channel (create, append,
	// delete): client's options without go-redis's automatic retries,
	// which re-send a command whose connection failed after it was sent
	// (EOF, a read timeout), so that Redis may run it twice: a publish
	// stored twice, though its publisher was told once. Failing instead
	// leaves the retry to the publisher, who has the idempotency key.
	writer     redis.UniversalClient
	ownsWriter bool
	conns      conner // nil when client cannot dedicate connections
	cfg        RedisConfig

	batcher *appendBatcher
	// notified and caughtUp count for FollowerStats across followers.
	notified, caughtUp atomic.Uint64
	unbatched          bool // tests and benchmarks compare with and without

	mu sync.Mutex
	// followers are the open followers; guarded by mu.
	followers map[*redisFollower]struct{}
	// blocked cancels the blocking Claims in flight (see blockOn);
	// guarded by mu.
	blocked map[*context.CancelFunc]struct{}
	// idleBlock holds each node's idle connections for blocking Claims
	// (see getBlockConn); guarded by mu.
	idleBlock map[blockNode][]*blockConn
	closed    bool // guarded by mu

}

var _ Log = (*Redis)(nil)

// conner is the part of *redis.Client that a blocking Claim needs.
type conner interface {
	Conn() *redis.Conn
}

// NewRedis returns a backlog stored in client, which the caller keeps
// owning: Close does not close it.
func NewRedis(client redis.UniversalClient, cfg RedisConfig) *Redis {
	cfg = cfg.WithDefaults()
	r := &Redis{client: client, cfg: cfg,
		blocked: make(map[*context.CancelFunc]struct{}), idleBlock: make(map[blockNode][]*blockConn),
		followers: make(map[*redisFollower]struct{})}
	r.conns, _ = client.(conner)
	r.writer, r.ownsWriter = withoutRetries(client)
	r.batcher = newAppendBatcher(r)
	if r.ownsWriter {
		for _, h := range cfg.Hooks {
			r.writer.AddHook(h)
		}
	}
	return r
}

// WriterPoolStats are the connection pool counters of the client NewRedis
// derived for writes, or nil when it writes with the client it was given.
func (r *Redis) WriterPoolStats() *redis.PoolStats {
	if !r.ownsWriter {
		return nil
	}
	return r.writer.PoolStats()
}

// streamKey is "<prefix>ch:{<channel>}"; the braces make the channel the
// Cluster hash tag, so both keys of a channel live in one slot.
func (r *Redis) streamKey(channel string) string {
	return r.cfg.KeyPrefix + "ch:{" + channel + "}"
}

func (r *Redis) metaKey(channel string) string {
	return r.cfg.KeyPrefix + "meta:{" + channel + "}"
}

// idemKey is "<prefix>idem:{<channel>}:<key>": the channel's hash tag, so
// that the append script may touch it with the channel's keys.
func (r *Redis) idemKey(channel, key string) string {
	return r.cfg.KeyPrefix + "idem:{" + channel + "}:" + key
}

// retentionKey is the set of channels with a retention, walked by
// TrimExpired.
func (r *Redis) retentionKey() string { return r.cfg.KeyPrefix + "retention" }

// channelOf inverts streamKey.
func (r *Redis) channelOf(key string) string {
	key = strings.TrimPrefix(key, r.cfg.KeyPrefix+"ch:{")
	return strings.TrimSuffix(key, "}")
}

func (r *Redis) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// wrap maps a go-redis error to the backlog's: redis.Nil passes through for
// callers to treat as empty, cancellation returns ctx's error, error
// replies that describe a bad request stay plain, and everything else
// (network, timeouts, a server loading or failing over) wraps
// ErrUnavailable. The cause stays wrapped for errors.Is and logs.
func (r *Redis) wrap(ctx context.Context, err error) error {
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		return err
	case errors.Is(ctx.Err(), context.Canceled):
		return ctx.Err()
	case r.isClosed():
		return ErrClosed
	}
	if sent, ok := errors.AsType[*mayHaveRun](err); ok {
		return fmt.Errorf("%w: the command may have run: %w", ErrUnavailable, sent.cause)
	}
	if isTransient(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return fmt.Errorf("backlog: redis: %w", err)
}

// isTransient reports whether err means "try again later" rather than
// "this request is wrong": anything but an error reply (the network, a
// timeout, a closed pool), or a reply saying the server cannot serve now.
func isTransient(err error) bool {
	if _, ok := errors.AsType[redis.Error](err); !ok {
		return true
	}
	_, moved := redis.IsMovedError(err)
	_, ask := redis.IsAskError(err)
	return moved || ask ||
		redis.IsLoadingError(err) || redis.IsReadOnlyError(err) ||
		redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
		redis.IsMasterDownError(err) || redis.IsMaxClientsError(err) ||
		redis.IsNoReplicasError(err) || redis.IsOOMError(err) ||
		redis.HasErrorPrefix(err, "BUSY ") // a script is running; not BUSYGROUP, BUSYKEY
}

// Ping checks that Redis answers, for readiness probes.
func (r *Redis) Ping(ctx context.Context) error {
	if r.isClosed() {
		return ErrClosed
	}
	return r.wrap(ctx, r.client.Ping(ctx).Err())
}

func (r *Redis) Create(ctx context.Context, channel string, cfg ChannelConfig) (bool, error) {
	if r.isClosed() {
		return false, ErrClosed
	}
	var expiry int64
	if cfg.Expiry > 0 {
		expiry = max(cfg.Expiry.Milliseconds(), 1)
	}
	existingOnly, err := r.reserve(ctx, channel, expiry)
	if err != nil {
		return false, err
	}
	only := "0"
	if existingOnly {
		only = "1"
	}
	vals, err := createScript.Run(ctx, r.writer, []string{r.metaKey(channel), r.streamKey(channel), r.reqKey(channel)},
		cfg.MaxLen, cfg.Retention.Milliseconds(), expiry, only).Slice()
	if err != nil {
		return false, r.wrap(ctx, err)
	}
	if len(vals) != 2 {
		return false, fmt.Errorf("backlog: create script returned %v", vals)
	}
	if vals[0] == int64(-1) {
		return false, ErrLimit
	}
	if existingOnly {
		// The channel exists without a member (made by hand, or before
		// the registry): counting it is the truth, limit or not.
		if _, err := r.register(ctx, channel, expiry, true); err != nil {
			return false, err
		}
	}
	created := vals[0] == int64(1)
	retention, _ := vals[1].(string)
	if n, _ := strconv.ParseInt(retention, 10, 64); n > 0 {
		// Not atomic with the meta: the registry lives in its own slot.
		// So the SADD runs on every Create of a channel that has a
		// retention, created now or not: it is idempotent, and a Create
		// retried after a failure here (or a crash) repairs the registry,
		// which nothing else does. TrimExpired drops members whose meta is
		// gone.
		if err := r.client.SAdd(ctx, r.retentionKey(), channel).Err(); err != nil {
			return created, r.wrap(ctx, err)
		}
	}
	return created, nil
}

// Info runs infoScript: one round trip answering counts and IDs only, so
// that a subscribe costs Redis a small reply however large the channel's
// messages are (docs/redis.md, "What a subscribe costs").
func (r *Redis) Info(ctx context.Context, channel string) (Info, error) {
	if r.isClosed() {
		return Info{}, ErrClosed
	}
	vals, err := infoScript.Run(ctx, r.client, []string{r.metaKey(channel), r.streamKey(channel)}).Slice()
	if errors.Is(err, redis.Nil) {
		return Info{}, ErrNotFound
	}
	if err != nil {
		return Info{}, r.wrap(ctx, err)
	}
	if len(vals) != 7 {
		return Info{}, fmt.Errorf("backlog: info script returned %v", vals)
	}
	info, ok := parseMeta(vals[:4])
	if !ok {
		return Info{}, ErrNotFound
	}
	info.Length, _ = vals[4].(int64)
	first, _ := vals[5].(string)
	last, _ := vals[6].(string)
	info.FirstID, _ = ParseID(first)
	info.LastID, _ = ParseID(last)
	return info, nil
}

// parseMeta reads HMGET max_len retention_ms created_ms expiry_ms; ok is
// false when the meta does not exist (HMGET then answers only nils). A
// missing or malformed field reads as 0.
func parseMeta(vals []any) (info Info, ok bool) {
	num := func(v any) int64 {
		s, _ := v.(string)
		n, _ := strconv.ParseInt(s, 10, 64)
		return n
	}
	if len(vals) != 4 || !slices.ContainsFunc(vals, func(v any) bool { return v != nil }) {
		return Info{}, false
	}
	info.Config.MaxLen = num(vals[0])
	info.Config.Retention = time.Duration(num(vals[1])) * time.Millisecond
	info.Created = time.UnixMilli(num(vals[2]))
	info.Config.Expiry = time.Duration(max(num(vals[3]), 0)) * time.Millisecond
	return info, true
}

func (r *Redis) Append(ctx context.Context, channel string, data []byte) (ID, error) {
	if r.isClosed() {
		return ID{}, ErrClosed
	}
	keys := []string{r.metaKey(channel), r.streamKey(channel), r.reqKey(channel)}
	return r.idOf(ctx, r.runBatched(ctx, appendScript, keys, data))
}

// runForID runs a script over channel's keys that answers an entry ID, or
// nil when the channel does not exist.
func (r *Redis) runForID(ctx context.Context, script *redis.Script, c redis.UniversalClient, keys []string, args ...any) (ID, error) {
	return r.idOf(ctx, script.Run(ctx, c, keys, args...))
}

// idOf reads the answer of a script that answers an entry ID, or nil when
// the channel does not exist.
func (r *Redis) idOf(ctx context.Context, cmd *redis.Cmd) (ID, error) {
	s, err := cmd.Text()
	if errors.Is(err, redis.Nil) {
		return ID{}, ErrNotFound
	}
	if err != nil {
		return ID{}, r.wrap(ctx, err)
	}
	id, err := ParseID(s)
	if err != nil {
		return ID{}, fmt.Errorf("backlog: redis returned id %q: %w", s, err)
	}
	return id, nil
}

func (r *Redis) AppendIdempotent(ctx context.Context, channel string, data []byte, idem Idempotency) (ID, bool, error) {
	if !ValidIdempotencyKey(idem.Key) || idem.Window <= 0 {
		return ID{}, false, fmt.Errorf("backlog: invalid idempotency key %q or window %v", idem.Key, idem.Window)
	}
	if r.isClosed() {
		return ID{}, false, ErrClosed
	}
	keys := []string{r.metaKey(channel), r.streamKey(channel), r.idemKey(channel, idem.Key), r.reqKey(channel)}
	window := max(idem.Window.Milliseconds(), 1)
	vals, err := r.runBatched(ctx, appendOnceScript, keys, data, window).Slice()
	if errors.Is(err, redis.Nil) {
		return ID{}, false, ErrNotFound
	}
	if err != nil {
		return ID{}, false, r.wrap(ctx, err)
	}
	s, _ := vals[0].(string)
	if len(vals) != 2 {
		return ID{}, false, fmt.Errorf("backlog: append script returned %v", vals)
	}
	id, err := ParseID(s)
	if err != nil {
		return ID{}, false, fmt.Errorf("backlog: redis returned id %q: %w", s, err)
	}
	return id, vals[1] == int64(1), nil
}

// tombstoneTTL is how long a deleted channel's stream keeps its tombstone
// entry, for replicas that were not reading when it was deleted (a Redis
// outage) to still learn of it: docs/redis.md.
const tombstoneTTL = time.Hour

// Delete runs the delete script, which drops the request queue with its
// groups too: Claims blocked on it fail and find the channel gone. The channel's idempotency keys are left
// to expire: the append script ignores them once the channel is created
// again. Its retention registry member is left to TrimExpired, which drops
// members without meta; removing it here would race with a Create. Its
// channel registry member is checked at once (see forget), which frees
// its slot under the channel limit.
func (r *Redis) Delete(ctx context.Context, channel string) error {
	if r.isClosed() {
		return ErrClosed
	}
	n, err := deleteScript.Run(ctx, r.writer, []string{r.metaKey(channel), r.streamKey(channel), r.reqKey(channel)},
		tombstoneTTL.Milliseconds()).Int64()
	if err != nil {
		return r.wrap(ctx, err)
	}
	if n == 0 {
		return ErrNotFound
	}
	// The channel is gone whatever happens to its member: a failure here
	// leaves the member to its next check, at most channelRecheck away.
	_ = r.forget(ctx, channel)
	return nil
}

// Range pipelines EXISTS meta, the XRANGE itself and then the continuity
// proof, in that order: the proof runs after the read, and since Redis
// only removes from a stream's head, an after entry (or an untouched
// stream) seen by the proof was there for the read too. From Zero the
// three run in a transaction, as entries-added == length proves nothing
// about a read that a delete and create of the channel came between.
// The proof is a script, so that it answers 1 or 0 rather than the entry
// it looks at or XINFO STREAM's first and last entries.
func (r *Redis) Range(ctx context.Context, channel string, after ID, limit int) (Page, error) {
	if r.isClosed() {
		return Page{}, ErrClosed
	}
	key := r.streamKey(channel)
	start := "-"
	if !after.IsZero() {
		start = "(" + after.String()
	}
	var (
		exists *redis.IntCmd
		msgs   *redis.XMessageSliceCmd
		proof  *redis.Cmd
	)
	r.pipelineWith(ctx, continuityScript, after.IsZero(), func(pipe redis.Pipeliner) *redis.Cmd {
		exists = pipe.Exists(ctx, r.metaKey(channel))
		if limit > 0 {
			msgs = pipe.XRangeN(ctx, key, start, "+", int64(limit))
		} else {
			msgs = pipe.XRange(ctx, key, start, "+")
		}
		proof = continuityScript.EvalSha(ctx, pipe, []string{r.metaKey(channel), key}, after.String())
		return proof
	})
	if n, err := exists.Result(); err != nil {
		return Page{}, r.wrap(ctx, err)
	} else if n == 0 {
		return Page{}, ErrNotFound
	}
	xs, err := msgs.Result()
	if err != nil {
		return Page{}, r.wrap(ctx, err)
	}
	continuous, err := proof.Int64()
	if err != nil {
		return Page{}, r.wrap(ctx, err)
	}
	return Page{Messages: messagesOf(xs), Continuous: continuous == 1}, nil
}

// pipelineWith runs the commands queue adds in one pipeline (a MULTI/EXEC
// transaction when tx), where queue's returned command runs script by
// EVALSHA. When Redis lost the script (a first use since a restart, SCRIPT
// FLUSH), it loads it and runs the pipeline once more: a pipeline cannot
// fall back to EVAL as Script.Run does. Errors are left in the commands.
func (r *Redis) pipelineWith(ctx context.Context, script *redis.Script, tx bool, queue func(redis.Pipeliner) *redis.Cmd) {
	for attempt := 0; ; attempt++ {
		pipe := r.client.Pipeline()
		if tx {
			pipe = r.client.TxPipeline()
		}
		cmd := queue(pipe)
		pipe.Exec(ctx)
		if attempt > 0 || !redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			return
		}
		if err := script.Load(ctx, r.client).Err(); err != nil {
			return
		}
	}
}

func (r *Redis) Before(ctx context.Context, channel string, id ID) (ID, bool, error) {
	if r.isClosed() {
		return ID{}, false, ErrClosed
	}
	ids, err := beforeScript.Run(ctx, r.client, []string{r.metaKey(channel), r.streamKey(channel)}, id.String()).StringSlice()
	switch {
	case errors.Is(err, redis.Nil):
		return ID{}, false, ErrNotFound
	case err != nil:
		return ID{}, false, r.wrap(ctx, err)
	case len(ids) == 0:
		return ID{}, false, nil
	case len(ids) == 1:
		return ID{}, true, nil
	}
	prev, err := ParseID(ids[1])
	if err != nil {
		return ID{}, false, fmt.Errorf("backlog: redis returned id %q: %w", ids[1], err)
	}
	return prev, true, nil
}

// TailStart walks back from the newest entry in a script, so that only the
// ID it finds crosses the network, however large the n entries are.
func (r *Redis) TailStart(ctx context.Context, channel string, n int) (ID, error) {
	if r.isClosed() {
		return ID{}, ErrClosed
	}
	return r.runForID(ctx, tailStartScript, r.client, []string{r.metaKey(channel), r.streamKey(channel)}, max(n, 0))
}

// messagesOf converts stream entries. An entry without a data field (a
// publisher broke the contract) is returned with empty Data.
func messagesOf(xs []redis.XMessage) []Message {
	if len(xs) == 0 {
		return nil
	}
	out := make([]Message, 0, len(xs))
	for _, x := range xs {
		id, err := ParseID(x.ID)
		if err != nil {
			continue // Redis only hands out canonical IDs
		}
		s, _ := x.Values["data"].(string)
		out = append(out, Message{ID: id, Data: []byte(s)})
	}
	return out
}

// trimBatch is how many channels TrimExpired trims per round trip.
const trimBatch = 256

// TrimExpired walks the retention registry with SSCAN and runs the trim
// script for each member, pipelined, then checks the channel registry's
// members that are due (checkDue), which frees the slots of expired
// channels. Replicas racing on one channel are harmless: XTRIM MINID is
// idempotent, each script runs atomically, and a check changes a member
// only if nobody else did since it looked.
func (r *Redis) TrimExpired(ctx context.Context) error {
	if r.isClosed() {
		return ErrClosed
	}
	var cursor uint64
	for {
		members, next, err := r.client.SScan(ctx, r.retentionKey(), cursor, "", trimBatch).Result()
		if err != nil {
			return r.wrap(ctx, err)
		}
		if err := r.trimChannels(ctx, members); err != nil {
			return err
		}
		if cursor = next; cursor == 0 {
			// Expired channels leave the registry here, at their check.
			_, err := r.checkDue(ctx)
			return err
		}
	}
}

func (r *Redis) trimChannels(ctx context.Context, channels []string) error {
	if len(channels) == 0 {
		return nil
	}
	calls := make([]scriptCall, len(channels))
	for i, ch := range channels {
		calls[i] = scriptCall{keys: []string{r.metaKey(ch), r.streamKey(ch)}}
	}
	cmds := evalPipelined(ctx, r.client, trimScript, calls)
	var stale []any
	for i, cmd := range cmds {
		n, err := cmd.Int64()
		if err != nil {
			return r.wrap(ctx, err)
		}
		if n < 0 { // the channel is gone or has no retention
			stale = append(stale, channels[i])
		}
	}
	if len(stale) > 0 {
		if err := r.client.SRem(ctx, r.retentionKey(), stale...).Err(); err != nil {
			return r.wrap(ctx, err)
		}
	}
	return nil
}

// Close closes the followers (their Next returns ErrClosed), stops
// blocking Claims in flight (they return ErrClosed) and lets go of their
// idle connections. The client stays open: its owner closes it.
func (r *Redis) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	for cancel := range r.blocked {
		(*cancel)() // its CLIENT UNBLOCK goes to its own node
	}
	followers := make([]*redisFollower, 0, len(r.followers))
	for f := range r.followers {
		followers = append(followers, f)
	}
	r.mu.Unlock()
	for _, f := range followers {
		f.Close()
	}
	r.batcher.stop()
	if r.ownsWriter {
		r.writer.Close()
	}
	r.closeIdleBlock()
	return nil
}
