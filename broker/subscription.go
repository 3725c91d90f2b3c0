package broker

import (
	"context"
	"sync"

	"github.com/tslm/tslm/backlog"
)

// Sink receives one connection's publications. Transports implement it.
// Its methods must not call the subscription's Close: Close waits for a
// Replay call in flight to return.
type Sink interface {
	// Deliver queues a live publication without waiting. It returns false
	// when the queue is full: the subscription then stops and the sink
	// must close its connection as a slow consumer (the client resumes
	// from the last ID it received, so nothing is lost).
	Deliver(p *Publication) bool
	// Replay queues a publication read from the backlog, waiting for room
	// until ctx is done: a replay goes at the pace the client reads. It
	// must return promptly once ctx is done, as Close cancels it.
	Replay(ctx context.Context, p *Publication) error
}

// From says where a subscription starts. The zero value means live only.
type From struct {
	// Since resumes after this ID.
	Since *backlog.ID
	// Last starts with the newest Last messages of the backlog.
	Last int
}

// SubscribeResult is what the client is told before its first message.
type SubscribeResult struct {
	// Head is the newest ID the channel ever had (Zero if none) when the
	// subscription started. A live-only subscription receives exactly the
	// messages after it.
	Head backlog.ID
	// Resumed, for a Since subscription, is true when the backlog proved
	// that nothing after Since was lost. When false the replay starts at
	// the oldest message the backlog still holds.
	Resumed bool
}

// Subscription is one channel's subscription on one connection. Between
// Subscribe and Replay it buffers live messages; Replay sends the backlog
// part, merges the buffer in without gap or duplicate (by ID, see merge.go),
// and switches to live delivery.
type Subscription struct {
	hub  *Hub
	ch   *channelState
	sink Sink
	// index is where s is in ch.members while it is there; guarded by
	// ch.mu.
	index int

	// stopped is cancelled by Close, which also cancels a running
	// replay's context (replayCancel, guarded by mu): that ends the
	// replay's reads and sends.
	stopped      context.Context
	replayCancel context.CancelFunc
	stop         context.CancelFunc
	// replayed is closed once Replay has returned, or by Close when Replay
	// had not started, so that Close can wait for a replay in flight.
	replayed chan struct{}

	// Owned by the goroutine that calls Subscribe and then Replay, until
	// live is set (or by Close when Replay never started).
	pending    []backlog.Message // read from the backlog, not yet sent
	held       int64             // bytes of the replay budget reserved for pending
	startGap   *Publication      // a loss to report before pending
	paging     bool              // more may follow pending in the backlog
	history    bool              // since or last: the replay's size is measured
	replaySent int32             // messages the replay sent (within a channel's max_len and overtakes)
	floor      backlog.ID        // live messages at or before it are not wanted
	lastSent   backlog.ID        // after live is set, guarded by mu

	mu       sync.Mutex
	state    replayState
	live     bool
	closed   bool // no more deliveries
	detached bool // removed from the channel
	buffer   liveBuffer
}

type replayState int

const (
	replayNotStarted replayState = iota
	replayRunning
	replayDone
)

// Subscribe registers sink for channel's publications from the position
// given by from, and returns what the client should be told first. The
// caller then sends that to the client and calls Replay; until then live
// messages are buffered. The first page of a replay is read here, so that a
// replay that cannot start fails the subscribe.
func (h *Hub) Subscribe(ctx context.Context, channel string, from From, sink Sink) (*Subscription, SubscribeResult, error) {
	if err := checkChannel(channel); err != nil {
		return nil, SubscribeResult{}, err
	}
	if from.Last > h.cfg.MaxLast {
		return nil, SubscribeResult{}, ErrLimit.With("last may be at most %d", h.cfg.MaxLast)
	}
	return h.subscribe(ctx, channel, from, sink)
}

// subscribe is Subscribe without the checks on a client's wishes: sessions
// follow their inboxes with it.
func (h *Hub) subscribe(ctx context.Context, channel string, from From, sink Sink) (*Subscription, SubscribeResult, error) {
	s := &Subscription{hub: h, sink: sink, replayed: make(chan struct{})}
	s.stopped, s.stop = context.WithCancel(context.Background())
	// Registering before reading the backlog is what makes the merge
	// gap-free: every message the reader delivers from now on is buffered,
	// and every message before it is in what we read next.
	info, err := h.join(ctx, channel, s)
	if err != nil {
		s.stop()
		return nil, SubscribeResult{}, err
	}
	h.stats.subscriptions.Add(1)
	res, err := s.position(ctx, from, info)
	if err != nil {
		s.Close()
		return nil, SubscribeResult{}, err
	}
	return s, res, nil
}

// position reads where the subscription starts. info is the channel's
// Info when join read it for the reader (which then started after s was
// registered, so it holds for s as if read now); otherwise position asks,
// after the registration. Either way a subscribe asks once.
func (s *Subscription) position(ctx context.Context, from From, info *backlog.Info) (SubscribeResult, error) {
	log, name := s.hub.log, s.ch.name
	if info == nil {
		got, err := log.Info(ctx, name)
		if err != nil {
			return SubscribeResult{}, err
		}
		info = &got
	}
	res := SubscribeResult{Head: info.LastID}
	s.history = from.Since != nil || from.Last > 0
	switch {
	case from.Since != nil:
		continuous, err := s.readPage(ctx, *from.Since)
		if err != nil {
			return res, err
		}
		res.Resumed = continuous
		if continuous {
			s.lastSent = *from.Since
		} else if restartsAtOldest(*from.Since, continuous, info.FirstID) {
			s.dropPending()
			if _, err := s.readPage(ctx, backlog.Zero); err != nil {
				return res, err
			}
		}
	case from.Last > 0:
		// Only where the newest Last start is read at once; they are then
		// paged forward like a since.
		s.floor = info.LastID
		start, err := log.TailStart(ctx, name, from.Last)
		if err != nil || start.IsZero() {
			return res, err
		}
		s.lastSent = start.Prev()
		if _, err := s.readPage(ctx, s.lastSent); err != nil {
			return res, err
		}
		if len(s.pending) == 0 || s.pending[0].ID != start {
			// Trimmed between the two reads: the first of the newest
			// Last is gone.
			s.startGap = newGap(name, s.lastSent, backlog.Zero)
		}
	default:
		s.floor = info.LastID
	}
	return res, nil
}

// offer is the reader's hand-off of a live publication. It reports whether
// the sink took it (the hub counts deliveries, not offers).
func (s *Subscription) offer(p *Publication) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return false
	case !s.live:
		s.buffer.add(p, s.hub.cfg.ReplayBuffer)
		return false
	}
	if p = news(s.lastSent, p); p == nil {
		return false
	}
	if !s.sink.Deliver(p) || p.Deleted {
		// A deleted channel's notice is the last thing its subscribers
		// get; it is not a message, so it is not counted as one.
		s.closed, s.buffer = true, liveBuffer{}
		return false
	}
	if !p.Gap {
		s.lastSent = p.ID
	}
	return true
}

// Close ends the subscription. Once it returns, to any caller, the sink
// receives nothing more from it and its replay reads no more pages: Close
// cancels a Replay in flight and waits for it to return. Safe to call more
// than once and from any goroutine, except from within the sink's methods.
func (s *Subscription) Close() {
	s.mu.Lock()
	first := !s.detached
	s.closed, s.detached, s.buffer = true, true, liveBuffer{}
	if s.state == replayNotStarted {
		s.state = replayDone
		s.dropPending()
		close(s.replayed)
	}
	s.mu.Unlock()
	s.stop()
	s.mu.Lock()
	cancelReplay := s.replayCancel
	s.mu.Unlock()
	if cancelReplay != nil {
		cancelReplay()
	}
	if first {
		s.ch.remove(s)
		s.hub.release(s.ch)
		s.hub.stats.subscriptions.Add(-1)
	}
	<-s.replayed
}

// Ended reports that the subscription receives nothing more: it was
// closed, its sink refused a delivery, or its channel was deleted. Its
// owner still calls Close.
func (s *Subscription) Ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Channel is the subscribed channel's name.
func (s *Subscription) Channel() string { return s.ch.name }
