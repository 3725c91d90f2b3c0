package backlog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisFollower follows channels of a Redis backlog by notification,
// not by reading: every append publishes "<id> <prev> <data>" on the
// channel's shard channel in the same script (luaNotify), and a follower
// subscribed to it takes an entry whose prev is its cursor as is, with no
// read at all. The stream stays the source of truth. Whenever a
// notification may have been missed, the follower catches up by reading
// the stream after its cursor with the proving readScript, whose answer
// says whether the read is continuous (gap and Deleted come from there):
//
//   - after every subscription confirmation, the first one of a Follow as
//     well as those go-redis receives when it re-subscribes after a
//     reconnect, since nothing was heard while unsubscribed;
//   - for a notification whose prev is not the cursor (an entry was lost
//     or came by a publisher's plain XADD, or the channel was deleted);
//   - when the poll, every PollInterval, finds an entry after a cursor
//     (a plain XADD with nothing after it, a notification dropped by a
//     full queue, a connection that died silently).
//
// Redis resources are bounded and do not grow with channels: one pub/sub
// connection per Redis node (one per master in Cluster) holding one
// subscription per followed channel, plus the client's shared pool for
// catch-up reads and polls, which are pipelined by the hundred.
type redisFollower struct {
	r      *Redis
	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{} // Next's; cap 1
	kick   chan struct{} // the control loop's; cap 1

	mu      sync.Mutex
	follows map[string]*redisFollow
	seq     uint64
	dirty   []*redisFollow    // to catch up, oldest first; each once (isDirty)
	notes   []note            // received, in order, for Next
	noteMem int               // bytes of data in notes
	pending map[string]bool   // subscription changes for control: true subscribe, false unsubscribe
	subs    map[string]*shard // the shard subscribed to each channel
	shards  map[string]*shard // by node address ("" outside Cluster)
	err     error             // the last receive error, for Next to report once
	closed  bool
	// Cluster only: moved holds, per slot, the master a MOVED reply named,
	// which wins over the client's slot map until that master fails:
	// go-redis reloads its map lazily, and a follower that asked it again
	// would subscribe on the old master again and again. nodes are the
	// follower's own clients, one per master, made with nodeOpt.
	moved   map[int]string
	nodes   map[string]*redis.Client
	nodeOpt *redis.Options

	// Next's alone: the timer of the next poll (made by the first Next;
	// an unstopped timer is collected with the follower), and the index
	// of a call's batches by channel, kept so that a Next per message
	// allocates neither.
	pollWait *time.Timer
	batchOf  map[string]int
}

// redisFollow is one followed channel. cursor is Next's alone.
type redisFollow struct {
	name    string
	seq     uint64
	cursor  ID
	isDirty bool // guarded by redisFollower.mu
}

// note is a notification waiting for Next.
type note struct {
	f        *redisFollow
	id, prev ID // prev is Zero for "-"
	hasPrev  bool
	data     string
}

// shard is one pub/sub connection, to the node (Cluster) or server that
// owns its channels.
type shard struct {
	addr string
	ps   *redis.PubSub
}

// afterSubscribe, set by tests only, runs right after an SSUBSCRIBE is
// written, before the follower leaves the channels' old owners.
var afterSubscribe atomic.Pointer[func()]

// followCatchUp bounds the channels one catch-up round trip reads.
const followCatchUp = 100

// maxNoteBytes bounds the notification data held for Next; past it a
// notification is dropped and its channel caught up by a read instead, so
// that a slow consumer costs reads, not memory.
const maxNoteBytes = 64 << 20

// noteBytesLimit is maxNoteBytes, lowered by tests only.
var noteBytesLimit atomic.Int64

func init() { noteBytesLimit.Store(maxNoteBytes) }

func (r *Redis) NewFollower() Follower {
	ctx, cancel := context.WithCancel(context.Background())
	f := &redisFollower{
		r: r, ctx: ctx, cancel: cancel,
		wake: make(chan struct{}, 1), kick: make(chan struct{}, 1),
		follows: make(map[string]*redisFollow), pending: make(map[string]bool),
		subs: make(map[string]*shard), shards: make(map[string]*shard),
		moved: make(map[int]string), nodes: make(map[string]*redis.Client),
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		f.closed = true
		cancel()
		return f
	}
	r.followers[f] = struct{}{}
	r.mu.Unlock()
	f.wg.Go(f.control)
	if w, ok := r.writer.(*sentinelClient); ok {
		f.watchSwitches(w)
		f.watchWriter(w)
	}
	return f
}

// FollowerStats describes the followers of a Redis backlog, for metrics.
type FollowerStats struct {
	// PubSubConnections and Subscriptions are what the open followers
	// hold now: one connection per Redis node, one shard subscription
	// per followed channel.
	PubSubConnections, Subscriptions int
	// Notified counts the entries delivered from their notification
	// alone; CaughtUp the channels read after their cursor because a
	// notification may have been missed (a subscription confirmed, a
	// prev that was not the cursor, the poll). Both only grow.
	Notified, CaughtUp uint64
}

// FollowerStats adds up the followers' figures.
func (r *Redis) FollowerStats() FollowerStats {
	st := FollowerStats{Notified: r.notified.Load(), CaughtUp: r.caughtUp.Load()}
	r.mu.Lock()
	followers := slices.Collect(maps.Keys(r.followers))
	r.mu.Unlock()
	for _, f := range followers {
		f.mu.Lock()
		st.PubSubConnections += len(f.shards)
		st.Subscriptions += len(f.subs)
		f.mu.Unlock()
	}
	return st
}

// client is what the follower reads and subscribes with: the backlog's
// client, except on a Sentinel set, where it is the writer's. Each
// failover client learns of a new primary by itself; sharing the
// writer's, the follower stops reading from the old primary exactly when
// appends stop going there, never later (see watchWriter).
func (f *redisFollower) client() redis.UniversalClient {
	if _, ok := f.r.writer.(*sentinelClient); ok {
		return f.r.writer
	}
	return f.r.client
}

func (r *Redis) notifyChannel(channel string) string {
	return r.cfg.KeyPrefix + "n:{" + channel + "}"
}

// channelOfNotify inverts notifyChannel; ok is false for a channel that is
// not one of them.
func (r *Redis) channelOfNotify(ch string) (string, bool) {
	rest, ok := strings.CutPrefix(ch, r.cfg.KeyPrefix+"n:{")
	if !ok || !strings.HasSuffix(rest, "}") {
		return "", false
	}
	return rest[:len(rest)-1], true
}

func (f *redisFollower) Follow(channel string, after ID) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	if f.closed {
		return f.seq
	}
	f.follows[channel] = &redisFollow{name: channel, seq: f.seq, cursor: after}
	f.pending[channel] = true
	kickOf(f.kick)
	return f.seq
}

func (f *redisFollower) Unfollow(channel string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.follows[channel]; !ok || f.closed {
		return
	}
	delete(f.follows, channel)
	f.pending[channel] = false
	kickOf(f.kick)
}

func kickOf(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (f *redisFollower) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	shards := slices.Collect(maps.Values(f.shards))
	f.mu.Unlock()
	f.cancel()
	for _, s := range shards {
		s.ps.Close() // ends its receive loop
	}
	f.wg.Wait()
	for _, c := range f.nodes {
		c.Close()
	}
	f.r.mu.Lock()
	delete(f.r.followers, f)
	f.r.mu.Unlock()
	return nil
}

// markDirtyLocked queues fw for a catch-up read; it expects f.mu held.
func (f *redisFollower) markDirtyLocked(fw *redisFollow) {
	if !fw.isDirty {
		fw.isDirty = true
		f.dirty = append(f.dirty, fw)
	}
	kickOf(f.wake)
}

func (f *redisFollower) Next(ctx context.Context, limit int) ([]Batch, error) {
	if f.pollWait == nil {
		f.pollWait = time.NewTimer(f.r.cfg.PollInterval)
		f.batchOf = make(map[string]int)
	}
	for {
		f.mu.Lock()
		closed, err := f.closed, f.err
		f.err = nil
		notes := f.notes
		f.notes, f.noteMem = nil, 0
		f.mu.Unlock()
		switch {
		case closed || f.r.isClosed():
			return nil, ErrClosed
		case ctx.Err() != nil:
			return nil, ctx.Err()
		}
		clear(f.batchOf)
		batches := f.apply(notes, f.batchOf, limit)
		more, readErr := f.catchUp(ctx, f.batchOf, batches, limit)
		if len(more) > 0 {
			return more, nil // an error shows again on the next call
		}
		// A connection's error is reported once, after what could still
		// be read: a broken connection must not hold up a catch-up.
		if err == nil {
			err = readErr
		}
		if err != nil {
			return nil, err
		}
		f.mu.Lock()
		pending := len(f.dirty) > 0 || len(f.notes) > 0
		f.mu.Unlock()
		if pending {
			continue // a catch-up reads at most followCatchUp channels at a time
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-f.ctx.Done():
			return nil, ErrClosed
		case <-f.wake:
		case <-f.pollWait.C:
			f.pollWait.Reset(f.r.cfg.PollInterval)
			if err := f.poll(ctx); err != nil {
				return nil, err
			}
		}
	}
}

// apply turns notifications into batches: an entry whose prev is its
// follow's cursor is delivered; one at or before the cursor was delivered
// already (by a catch-up); any other sends its channel to a catch-up.
func (f *redisFollower) apply(notes []note, out map[string]int, limit int) []Batch {
	var batches []Batch
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range notes {
		fw := n.f
		if f.follows[fw.name] != fw || fw.isDirty {
			continue // unfollowed, or the catch-up will read it
		}
		if !fw.cursor.Less(n.id) {
			continue
		}
		i, has := out[fw.name]
		full := has && limit > 0 && len(batches[i].Messages) >= limit
		if !n.hasPrev || n.prev != fw.cursor || fw.cursor.IsZero() || full {
			// A cursor 0-0 is proved by the stream's count of entries
			// ever added, not by prev: a read does it.
			f.markDirtyLocked(fw)
			continue
		}
		if !has {
			i = len(batches)
			out[fw.name] = i
			batches = append(batches, Batch{Channel: fw.name, Follow: fw.seq, After: fw.cursor})
		}
		batches[i].Messages = append(batches[i].Messages, Message{ID: n.id, Data: []byte(n.data)})
		fw.cursor = n.id
		f.r.notified.Add(1)
	}
	return batches
}

// catchUp reads, with proof, the dirty channels that have no batch in out
// yet, up to followCatchUp of them, and appends their batches. On an
// error the channels stay dirty.
func (f *redisFollower) catchUp(ctx context.Context, out map[string]int, batches []Batch, limit int) ([]Batch, error) {
	f.mu.Lock()
	var todo, later []*redisFollow
	for _, fw := range f.dirty {
		switch {
		case f.follows[fw.name] != fw:
			fw.isDirty = false
		case len(todo) >= followCatchUp:
			later = append(later, fw)
		case hasBatch(out, fw.name):
			later = append(later, fw) // one batch per channel per Next
		default:
			fw.isDirty = false
			todo = append(todo, fw)
		}
	}
	f.dirty = append(f.dirty[:0], later...)
	f.mu.Unlock()
	if len(todo) == 0 {
		return batches, nil
	}
	r := f.r
	r.caughtUp.Add(uint64(len(todo)))
	calls := make([]scriptCall, len(todo))
	for i, fw := range todo {
		calls[i] = scriptCall{keys: []string{r.streamKey(fw.name), r.metaKey(fw.name)}, args: []any{fw.cursor.String(), max(limit, 0)}}
	}
	cmds := evalPipelined(ctx, f.client(), readScript, calls)
	var firstErr error
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, fw := range todo {
		vals, err := cmds[i].Slice()
		var proved, deleted bool
		var msgs []Message
		if err == nil {
			proved, deleted, msgs, err = parseRead(vals)
		}
		if err != nil {
			if firstErr == nil {
				firstErr = r.wrap(ctx, err)
			}
			if f.follows[fw.name] == fw {
				f.markDirtyLocked(fw)
			}
			continue
		}
		if f.follows[fw.name] != fw {
			continue
		}
		switch {
		case deleted:
			batches = append(batches, Batch{Channel: fw.name, Follow: fw.seq, After: fw.cursor, Deleted: true})
			delete(f.follows, fw.name)
			f.pending[fw.name] = false
			kickOf(f.kick)
		case len(msgs) > 0:
			gap := !proved && (fw.cursor.IsZero() || msgs[0].ID != fw.cursor.Next())
			batches = append(batches, Batch{Channel: fw.name, Follow: fw.seq, After: fw.cursor, Messages: msgs, Gap: gap})
			fw.cursor = msgs[len(msgs)-1].ID
			if limit > 0 && len(msgs) >= limit {
				f.markDirtyLocked(fw) // more may follow
			}
		}
	}
	if len(batches) > 0 {
		return batches, nil // the error, if any, shows again
	}
	return nil, firstErr
}

// poll asks, without blocking, which followed streams hold an entry after
// their cursor, and sends those to a catch-up: the safety net under
// notifications. XREAD COUNT 1 answers one entry per such stream; keys
// go by the hundred, and one per command in Cluster, where a multi-key
// command must stay within one slot.
func (f *redisFollower) poll(ctx context.Context) error {
	f.mu.Lock()
	all := make([]*redisFollow, 0, len(f.follows))
	for _, fw := range f.follows {
		if !fw.isDirty {
			all = append(all, fw)
		}
	}
	f.mu.Unlock()
	per := followCatchUp
	if _, cluster := f.r.client.(*redis.ClusterClient); cluster {
		per = 1
	}
	r := f.r
	pipe := f.client().Pipeline()
	var cmds []*redis.XStreamSliceCmd
	var groups [][]*redisFollow
	for start := 0; start < len(all); start += per {
		group := all[start:min(start+per, len(all))]
		streams := make([]string, 2*len(group))
		for i, fw := range group {
			streams[i] = r.streamKey(fw.name)
			streams[len(group)+i] = fw.cursor.String()
		}
		cmds = append(cmds, pipe.XRead(ctx, &redis.XReadArgs{Streams: streams, Count: 1, Block: -1}))
		groups = append(groups, group)
	}
	if len(cmds) == 0 {
		return nil
	}
	pipe.Exec(ctx) // errors are read per command
	var firstErr error
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, cmd := range cmds {
		res, err := cmd.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			if firstErr == nil {
				firstErr = r.wrap(ctx, err)
			}
			continue
		}
		byKey := make(map[string]bool, len(res))
		for _, s := range res {
			byKey[s.Stream] = len(s.Messages) > 0
		}
		for _, fw := range groups[i] {
			if byKey[r.streamKey(fw.name)] && f.follows[fw.name] == fw {
				f.markDirtyLocked(fw)
			}
		}
	}
	return firstErr
}

// control applies subscription changes, batched, and pings each shard so
// that a connection that died without a word is noticed.
func (f *redisFollower) control() {
	ping := time.NewTicker(f.r.cfg.PollInterval)
	defer ping.Stop()
	var backoff time.Duration
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-f.kick:
		case <-ping.C:
			f.pingShards()
			continue
		}
		if err := f.applyPending(); err != nil {
			backoff = min(max(2*backoff, 50*time.Millisecond), 5*time.Second)
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(backoff/2 + rand.N(backoff/2+1)):
			}
			kickOf(f.kick)
			continue
		}
		backoff = 0
	}
}

// applyPending sends the pending subscription changes, grouped per shard.
// Changes that failed stay pending, unless a later Follow or Unfollow
// replaced them.
func (f *redisFollower) applyPending() error {
	f.mu.Lock()
	pending := f.pending
	f.pending = make(map[string]bool)
	f.mu.Unlock()
	type change struct{ sub, unsub []string }
	byShard := make(map[*shard]*change)
	var firstErr error
	failed := func(err error, chans []string, sub bool) {
		if firstErr == nil {
			firstErr = err
		}
		f.mu.Lock()
		for _, ch := range chans {
			if _, newer := f.pending[ch]; !newer {
				f.pending[ch] = sub
			}
		}
		f.mu.Unlock()
	}
	for ch, sub := range pending {
		var s *shard
		if sub {
			var err error
			if s, err = f.shardFor(ch); err != nil {
				failed(err, []string{ch}, true)
				continue
			}
		} else {
			f.mu.Lock()
			s = f.subs[ch]
			f.mu.Unlock()
			if s == nil {
				continue
			}
		}
		c := byShard[s]
		if c == nil {
			c = &change{}
			byShard[s] = c
		}
		if sub {
			c.sub = append(c.sub, ch)
		} else {
			c.unsub = append(c.unsub, ch)
		}
	}
	ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
	defer cancel()
	_, cluster := f.r.client.(*redis.ClusterClient)
	for s, c := range byShard {
		if len(c.unsub) > 0 {
			chans := notifyChannels(f.r, c.unsub)
			if err := s.ps.SUnsubscribe(ctx, chans...); err != nil {
				failed(err, c.unsub, false)
			} else {
				f.mu.Lock()
				for _, ch := range c.unsub {
					if f.subs[ch] == s {
						delete(f.subs, ch)
					}
				}
				f.mu.Unlock()
			}
		}
		// In Cluster one SSUBSCRIBE must name channels of one slot.
		step := 1000
		if cluster {
			step = 1
		}
		for start := 0; start < len(c.sub); start += step {
			part := c.sub[start:min(start+step, len(c.sub))]
			// Recorded before the SSUBSCRIBE is written, so that
			// whatever happens on s from then on finds the channels
			// there: an unsubscription Redis sends when the slot moves
			// away (confirmed), s replaced after a MOVED or a silence
			// (replaceShard). Recorded on an s replaced already, they
			// would be subscribed nowhere and never again.
			f.mu.Lock()
			if f.shards[s.addr] != s {
				f.mu.Unlock()
				failed(errShardReplaced, part, true)
				continue
			}
			prev := make([]*shard, len(part))
			for i, ch := range part {
				prev[i], f.subs[ch] = f.subs[ch], s
			}
			f.mu.Unlock()
			if err := s.ps.SSubscribe(ctx, notifyChannels(f.r, part)...); err != nil {
				f.mu.Lock()
				for i, ch := range part {
					if f.subs[ch] == s {
						f.subs[ch] = prev[i]
					}
				}
				f.mu.Unlock()
				failed(err, part, true)
				continue
			}
			if h := afterSubscribe.Load(); h != nil {
				(*h)()
			}
			for i, ch := range part {
				if old := prev[i]; old != nil && old != s {
					// The slot moved: leave the old owner.
					old.ps.SUnsubscribe(ctx, f.r.notifyChannel(ch))
				}
			}
		}
	}
	return firstErr
}

var errShardReplaced = errors.New("backlog: the pub/sub connection was replaced while subscribing")

func hasBatch(out map[string]int, name string) bool {
	_, ok := out[name]
	return ok
}

func notifyChannels(r *Redis, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = r.notifyChannel(n)
	}
	return out
}

// shardFor returns the pub/sub connection for channel's notifications,
// opening it (and its receive loop) on first use: the only one outside
// Cluster, the one to the master of the channel's slot in it.
func (f *redisFollower) shardFor(channel string) (*shard, error) {
	addr := ""
	var client interface {
		SSubscribe(ctx context.Context, channels ...string) *redis.PubSub
	} = f.client()
	if cc, ok := f.r.client.(*redis.ClusterClient); ok {
		f.mu.Lock()
		addr = f.moved[slotOf(channel)]
		f.mu.Unlock()
		if addr == "" {
			ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
			defer cancel()
			node, err := cc.MasterForKey(ctx, f.r.notifyChannel(channel))
			if err != nil {
				return nil, f.r.wrap(ctx, err)
			}
			addr = node.Options().Addr
			f.mu.Lock()
			if f.nodeOpt == nil {
				opt := *node.Options()
				opt.PushNotificationProcessor = nil // each client makes its own
				f.nodeOpt = &opt
			}
			f.mu.Unlock()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	if s := f.shards[addr]; s != nil {
		return s, nil
	}
	if addr != "" {
		node := f.nodes[addr]
		if node == nil {
			if f.nodeOpt == nil {
				return nil, fmt.Errorf("%w: no Cluster node known yet", ErrUnavailable)
			}
			opt := *f.nodeOpt
			opt.Addr = addr
			node = redis.NewClient(&opt)
			f.nodes[addr] = node
		}
		client = node
	}
	s := &shard{addr: addr, ps: client.SSubscribe(f.ctx)}
	f.shards[addr] = s
	f.wg.Go(func() { f.receive(s) })
	return s, nil
}

// slotOf is the Cluster hash slot of a channel's keys: CRC16 (XMODEM) of
// the hash tag, which is the channel name (ValidChannel allows no braces).
func slotOf(channel string) int {
	var crc uint16
	for i := 0; i < len(channel); i++ {
		crc ^= uint16(channel[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

// receive reads one shard's pub/sub connection until the follower closes.
// go-redis redials a broken connection on the next Receive and subscribes
// it again to every channel; each confirmation then starts a catch-up.
func (f *redisFollower) receive(s *shard) {
	var backoff time.Duration
	// Twice the ping interval with neither a message nor a pong means
	// the connection is dead though no error came (a peer gone without
	// a FIN): start over with a new one.
	silence := 2*f.r.cfg.PollInterval + time.Second
	for {
		msg, err := s.ps.ReceiveTimeout(f.ctx, silence)
		if f.ctx.Err() != nil {
			return
		}
		if err != nil {
			f.mu.Lock()
			current := f.shards[s.addr] == s
			f.mu.Unlock()
			if !current {
				return // replaced: its PubSub is closed
			}
			if isTimeout(err) {
				f.replaceShard(s)
				return
			}
			f.mu.Lock()
			f.err = f.r.wrap(f.ctx, err)
			f.mu.Unlock()
			kickOf(f.wake)
			if _, cluster := f.r.client.(*redis.ClusterClient); cluster {
				// The node may have failed over or lost its slots:
				// subscribe each channel where it lives now. A MOVED
				// reply to a SSUBSCRIBE says where.
				f.mu.Lock()
				if to, ok := redis.IsMovedError(err); ok {
					if slot, ok := movedSlot(err); ok {
						f.moved[slot] = to
					}
				} else {
					for slot, to := range f.moved {
						if to == s.addr {
							delete(f.moved, slot)
						}
					}
				}
				f.mu.Unlock()
				f.replaceShard(s)
				return
			}
			backoff = min(max(2*backoff, 50*time.Millisecond), 5*time.Second)
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(backoff/2 + rand.N(backoff/2+1)):
			}
			continue
		}
		backoff = 0
		switch m := msg.(type) {
		case *redis.Message:
			f.received(m)
		case *redis.Subscription:
			f.confirmed(s, m)
		}
	}
}

// movedSlot reads the slot of a "MOVED <slot> <addr>" reply.
func movedSlot(err error) (int, bool) {
	_, rest, ok := strings.Cut(err.Error(), "MOVED ")
	if !ok {
		return 0, false
	}
	slot, _, _ := strings.Cut(rest, " ")
	n, err := strconv.Atoi(slot)
	return n, err == nil && n >= 0 && n < 16384
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// received queues a notification for Next, or sends its channel to a
// catch-up when the queue is full or the payload is not understood.
func (f *redisFollower) received(m *redis.Message) {
	name, ok := f.r.channelOfNotify(m.Channel)
	if !ok {
		return
	}
	n, parsed := parseNote(m.Payload)
	f.mu.Lock()
	defer f.mu.Unlock()
	fw := f.follows[name]
	if fw == nil || fw.isDirty {
		return
	}
	if !parsed || int64(f.noteMem+len(n.data)) > noteBytesLimit.Load() {
		f.markDirtyLocked(fw)
		return
	}
	n.f = fw
	f.notes = append(f.notes, n)
	f.noteMem += len(n.data)
	kickOf(f.wake)
}

// parseNote reads "<id> <prev> <data>".
func parseNote(payload string) (note, bool) {
	idS, rest, ok1 := strings.Cut(payload, " ")
	prevS, data, ok2 := strings.Cut(rest, " ")
	id, err := ParseID(idS)
	if !ok1 || !ok2 || err != nil {
		return note{}, false
	}
	n := note{id: id, data: data}
	if prevS != "-" {
		if n.prev, err = ParseID(prevS); err != nil {
			return note{}, false
		}
		n.hasPrev = true
	}
	return n, true
}

// confirmed handles a subscription message. A confirmed subscription
// starts a catch-up, as nothing was heard before it. An unsubscription
// nobody asked for (Redis sends one when a channel's slot moves away)
// subscribes the channel again where it lives now.
func (f *redisFollower) confirmed(s *shard, m *redis.Subscription) {
	name, ok := f.r.channelOfNotify(m.Channel)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fw := f.follows[name]
	if fw == nil {
		return
	}
	switch m.Kind {
	case "ssubscribe":
		f.markDirtyLocked(fw)
	case "sunsubscribe":
		if _, changing := f.pending[name]; !changing && f.subs[name] == s {
			delete(f.subs, name)
			f.pending[name] = true
			kickOf(f.kick)
		}
	}
}

// replaceShard drops s and subscribes its channels again through new
// connections, for a connection that went silent or, in Cluster, broke
// (its node may have lost its slots).
func (f *redisFollower) replaceShard(s *shard) {
	if cc, ok := f.r.client.(*redis.ClusterClient); ok {
		cc.ReloadState(f.ctx)
	}
	f.mu.Lock()
	if f.shards[s.addr] == s {
		delete(f.shards, s.addr)
	}
	for name, sub := range f.subs {
		if sub == s {
			delete(f.subs, name)
			if _, ok := f.follows[name]; ok {
				if _, changing := f.pending[name]; !changing {
					f.pending[name] = true
				}
			}
		}
	}
	f.mu.Unlock()
	s.ps.Close()
	kickOf(f.kick)
}

// pingShards asks every shard for a pong, which keeps an idle connection
// from looking silent to receive. A failed write shows in receive too.
func (f *redisFollower) pingShards() {
	f.mu.Lock()
	shards := slices.Collect(maps.Values(f.shards))
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(f.ctx, time.Second)
	defer cancel()
	for _, s := range shards {
		s.ps.Ping(ctx)
	}
}

// parseRead reads readScript's answer: {proved, {{id, {field, value,
// ...}}, ...}}, where proved 2 means deleted. As in messagesOf, an entry
// without a data field has empty Data.
func parseRead(vals []any) (proved, deleted bool, msgs []Message, err error) {
	entries, ok := []any(nil), len(vals) == 2
	if ok {
		entries, ok = vals[1].([]any)
	}
	if !ok {
		return false, false, nil, fmt.Errorf("backlog: read script returned %v", vals)
	}
	if flag, _ := vals[0].(int64); flag == 2 {
		return false, true, nil, nil
	}
	for _, e := range entries {
		pair, _ := e.([]any)
		if len(pair) != 2 {
			return false, false, nil, fmt.Errorf("backlog: read script returned entry %v", e)
		}
		s, _ := pair[0].(string)
		id, err := ParseID(s)
		if err != nil {
			continue // Redis only hands out canonical IDs
		}
		m := Message{ID: id}
		fields, _ := pair[1].([]any)
		for k := 0; k+1 < len(fields); k += 2 {
			if name, _ := fields[k].(string); name == "data" {
				data, _ := fields[k+1].(string)
				m.Data = []byte(data)
				break
			}
		}
		msgs = append(msgs, m)
	}
	flag, _ := vals[0].(int64)
	return flag == 1, false, msgs, nil
}
