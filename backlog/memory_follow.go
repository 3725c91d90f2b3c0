package backlog

import (
	"context"
	"slices"
	"sync"
)

// memFollower follows channels of a Memory. Each followed channel is a
// memFollow registered on its memChannel, so that an append marks only the
// followers of its channel and wakes them: a woken Next looks at the marked
// channels, not at every channel followed.
type memFollower struct {
	m         *Memory
	wake      chan struct{} // cap 1: at most one pending wake-up
	done      chan struct{} // closed by Close
	closeOnce sync.Once

	// Guarded by Memory.wmu.
	follows map[string]*memFollow
	marked  []*memFollow
	seq     uint64 // numbers Follow calls
	closed  bool
}

// memFollow is one followed channel. cursor is Next's alone.
type memFollow struct {
	f      *memFollower
	name   string
	seq    uint64
	cursor ID
	// Guarded by Memory.wmu: the channel whose follows hold it (nil:
	// none), and whether it is in f.marked.
	on       *memChannel
	isMarked bool
}

// followList holds a channel's follows. The broker follows each channel
// from one follower per replica, so the first is held inline: registering
// then allocates nothing.
type followList struct {
	first *memFollow
	more  []*memFollow
}

func (l *followList) add(e *memFollow) {
	if l.first == nil {
		l.first = e
	} else {
		l.more = append(l.more, e)
	}
}

func (l *followList) remove(e *memFollow) {
	if l.first == e {
		l.first = nil
		if n := len(l.more); n > 0 {
			l.first = l.more[n-1]
			l.more = l.more[:n-1]
		}
		return
	}
	if j := slices.Index(l.more, e); j >= 0 {
		n := len(l.more)
		l.more[j] = l.more[n-1]
		l.more[n-1] = nil
		l.more = l.more[:n-1]
	}
}

func (m *Memory) NewFollower() Follower {
	return &memFollower{m: m, wake: make(chan struct{}, 1), done: make(chan struct{}), follows: make(map[string]*memFollow)}
}

// Follow registers under the read lock, so that no append falls between
// the registration and the first look, which it marks for.
func (f *memFollower) Follow(channel string, after ID) uint64 {
	m := f.m
	m.mu.RLock()
	defer m.mu.RUnlock()
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if old := f.follows[channel]; old != nil {
		old.detach()
	}
	f.seq++
	e := &memFollow{f: f, name: channel, seq: f.seq, cursor: after}
	if f.closed {
		return e.seq
	}
	f.follows[channel] = e
	e.attach(m.channels[channel])
	e.mark()
	return e.seq
}

func (f *memFollower) Unfollow(channel string) {
	f.m.wmu.Lock()
	defer f.m.wmu.Unlock()
	if e := f.follows[channel]; e != nil {
		e.detach()
		delete(f.follows, channel)
	}
}

func (f *memFollower) Close() error {
	f.closeOnce.Do(func() {
		f.m.wmu.Lock()
		f.closed = true
		for _, e := range f.follows {
			e.detach()
		}
		clear(f.follows)
		f.m.wmu.Unlock()
		close(f.done)
	})
	return nil
}

func (f *memFollower) Next(ctx context.Context, limit int) ([]Batch, error) {
	m := f.m
	for {
		m.mu.RLock()
		if m.closed {
			m.mu.RUnlock()
			return nil, ErrClosed
		}
		m.wmu.Lock()
		if f.closed {
			m.wmu.Unlock()
			m.mu.RUnlock()
			return nil, ErrClosed
		}
		batches := f.collectLocked(limit)
		m.wmu.Unlock()
		m.mu.RUnlock()
		if len(batches) > 0 {
			return batches, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-m.done:
			return nil, ErrClosed
		case <-f.done:
			return nil, ErrClosed
		case <-f.wake:
		}
	}
}

// collectLocked looks at the marked channels; it expects m.mu held for
// reading and m.wmu held. A channel with more than limit new messages
// stays marked, so that the next call goes on with it.
func (f *memFollower) collectLocked(limit int) []Batch {
	marked := f.marked
	if len(marked) == 0 {
		return nil // a wake-up for marks an earlier look took already
	}
	f.marked = nil
	var batches []Batch
	now := f.m.cfg.Now()
	for _, e := range marked {
		e.isMarked = false
		if f.follows[e.name] != e {
			continue // unfollowed or followed anew since it was marked
		}
		c, ok := f.m.channels[e.name]
		if !ok || c.expiredAt(now) {
			batches = append(batches, Batch{Channel: e.name, Follow: e.seq, After: e.cursor, Deleted: true})
			e.detach()
			delete(f.follows, e.name)
			continue
		}
		if e.on != c {
			// Deleted and created again since the last look: follow
			// the new channel; the cursor tells whether it is
			// continuous.
			e.detach()
			e.attach(c)
		}
		if !e.cursor.Less(c.last) {
			continue // caught up
		}
		all := c.msgs[c.indexAfter(e.cursor):]
		msgs := copyUpTo(all, limit)
		// A batch always carries a message: a loss with nothing after it
		// is reported with the next append, as Redis does.
		if len(msgs) == 0 {
			continue
		}
		// As in Redis, the first message being the cursor's immediate
		// successor proves continuity too.
		gap := !c.provesAfter(e.cursor) && (e.cursor.IsZero() || msgs[0].ID != e.cursor.Next())
		batches = append(batches, Batch{Channel: e.name, Follow: e.seq, After: e.cursor, Messages: msgs, Gap: gap})
		e.cursor = msgs[len(msgs)-1].ID
		if len(msgs) < len(all) {
			e.mark()
		}
	}
	return batches
}

// attach registers e on c, which may be nil (the channel does not exist);
// it expects Memory.wmu held.
func (e *memFollow) attach(c *memChannel) {
	e.on = c
	if c != nil {
		c.follows.add(e)
	}
}

// detach expects Memory.wmu held.
func (e *memFollow) detach() {
	if e.on != nil {
		e.on.follows.remove(e)
		e.on = nil
	}
}

// mark queues e for its follower's next look and wakes it; it expects
// Memory.wmu held.
func (e *memFollow) mark() {
	f := e.f
	if !e.isMarked {
		e.isMarked = true
		f.marked = append(f.marked, e)
	}
	select {
	case f.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// notifyLocked marks c's follows and wakes their followers; it expects
// m.mu held for writing, so that a Follow's registration and its first
// look are never split by a change.
func (m *Memory) notifyLocked(c *memChannel) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if c.follows.first == nil {
		return
	}
	c.follows.first.mark()
	for _, e := range c.follows.more {
		e.mark()
	}
}
