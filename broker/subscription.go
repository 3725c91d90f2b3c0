package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/tslm/tslm/backlog"
)

// Sink receives one connection's publications. Transports implement it.
type Sink interface {
	// Deliver queues a live publication without waiting. It returns false
	// when the queue is full: the subscription then stops and the sink
	// must close its connection as a slow consumer (the client resumes
	// from the last ID it received, so nothing is lost).
	Deliver(p *Publication) bool
	// Replay queues a publication read from the backlog, waiting for room
	// until ctx is done: a replay goes at the pace the client reads.
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
// part, merges the buffer in without gap or duplicate (by ID), and switches
// to live delivery.
type Subscription struct {
	hub  *Hub
	ch   *channelState
	sink Sink

	// Owned by the goroutine that calls Subscribe and then Replay, until
	// live is set.
	pending  []backlog.Message // read from the backlog, not yet sent
	paging   bool              // more may follow pending in the backlog
	floor    backlog.ID        // live messages at or before it are not wanted
	lastSent backlog.ID        // after live is set, guarded by mu

	mu         sync.Mutex
	live       bool
	closed     bool // no more deliveries
	detached   bool // removed from the channel
	buffer     []*Publication
	overflowed bool // buffer was dropped; Replay re-reads the backlog
}

// Subscribe registers sink for channel's publications from the position
// given by from, and returns what the client should be told first. The
// caller then sends that to the client and calls Replay; until then live
// messages are buffered.
func (h *Hub) Subscribe(ctx context.Context, channel string, from From, sink Sink) (*Subscription, SubscribeResult, error) {
	if !backlog.ValidChannel(channel) {
		return nil, SubscribeResult{}, ErrBadChannel
	}
	if from.Last > h.cfg.MaxLast {
		return nil, SubscribeResult{}, fmt.Errorf("%w: last may be at most %d", ErrLimit, h.cfg.MaxLast)
	}
	c, err := h.acquire(ctx, channel)
	if err != nil {
		return nil, SubscribeResult{}, err
	}
	s := &Subscription{hub: h, ch: c, sink: sink}
	// Registering before reading the backlog is what makes the merge
	// gap-free: every message the reader delivers from now on is buffered,
	// and every message before it is in what we read next.
	c.add(s)
	h.stats.subscriptions.Add(1)
	res, err := s.position(ctx, from)
	if err != nil {
		s.Close()
		return nil, SubscribeResult{}, err
	}
	return s, res, nil
}

func (s *Subscription) position(ctx context.Context, from From) (SubscribeResult, error) {
	log, name, pageSize := s.hub.log, s.ch.name, s.hub.cfg.ReplayPage
	info, err := log.Info(ctx, name)
	if err != nil {
		return SubscribeResult{}, err
	}
	res := SubscribeResult{Head: info.LastID}
	switch {
	case from.Since != nil:
		page, err := log.Range(ctx, name, *from.Since, pageSize)
		if err != nil {
			return res, err
		}
		res.Resumed = page.Continuous
		if page.Continuous {
			s.lastSent = *from.Since
		} else if !from.Since.Less(info.FirstID) {
			// Since lies within or beyond what is held (the backlog was
			// reset or lost its newest entries): start from the oldest.
			if page, err = log.Range(ctx, name, backlog.Zero, pageSize); err != nil {
				return res, err
			}
		}
		s.pending, s.paging = page.Messages, len(page.Messages) >= pageSize
	case from.Last > 0:
		msgs, err := log.Tail(ctx, name, from.Last)
		if err != nil {
			return res, err
		}
		s.pending, s.floor = msgs, info.LastID
	default:
		s.floor = info.LastID
	}
	return res, nil
}

// Replay sends the backlog part of the subscription and the live messages
// buffered meanwhile, then switches to live delivery. It returns
// ErrUnsubscribed if the subscription was closed meanwhile, or the sink's
// error.
func (s *Subscription) Replay(ctx context.Context) error {
	log, name, pageSize := s.hub.log, s.ch.name, s.hub.cfg.ReplayPage
	for {
		for _, m := range s.pending {
			if s.lastSent.Less(m.ID) {
				if err := s.send(ctx, newPublication(name, m)); err != nil {
					return err
				}
				s.lastSent = m.ID
			}
		}
		s.pending = nil
		if s.paging {
			page, err := log.Range(ctx, name, s.lastSent, pageSize)
			if errors.Is(err, backlog.ErrNotFound) {
				return s.deleted(ctx)
			}
			if err != nil {
				return err
			}
			if !page.Continuous {
				// Trimmed while we replayed: say so, then go on from
				// the oldest message held.
				if err := s.send(ctx, newGap(name, s.lastSent, backlog.Zero)); err != nil {
					return err
				}
			}
			s.pending, s.paging = page.Messages, len(page.Messages) >= pageSize
			continue
		}
		if s.lastSent.Less(s.floor) {
			s.lastSent = s.floor
		}

		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			return ErrUnsubscribed
		case s.overflowed:
			// Live traffic outran the replay; what was dropped is in the
			// backlog, after lastSent.
			s.overflowed, s.buffer, s.paging = false, nil, true
			s.mu.Unlock()
			continue
		case len(s.buffer) == 0:
			s.live = true
			s.mu.Unlock()
			return nil
		}
		buffered := s.buffer
		s.buffer = nil
		s.mu.Unlock()
		for _, p := range buffered {
			p = s.news(p)
			if p == nil {
				continue
			}
			if p.Deleted {
				return s.deleted(ctx)
			}
			if err := s.send(ctx, p); err != nil {
				return err
			}
			if !p.Gap {
				s.lastSent = p.ID
			}
		}
	}
}

// deleted tells the sink that the channel was deleted during the replay,
// and ends the subscription.
func (s *Subscription) deleted(ctx context.Context) error {
	s.mu.Lock()
	s.closed, s.buffer = true, nil
	s.mu.Unlock()
	if err := s.sink.Replay(ctx, newDeleted(s.ch.name)); err != nil {
		return err
	}
	return ErrUnsubscribed
}

// news returns what p means to this subscriber: p itself, a gap of its own,
// or nil when p tells it nothing new.
func (s *Subscription) news(p *Publication) *Publication {
	switch {
	case p.Deleted:
		return p
	case !p.Gap:
		if s.lastSent.Less(p.ID) {
			return p
		}
		return nil
	case !p.ID.Less(s.lastSent):
		return p // the loss starts after what it has
	case p.Resume.IsZero() || s.lastSent.Next().Less(p.Resume):
		// Its replay read the backlog past the reader's cursor, so the
		// reader's gap starts too early for it; but messages between its
		// last one and the first one held are lost to it too.
		return newGap(p.Channel, s.lastSent, p.Resume)
	}
	return nil // it already has everything up to the first message held
}

func (s *Subscription) send(ctx context.Context, p *Publication) error {
	if err := s.sink.Replay(ctx, p); err != nil {
		return err
	}
	if p.Gap {
		s.hub.stats.gaps.Add(1)
	} else {
		s.hub.stats.delivered.Add(1)
	}
	return nil
}

// offer is the reader's hand-off of a live publication.
func (s *Subscription) offer(p *Publication) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
	case !s.live:
		if s.overflowed {
			return
		}
		if len(s.buffer) >= s.hub.cfg.ReplayBuffer {
			s.overflowed, s.buffer = true, nil
			return
		}
		s.buffer = append(s.buffer, p)
	default:
		if p = s.news(p); p == nil {
			return
		}
		if !s.sink.Deliver(p) || p.Deleted {
			s.closed, s.buffer = true, nil
			return
		}
		if !p.Gap {
			s.lastSent = p.ID
		}
	}
}

// Close ends the subscription: once it returns, the sink receives nothing
// more from it. Safe to call more than once and from any goroutine.
func (s *Subscription) Close() {
	s.mu.Lock()
	if s.detached {
		s.mu.Unlock()
		return
	}
	s.closed, s.detached, s.buffer = true, true, nil
	s.mu.Unlock()
	s.ch.remove(s)
	s.hub.release(s.ch)
	s.hub.stats.subscriptions.Add(-1)
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
