package broker

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/histogram"
)

// Config tunes a Hub. Zero values mean the documented defaults.
type Config struct {
	// DefaultMaxLen is a new channel's MaxLen when its creator names none;
	// 0 means 10 000.
	DefaultMaxLen int64
	// DefaultRetention is a new channel's Retention when its creator names
	// none; 0 means 24h.
	DefaultRetention time.Duration
	// ChannelDefaults, when set, gives the MaxLen and Retention of a new
	// channel whose creator names none, by the channel's name (such as
	// from the first matching channel rule); a zero result means
	// DefaultMaxLen or DefaultRetention. It is called on every Create and
	// must be safe for concurrent use.
	ChannelDefaults func(channel string) (maxLen int64, retention time.Duration)
	// MaxMaxLen is the largest MaxLen a creator may ask for; 0 means 1 000 000.
	MaxMaxLen int64
	// MaxRetention is the longest Retention a creator may ask for; 0 means 30 days.
	MaxRetention time.Duration
	// ReplayPage is the most messages a replay reads from the backlog at a
	// time; 0 means 500. Pages hold fewer when messages are large: see
	// ReplayPageBytes.
	ReplayPage int
	// ReplayPageBytes bounds the bytes one replay reads and holds at a
	// time: the page count adapts to the largest message of the channel's
	// last page, and a page is cut at this bound, so it holds at most
	// ReplayPageBytes, or one message when a single message is larger.
	// 0 means 1 MiB.
	ReplayPageBytes int
	// ReplayBytes is the replica-wide budget of bytes that replays hold
	// (read from the backlog, not yet handed to a connection): a page is
	// reserved before it is read and each message released once sent. A
	// page that does not fit waits for room; a page larger than the whole
	// budget waits until it has the budget to itself. 0 means 64 MiB.
	ReplayBytes int64
	// ReplayWait is how long a replay waits for room in ReplayBytes before
	// it fails with ErrReplayCapacity (code unavailable: retry later).
	// 0 means 10s.
	ReplayWait time.Duration
	// ReplayOvertakes is how many times in a row live traffic may overflow
	// ReplayBuffer during one replay (each time the replay re-reads the
	// backlog) before Replay gives up with ErrSlowConsumer. 0 means 3.
	ReplayOvertakes int
	// MaxLast is the largest "last" a subscriber may ask for. Those
	// messages are replayed in pages like a since, but finding where they
	// start walks back over them in the backlog. 0 means 1000.
	MaxLast int
	// ReplayBuffer bounds the live messages held for one subscription while
	// its replay runs; past it they are dropped and re-read from the
	// backlog, so it trades memory for backlog reads, never for loss.
	// 0 means 4096.
	ReplayBuffer int
	// ReadBatch bounds the messages the follower returns per channel at a
	// time; 0 means 1000.
	ReadBatch int
	// TrimInterval is how often retention is applied; 0 means 1m.
	TrimInterval time.Duration
	// OperationTimeout bounds every backlog call made for a client: create,
	// publish, info, a read, and each step of a subscribe and of its
	// replay. Past it the call fails with ErrTimeout (code unavailable),
	// the same for every endpoint. 0 means 5s.
	OperationTimeout time.Duration
	// IdempotencyWindow is how long a publish's idempotency key is
	// remembered after its first use; 0 means 10m.
	IdempotencyWindow time.Duration
	// RequestTimeout is a request's timeout when its sender names none;
	// 0 means 5s.
	RequestTimeout time.Duration
	// MaxRequestTimeout is the longest timeout a request may ask for;
	// 0 means 60s.
	MaxRequestTimeout time.Duration
	// MaxInflight bounds the requests one session awaits; 0 means 100.
	MaxInflight int
	// SessionTTL is how long a session's inbox outlives its last
	// connection, for the client to reconnect and collect its replies;
	// 0 means 5m.
	SessionTTL time.Duration
	// SessionReplies bounds the replies a session's inbox holds; 0 means
	// 1000.
	SessionReplies int64
	// ServeInflight bounds the requests one serving connection holds per
	// channel (handed to the app, not yet answered); 0 means 100.
	ServeInflight int
	// ReclaimAfter is how long a request claimed by a replica that went
	// away waits before another serving app may take it; 0 means 10s. A
	// live Serving touches what it holds every ReclaimAfter/3, so an app
	// may take longer than this to answer.
	ReclaimAfter time.Duration
	// ServeBlock is how long a serving loop waits for requests at a time;
	// it bounds how soon requests released on another replica are seen.
	// 0 means 1s.
	ServeBlock time.Duration
	// Logger receives the hub's logs; nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.DefaultMaxLen <= 0 {
		c.DefaultMaxLen = 10_000
	}
	if c.DefaultRetention <= 0 {
		c.DefaultRetention = 24 * time.Hour
	}
	if c.MaxMaxLen <= 0 {
		c.MaxMaxLen = 1_000_000
	}
	if c.MaxRetention <= 0 {
		c.MaxRetention = 30 * 24 * time.Hour
	}
	def(&c.ReplayPage, 500)
	def(&c.ReplayPageBytes, 1<<20)
	if c.ReplayBytes <= 0 {
		c.ReplayBytes = 64 << 20
	}
	if c.ReplayWait <= 0 {
		c.ReplayWait = 10 * time.Second
	}
	def(&c.ReplayOvertakes, 3)
	def(&c.MaxLast, 1000)
	def(&c.ReplayBuffer, 4096)
	def(&c.ReadBatch, 1000)
	if c.TrimInterval <= 0 {
		c.TrimInterval = time.Minute
	}
	if c.OperationTimeout <= 0 {
		c.OperationTimeout = 5 * time.Second
	}
	if c.IdempotencyWindow <= 0 {
		c.IdempotencyWindow = 10 * time.Minute
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.MaxRequestTimeout <= 0 {
		c.MaxRequestTimeout = time.Minute
	}
	def(&c.MaxInflight, 100)
	if c.SessionTTL <= 0 {
		c.SessionTTL = 5 * time.Minute
	}
	if c.SessionReplies <= 0 {
		c.SessionReplies = 1000
	}
	def(&c.ServeInflight, 100)
	if c.ReclaimAfter <= 0 {
		c.ReclaimAfter = 10 * time.Second
	}
	if c.ServeBlock <= 0 {
		c.ServeBlock = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Hub is one replica's message hub: it creates channels and publishes to the
// backlog, follows the backlog for channels that have local subscribers, and
// fans each message out to them. It is safe for concurrent use.
type Hub struct {
	cfg Config
	log *guardedLog // its errors are *Error
	// keptPageBytes is what the channels' kept replay pages hold in all
	// (keptPage), at most maxKeptPageBytes.
	keptPageBytes atomic.Int64

	mu       sync.Mutex
	channels map[string]*channelState // channels with local subscribers
	closed   bool

	reader *reader
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	budget *replayBudget
	stats  hubStats

	// replica names this hub's consumers in request groups, and
	// servingSeq tells its Servings apart.
	replica    string
	servingSeq atomic.Uint64
	servings   map[string]map[*Serving]struct{} // open Servings per channel; guarded by mu
}

type hubStats struct {
	delivered       atomic.Int64
	subscriptions   atomic.Int64
	gaps            atomic.Int64
	readErrors      atomic.Int64
	replayOverflows atomic.Int64
	replayRefused   atomic.Int64

	sessions        atomic.Int64
	requestsPending atomic.Int64
	replies         atomic.Int64
	refusals        atomic.Int64
	timeouts        atomic.Int64
	repliesDropped  atomic.Int64
	servings        atomic.Int64

	// Read from the backlog by the readers (reader.go) and sent by
	// replays (replay.go).
	read           atomic.Int64
	fullReads      atomic.Int64
	readerLag      *histogram.Histogram
	replayMessages *histogram.Histogram
}

// Histogram bounds: a reader's lag in seconds, and the messages of one
// replay.
var (
	readerLagBounds      = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	replayMessagesBounds = []float64{0, 1, 10, 50, 100, 500, 1000, 5000, 10000, 50000, 100000}
)

// Stats is a snapshot of the hub's counters, for metrics.
type Stats struct {
	Channels      int   // channels with local subscribers
	Readers       int   // reader goroutines started
	Subscriptions int64 // open subscriptions
	Delivered     int64 // messages sinks took, replay included
	Gaps          int64 // gap notices sinks took
	ReadErrors    int64 // failed backlog reads
	// ReplayBytes is what replays hold now of the ReplayBytes budget.
	ReplayBytes int64
	// ReplayOverflows counts replays overtaken by live traffic (their
	// buffer overflowed, so they re-read the backlog or gave up).
	ReplayOverflows int64
	// ReplayRefused counts subscriptions refused or ended because the
	// replay budget had no room within ReplayWait.
	ReplayRefused int64

	Sessions        int64 // open sessions
	RequestsPending int64 // requests that open sessions await
	Replies         int64 // replies with data handed to sessions' sinks
	Refusals        int64 // refusals handed to sessions' sinks
	Timeouts        int64 // requests answered with a timeout
	// RepliesDropped counts inbox entries that answered nothing: malformed,
	// for a request not awaited (already answered, timed out, unknown),
	// or held as an early reply that no request claimed.
	RepliesDropped int64
	Servings       int64 // open Servings

	// MessagesRead counts the entries the readers took from the backlog
	// for live delivery, session inboxes aside: each entry once per
	// replica that follows its channel, whoever appended it.
	MessagesRead int64
	// FullReads counts the channels' batches that came back with
	// Config.ReadBatch entries: the reader was at least that far behind
	// the channel's newest entry, and reads again at once.
	FullReads int64
	// ReaderLag holds, for every batch a reader took, how long its first
	// entry had been in the backlog, in seconds: the gateway's clock now
	// minus the millisecond time of the entry's ID (Redis's clock, with
	// the Redis backlog). Negative ages (clocks apart) count as 0.
	ReaderLag histogram.Snapshot
	// ReplayMessages holds, for every subscription that asked for history
	// (since or last), the messages its replay sent before it went live
	// or ended.
	ReplayMessages histogram.Snapshot
}

// New starts a hub over log. Close stops it; it does not close log.
func New(log backlog.Log, cfg Config) *Hub {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	guarded := &guardedLog{log: log, timeout: cfg.OperationTimeout, health: &availability{logger: cfg.Logger, now: time.Now}}
	guarded.reqs, _ = log.(backlog.Requests)
	h := &Hub{
		cfg: cfg, log: guarded, channels: make(map[string]*channelState), ctx: ctx, cancel: cancel,
		budget: newReplayBudget(cfg.ReplayBytes), replica: newReplicaID(),
		servings: make(map[string]map[*Serving]struct{}),
	}
	h.stats.readerLag = histogram.New(readerLagBounds)
	h.stats.replayMessages = histogram.New(replayMessagesBounds)
	h.reader = &reader{hub: h, f: log.NewFollower()}
	h.wg.Go(func() { h.reader.run(ctx) })
	h.wg.Go(func() { h.trimLoop(ctx) })
	return h
}

// Close stops the hub's goroutines and waits for them. Open subscriptions
// and sessions receive nothing more. Open Servings are closed, so that the
// requests they hold go to other replicas at once; the log must still be
// open for that.
func (h *Hub) Close() error {
	h.mu.Lock()
	h.closed = true
	var open []*Serving
	for _, set := range h.servings {
		for s := range set {
			open = append(open, s)
		}
	}
	h.mu.Unlock()
	h.cancel()
	for _, s := range open {
		s.Close()
	}
	h.wg.Wait()
	return h.reader.f.Close()
}

// goLocked runs f on a goroutine the hub waits for on Close, with the
// hub's context, unless the hub is closed. It expects h.mu held.
func (h *Hub) goLocked(f func(ctx context.Context)) error {
	if h.closed {
		return ErrClosed
	}
	h.wg.Go(func() { f(h.ctx) })
	return nil
}

// requests reports whether the backlog has request queues.
func (h *Hub) requests() error {
	if h.log.reqs == nil {
		return ErrUnavailable.With("this backlog does not support requests")
	}
	return nil
}

// checkChannel validates a channel named by a client: a valid name, and
// not a session inbox.
func checkChannel(channel string) error {
	switch {
	case !backlog.ValidChannel(channel):
		return ErrBadChannel
	case IsReserved(channel):
		return ErrReserved
	}
	return nil
}

// Ready reports whether the backlog answers, within the operation timeout,
// for readiness probes. Its outcome feeds the once-per-outage log like any
// other backlog call, so a probing load balancer also makes a recovery
// show in the log without client traffic.
func (h *Hub) Ready(ctx context.Context) error {
	return h.log.Ping(ctx)
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	n := len(h.channels)
	h.mu.Unlock()
	return Stats{
		Channels:      n,
		Subscriptions: h.stats.subscriptions.Load(),
		Delivered:     h.stats.delivered.Load(),
		Gaps:          h.stats.gaps.Load(),
		ReadErrors:    h.stats.readErrors.Load(),

		ReplayBytes:     h.budget.used.Load(),
		ReplayOverflows: h.stats.replayOverflows.Load(),
		ReplayRefused:   h.stats.replayRefused.Load(),

		Sessions:        h.stats.sessions.Load(),
		RequestsPending: h.stats.requestsPending.Load(),
		Replies:         h.stats.replies.Load(),
		Refusals:        h.stats.refusals.Load(),
		Timeouts:        h.stats.timeouts.Load(),
		RepliesDropped:  h.stats.repliesDropped.Load(),
		Servings:        h.stats.servings.Load(),

		MessagesRead:   h.stats.read.Load(),
		FullReads:      h.stats.fullReads.Load(),
		ReaderLag:      h.stats.readerLag.Snapshot(),
		ReplayMessages: h.stats.replayMessages.Snapshot(),
	}
}

// ChannelOptions are a creator's wishes; nil fields take the defaults.
type ChannelOptions struct {
	MaxLen    *int64
	Retention *time.Duration
}

// Create makes channel. created is false when it already existed, in which
// case its configuration is left as it was; opts are still validated, so a
// bad request fails the same way whether or not the channel exists.
func (h *Hub) Create(ctx context.Context, channel string, opts ChannelOptions) (created bool, err error) {
	if err := checkChannel(channel); err != nil {
		return false, err
	}
	cfg := backlog.ChannelConfig{MaxLen: h.cfg.DefaultMaxLen, Retention: h.cfg.DefaultRetention}
	if h.cfg.ChannelDefaults != nil {
		maxLen, retention := h.cfg.ChannelDefaults(channel)
		if maxLen > 0 {
			cfg.MaxLen = maxLen
		}
		if retention > 0 {
			cfg.Retention = retention
		}
	}
	if opts.MaxLen != nil {
		switch {
		case *opts.MaxLen < 1:
			return false, ErrBadConfig.With("max_len must be at least 1")
		case *opts.MaxLen > h.cfg.MaxMaxLen:
			return false, ErrLimit.With("max_len may be at most %d", h.cfg.MaxMaxLen)
		}
		cfg.MaxLen = *opts.MaxLen
	}
	if opts.Retention != nil {
		switch {
		case *opts.Retention < time.Millisecond:
			return false, ErrBadConfig.With("retention must be at least 1ms")
		case *opts.Retention > h.cfg.MaxRetention:
			return false, ErrLimit.With("retention may be at most %s", h.cfg.MaxRetention)
		}
		cfg.Retention = *opts.Retention
	}
	created, err = h.log.Create(ctx, channel, cfg)
	if errors.Is(err, ErrLimit) {
		return false, ErrLimit.With("too many channels").Wrap(err)
	}
	return created, err
}

// Publish appends data, which must be JSON, to channel and returns its ID.
// Subscribers receive it through the backlog, as they receive messages that
// publishers appended directly.
func (h *Hub) Publish(ctx context.Context, channel string, data []byte) (backlog.ID, error) {
	if err := checkChannel(channel); err != nil {
		return backlog.ID{}, err
	}
	return h.log.Append(ctx, channel, data)
}

// PublishIdempotent is Publish that a publisher may retry: the first call
// with key on channel appends, and every later one within
// Config.IdempotencyWindow returns the same ID with duplicate set and
// appends nothing, whatever its data. key must pass
// backlog.ValidIdempotencyKey, else ErrBadKey.
func (h *Hub) PublishIdempotent(ctx context.Context, channel string, data []byte, key string) (id backlog.ID, duplicate bool, err error) {
	if err := checkChannel(channel); err != nil {
		return backlog.ID{}, false, err
	}
	if !backlog.ValidIdempotencyKey(key) {
		return backlog.ID{}, false, ErrBadKey
	}
	return h.log.AppendIdempotent(ctx, channel, data, backlog.Idempotency{Key: key, Window: h.cfg.IdempotencyWindow})
}

// Delete removes channel. Its subscribers, on every replica, receive a
// Publication with Deleted set and then nothing: their replicas learn of
// it through the backlog, as they learn of messages.
func (h *Hub) Delete(ctx context.Context, channel string) error {
	if err := checkChannel(channel); err != nil {
		return err
	}
	return h.log.Delete(ctx, channel)
}

// List returns a page of channel names starting with prefix; see
// backlog.Log.List. Session inboxes are left out, so a page may hold fewer
// names than the backlog's, as the List contract allows.
func (h *Hub) List(ctx context.Context, prefix, cursor string, limit int) (names []string, next string, err error) {
	if prefix != "" && !backlog.ValidChannel(prefix) {
		return nil, "", ErrBadPrefix
	}
	if IsReserved(prefix) {
		return nil, "", nil // nothing but inboxes: the walk is done
	}
	names, next, err = h.log.List(ctx, prefix, cursor, limit)
	kept := names[:0]
	for _, n := range names {
		if !IsReserved(n) {
			kept = append(kept, n)
		}
	}
	return kept, next, err
}

// Info describes channel.
func (h *Hub) Info(ctx context.Context, channel string) (backlog.Info, error) {
	if err := checkChannel(channel); err != nil {
		return backlog.Info{}, err
	}
	return h.log.Info(ctx, channel)
}

// Messages reads up to limit messages after since, for the HTTP API, as a
// subscribe with since would replay them (see readSince).
func (h *Hub) Messages(ctx context.Context, channel string, since backlog.ID, limit int) ([]*Publication, bool, error) {
	if err := checkChannel(channel); err != nil {
		return nil, false, err
	}
	page, err := h.readSince(ctx, channel, since, limit)
	if err != nil {
		return nil, false, err
	}
	pubs := make([]*Publication, len(page.Messages))
	for i, m := range page.Messages {
		pubs[i] = newPublication(channel, m)
	}
	return pubs, page.Continuous, nil
}

// readSince reads the first page after since, as every transport resumes
// (see restartsAtOldest).
func (h *Hub) readSince(ctx context.Context, channel string, since backlog.ID, limit int) (backlog.Page, error) {
	page, err := h.log.Range(ctx, channel, since, limit)
	if err != nil || !restartsAtOldest(since, page.Continuous, backlog.Zero) {
		return page, err
	}
	page, err = h.log.Range(ctx, channel, backlog.Zero, limit)
	page.Continuous = false
	return page, err
}

// restartsAtOldest is the one rule by which every transport resumes: when
// the backlog proves nothing after since was lost, the messages after it
// follow; otherwise they start at the oldest message held, and a read
// after since must be redone from there when since is not older than
// oldest, the oldest held (Zero when the caller does not know it): since
// was then never this backlog's, or the backlog lost its newest entries,
// and held messages before since would be skipped. A since older than
// everything held reads from the oldest anyway.
func restartsAtOldest(since backlog.ID, continuous bool, oldest backlog.ID) bool {
	return !continuous && !since.IsZero() && !since.Less(oldest)
}

// channelState is a channel with local subscribers.
type channelState struct {
	name string
	refs int // guarded by Hub.mu
	// follow numbers the follower's batches for this state
	// (backlog.Batch.Follow); guarded by Hub.mu.
	follow uint64

	// ready is closed once the reader follows the channel, or initErr says
	// why it could not.
	ready   chan struct{}
	initErr error

	// gone is set once the channel left h.channels: its last subscriber
	// left, or it was deleted; guarded by Hub.mu.
	gone bool

	// members are the channel's subscriptions in no particular order, each
	// knowing its index (Subscription.index), so that adding and removing
	// one costs O(1) however many there are: a reconnect storm onto a hot
	// channel adds and removes thousands. Guarded by mu.
	mu      sync.Mutex
	members []*Subscription
	// snapshot is the fan-out's copy of members, which it iterates without
	// mu. It is rebuilt, reusing its array, by the first fan-out after
	// members changed (fresh unset), so churn costs one copy per batch
	// fanned out, which visits every subscriber anyway, instead of a fresh
	// list per subscribe and unsubscribe. A remove empties it, or, while a
	// fan-out iterates it (fanning), that fan-out does once done: it keeps
	// no subscription that left alive, on a channel that goes quiet too.
	// Guarded by mu, but its elements are the fan-out's while fanning.
	snapshot []*Subscription
	fresh    bool // snapshot holds members
	fanning  bool
	// fanouts counts the fan-outs that took a list of subscribers
	// (subscribers). kept is the last replay page read for this state,
	// kept until the next fan-out (replayRange). Guarded by mu.
	fanouts uint64
	kept    *keptPage
	dropped bool // no longer followed (dropLocked): keeps nothing

	// messageBytes is the cost of the largest message of the last page a
	// replay read here (0: none yet), from which the next replay sizes its
	// first page.
	messageBytes atomic.Int64
}

func (c *channelState) add(s *Subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.index = len(c.members)
	c.members = append(c.members, s)
	// A fan-out that takes its list from now on copies members with s; one
	// that took it before read its batch from the backlog before s
	// registered, so s's own read of the backlog has that batch (see
	// Hub.subscribe).
	c.fresh = false
}

// remove takes s out of members by moving the last member into its place.
// Order among subscribers does not matter: each one's messages still come
// in order, as the fan-out hands every message to all of them before the
// next.
func (c *channelState) remove(s *Subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := s.index
	if i >= len(c.members) || c.members[i] != s {
		return // never added
	}
	last := len(c.members) - 1
	c.members[i] = c.members[last]
	c.members[i].index = i
	c.members[last] = nil // no reference kept to a closed subscription
	c.members = c.members[:last]
	if cap(c.members) > 64 && len(c.members) < cap(c.members)/4 {
		// After a storm has left, give the memory back; halving on a
		// quarter keeps this O(1) amortised.
		c.members = append(make([]*Subscription, 0, cap(c.members)/2), c.members...)
	}
	c.fresh = false
	if !c.fanning {
		c.emptySnapshot()
	}
}

// subscribers returns the subscriptions to fan a batch out to: everyone
// registered before the call, and maybe some registered during it. It
// expects one fan-out per channel at a time (the hub's reader fans a
// channel's batches out one after the other), which calls fanned once it
// is done with the slice. The slice must not be modified.
func (c *channelState) subscribers() []*Subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.fresh {
		buf := c.snapshot[:0]
		if cap(buf) > 2*cap(c.members) {
			buf = nil // the channel shrank: let the big array go
		}
		c.snapshot = append(buf, c.members...)
		clear(c.snapshot[len(c.snapshot):cap(c.snapshot)])
		c.fresh = true
	}
	c.fanning = true
	c.fanouts++
	c.dropKeptLocked()
	return c.snapshot
}

// maxKeptPageBytes bounds the replay pages the channels keep, in all: a
// storm across many channels keeps what fits and reads the rest.
const maxKeptPageBytes = 64 << 20

// keptPageTTL is how long a channel keeps a replay page that no fan-out
// replaced: a storm's resumes come within seconds, and a channel gone
// quiet after one should not keep it. A variable for tests.
var keptPageTTL = 5 * time.Second

// keptPage is a replay page (backlog.Range after after, limit messages)
// read when the channel's fan-out count was fanouts.
type keptPage struct {
	after   backlog.ID
	limit   int
	fanouts uint64
	page    backlog.Page // its Messages are never handed out, only copies
	bytes   int64
	hub     *Hub // whose keptPageBytes counts bytes
	expiry  *time.Timer
}

// replayRange reads a replay's page, or copies the one the channel kept.
// In a reconnect storm a channel's subscribers resume within seconds of
// each other, most from the same last ID, and 10 000 subscribers on 100
// channels read the same 100 pages 10 000 times: a quarter of the
// gateway's CPU during the catch-up, on Redis. A kept page serves a
// subscription only while no fan-out has taken a list of subscribers
// since the page was read. The subscription registered before asking, so
// every message the page lacks (appended after the read) is fanned out
// after it registered and reaches it live, as with a read of its own; what
// both have, the merge drops as usual. Each caller gets its own copy of
// the slice, which replay clears as it sends.
func (h *Hub) replayRange(ctx context.Context, ch *channelState, after backlog.ID, limit int) (backlog.Page, error) {
	ch.mu.Lock()
	fanouts := ch.fanouts
	if k := ch.kept; k != nil && k.fanouts == fanouts && k.after == after && k.limit == limit {
		page := backlog.Page{Messages: slices.Clone(k.page.Messages), Continuous: k.page.Continuous}
		ch.mu.Unlock()
		return page, nil
	}
	ch.mu.Unlock()
	page, err := h.log.Range(ctx, ch.name, after, limit)
	if err != nil {
		return page, err
	}
	var bytes int64
	for _, m := range page.Messages {
		bytes += messageCost(m)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.fanouts != fanouts || ch.dropped {
		return page, nil // the channel moved on during the read, or is no longer followed here
	}
	ch.dropKeptLocked()
	if h.keptPageBytes.Add(bytes) > maxKeptPageBytes {
		h.keptPageBytes.Add(-bytes)
		return page, nil
	}
	k := &keptPage{after: after, limit: limit, fanouts: fanouts, bytes: bytes, hub: h,
		page: backlog.Page{Messages: slices.Clone(page.Messages), Continuous: page.Continuous}}
	k.expiry = time.AfterFunc(keptPageTTL, func() {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		if ch.kept == k {
			ch.dropKeptLocked()
		}
	})
	ch.kept = k
	return page, nil
}

// dropKeptLocked lets the kept page go. It expects c.mu held.
func (c *channelState) dropKeptLocked() {
	if c.kept != nil {
		c.kept.expiry.Stop()
		c.kept.hub.keptPageBytes.Add(-c.kept.bytes)
		c.kept = nil
	}
}

// fanned ends the fan-out that called subscribers.
func (c *channelState) fanned() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fanning = false
	if !c.fresh {
		c.emptySnapshot() // a subscriber may have left during the fan-out
	}
}

// emptySnapshot drops the references the snapshot holds, keeping its
// array for the next copy. Each copy is emptied at most once, so this
// costs what making the copy did. It expects mu held and no fan-out.
func (c *channelState) emptySnapshot() {
	clear(c.snapshot)
	c.snapshot = c.snapshot[:0]
}

// join registers s with the followed state of channel, starting to follow
// it for the first local subscriber; success needs a release of s.ch.
// When this call started following, it returns the Info the reader starts
// from, so that the subscribe need not ask again: s is registered before
// the reader starts, so every message after that Info's LastID reaches s
// live, as if the Info were read after the registration. Otherwise info
// is nil.
func (h *Hub) join(ctx context.Context, name string, s *Subscription) (info *backlog.Info, err error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	c, ok := h.channels[name]
	if !ok {
		c = &channelState{name: name, ready: make(chan struct{})}
		h.channels[name] = c
	}
	c.refs++
	h.mu.Unlock()
	s.ch = c

	if !ok {
		// The reader starts at the current head: messages after it reach
		// subscribers live, older ones come from their replay. Other
		// subscribers may be waiting on this, so the first one leaving
		// must not cancel it; the operation timeout bounds it.
		got, err := h.log.Info(context.WithoutCancel(ctx), name)
		if err != nil {
			c.initErr = err
		} else {
			info = &got
			c.add(s)
			h.mu.Lock()
			// Under h.mu, which statesOf takes too: no batch of this
			// Follow can be looked up before c knows its number.
			if !c.gone {
				c.follow = h.reader.f.Follow(name, got.LastID)
			}
			h.mu.Unlock()
		}
		close(c.ready)
	} else {
		select {
		case <-c.ready:
		case <-ctx.Done():
			h.release(c)
			return nil, fromBacklog(ctx, name, ctx.Err())
		}
		if c.initErr == nil {
			c.add(s)
		}
	}
	if c.initErr != nil {
		h.release(c)
		return nil, c.initErr
	}
	return info, nil
}

func (h *Hub) release(c *channelState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c.refs--
	if c.refs > 0 || c.gone {
		return
	}
	h.dropLocked(c)
}

// forget stops following a deleted channel while its subscriptions are
// still open, so that a subscriber to a channel created again under its
// name starts afresh instead of joining a state nobody follows.
func (h *Hub) forget(c *channelState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !c.gone {
		h.dropLocked(c)
	}
}

// dropLocked expects h.mu held.
func (h *Hub) dropLocked(c *channelState) {
	c.mu.Lock()
	c.dropKeptLocked()
	c.dropped = true
	c.mu.Unlock()
	c.gone = true
	delete(h.channels, c.name)
	if c.follow != 0 {
		h.reader.f.Unfollow(c.name)
	}
}

// statesOf returns, per batch, the state it is for, or nil when the batch
// belongs to an earlier Follow of its channel, or to none.
func (h *Hub) statesOf(batches []backlog.Batch) []*channelState {
	states := make([]*channelState, len(batches))
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, b := range batches {
		if c := h.channels[b.Channel]; c != nil && c.follow == b.Follow {
			states[i] = c
		}
	}
	return states
}

func (h *Hub) trimLoop(ctx context.Context) {
	t := time.NewTicker(h.cfg.TrimInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := h.log.TrimExpired(ctx); err != nil && ctx.Err() == nil {
				h.cfg.Logger.Warn("retention trim failed", "err", err)
			}
		}
	}
}
