package backlog

import (
	"context"
	"slices"
	"sort"
	"time"
)

// memQueue is a channel's request queue in Memory, modelled on a Redis
// stream with consumer groups so that the two backlogs behave alike.
type memQueue struct {
	reqs   []Request // held requests, oldest first; Deliveries unused
	last   ID        // newest ID ever enqueued
	groups map[string]*memGroup
	// enqueued is closed (and replaced) by every Enqueue, waking Claims.
	enqueued chan struct{}
}

// memGroup is a consumer group: like Redis's, a last delivered ID and a
// pending entries list.
type memGroup struct {
	lastDelivered ID
	pending       map[ID]*memPending
}

type memPending struct {
	consumer   string
	delivered  time.Time // last handed out
	deliveries int64
}

var _ Requests = (*Memory)(nil)

// queueLocked returns channel's queue, making it; it expects m.mu held
// for writing.
func (m *Memory) queueLocked(channel string) (*memQueue, error) {
	c, err := m.lookup(channel)
	if err != nil {
		return nil, err
	}
	if c.reqs == nil {
		c.reqs = &memQueue{groups: make(map[string]*memGroup), enqueued: make(chan struct{})}
	}
	return c.reqs, nil
}

func (m *Memory) Enqueue(_ context.Context, channel string, req Request) (ID, error) {
	now := m.cfg.Now()
	if err := CheckRequest(req, now); err != nil {
		return ID{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	q, err := m.queueLocked(channel)
	if err != nil {
		return ID{}, err
	}
	q.dropExpired(now, false)
	if len(q.reqs) >= m.cfg.MaxRequests {
		q.trimAcked()
		q.dropExpired(now, true)
		if len(q.reqs) >= m.cfg.MaxRequests {
			return ID{}, ErrLimit
		}
	}
	id := ID{Ms: uint64(now.UnixMilli())}
	if id.Ms <= q.last.Ms {
		id = ID{Ms: q.last.Ms, Seq: q.last.Seq + 1}
	}
	q.last = id
	q.reqs = append(q.reqs, Request{
		ID:       id,
		ReplyTo:  req.ReplyTo,
		Deadline: time.UnixMilli(req.Deadline.UnixMilli()),
		Data:     slices.Clone(req.Data),
	})
	close(q.enqueued)
	q.enqueued = make(chan struct{})
	return id, nil
}

// dropExpired deletes expired requests from the head of the queue, or
// from all of it; as in Redis, they stay in the pending lists that hold
// them, and Reclaim drops them there.
func (q *memQueue) dropExpired(now time.Time, all bool) {
	kept := q.reqs[:0]
	for i, r := range q.reqs {
		if !expired(r.Deadline, now) {
			if !all {
				kept = append(kept, q.reqs[i:]...)
				break
			}
			kept = append(kept, r)
		}
	}
	clear(q.reqs[len(kept):])
	q.reqs = kept
}

// trimAcked deletes the requests every group is done with: those before
// the oldest request any group has pending or not yet delivered. With no
// group, nothing is done with.
func (q *memQueue) trimAcked() {
	if len(q.groups) == 0 {
		return
	}
	var floor ID
	first := true
	for _, g := range q.groups {
		f := g.lastDelivered.Next()
		for id := range g.pending {
			if id.Less(f) {
				f = id
			}
		}
		if first || f.Less(floor) {
			floor, first = f, false
		}
	}
	n := q.index(floor)
	clear(q.reqs[:n])
	q.reqs = q.reqs[n:]
}

// index returns the index of the first request with an ID at or after id.
func (q *memQueue) index(id ID) int {
	return sort.Search(len(q.reqs), func(i int) bool { return !q.reqs[i].ID.Less(id) })
}

func (m *Memory) Claim(ctx context.Context, channel, group, consumer string, n int, block time.Duration) ([]Request, error) {
	if err := checkWorker(group, consumer, n); err != nil {
		return nil, err
	}
	var timeout <-chan time.Time
	if block > 0 {
		t := time.NewTimer(block)
		defer t.Stop()
		timeout = t.C
	}
	for {
		m.mu.Lock()
		q, err := m.queueLocked(channel)
		if err != nil {
			m.mu.Unlock()
			return nil, err
		}
		out := q.claim(group, consumer, n, m.cfg.Now())
		// removed closes on Delete and Close, which must end the wait.
		wake, gone := q.enqueued, m.removed
		m.mu.Unlock()
		if len(out) > 0 || timeout == nil {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timeout:
			return nil, nil
		case <-wake:
		case <-gone:
		}
	}
}

// claim expects m.mu held for writing. Expired requests are delivered and
// acked at once, as the Redis backlog does, so they never reach a worker.
func (q *memQueue) claim(group, consumer string, n int, now time.Time) []Request {
	g := q.groups[group]
	if g == nil {
		g = &memGroup{pending: make(map[ID]*memPending)}
		q.groups[group] = g
	}
	var out []Request
	for _, r := range q.reqs[q.index(g.lastDelivered.Next()):] {
		if len(out) == n {
			break
		}
		g.lastDelivered = r.ID
		if expired(r.Deadline, now) {
			continue
		}
		g.pending[r.ID] = &memPending{consumer: consumer, delivered: now, deliveries: 1}
		r.Deliveries = 1
		out = append(out, r)
	}
	return out
}

// groupLocked finds channel's queue and its group, expecting m.mu held:
// a nil group with a nil error is a group never used, which has nothing
// pending.
func (m *Memory) groupLocked(channel, group string) (*memQueue, *memGroup, error) {
	q, err := m.queueLocked(channel)
	if err != nil {
		return nil, nil, err
	}
	return q, q.groups[group], nil
}

func (m *Memory) Ack(_ context.Context, channel, group string, ids ...ID) (int, error) {
	if err := checkGroup(group); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	q, g, err := m.groupLocked(channel, group)
	if g == nil {
		return 0, err
	}
	acked := 0
	for _, id := range ids {
		if _, ok := g.pending[id]; ok {
			delete(g.pending, id)
			acked++
		}
	}
	q.trimAcked()
	return acked, nil
}

func (m *Memory) Reclaim(_ context.Context, channel, group, consumer string, minIdle time.Duration, n int) ([]Request, error) {
	if err := checkWorker(group, consumer, n); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	q, g, err := m.groupLocked(channel, group)
	if g == nil {
		return nil, err
	}
	now := m.cfg.Now()
	ids := make([]ID, 0, len(g.pending))
	for id := range g.pending {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, ID.Compare)
	var out []Request
	for _, id := range ids {
		if len(out) == n {
			break
		}
		p := g.pending[id]
		if now.Sub(p.delivered) < minIdle {
			continue
		}
		i := q.index(id)
		if i == len(q.reqs) || q.reqs[i].ID != id {
			delete(g.pending, id) // deleted meanwhile, as XAUTOCLAIM drops it
			continue
		}
		if expired(q.reqs[i].Deadline, now) {
			delete(g.pending, id)
			continue
		}
		p.consumer, p.delivered = consumer, now
		p.deliveries++
		r := q.reqs[i]
		r.Deliveries = p.deliveries
		out = append(out, r)
	}
	q.trimAcked()
	return out, nil
}

// Release makes the requests idle for releasedIdle, as the Redis
// backlog's XCLAIM ... IDLE does, leaving their Deliveries alone: the
// next Reclaim counts the next delivery.
func (m *Memory) Release(_ context.Context, channel, group string, ids ...ID) (int, error) {
	if err := checkGroup(group); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	q, g, err := m.groupLocked(channel, group)
	if g == nil {
		return 0, err
	}
	idle := m.cfg.Now().Add(-releasedIdle)
	return q.claimPending(g, ids, "", func(p *memPending) {
		p.consumer, p.delivered = releasedConsumer, idle
	}), nil
}

// claimPending applies claim to the requests of ids pending in g, on
// consumer only unless it is "", as XCLAIM does: each ID counts once, and
// a pending request whose entry was deleted meanwhile is dropped instead.
// It returns how many it claimed.
func (q *memQueue) claimPending(g *memGroup, ids []ID, consumer string, claim func(*memPending)) int {
	n := 0
	for _, id := range uniqueIDs(ids) {
		p, ok := g.pending[id]
		if !ok || consumer != "" && p.consumer != consumer {
			continue
		}
		if i := q.index(id); i == len(q.reqs) || q.reqs[i].ID != id {
			delete(g.pending, id)
			continue
		}
		claim(p)
		n++
	}
	return n
}

// Touch marks the requests handed out now, as the Redis backlog's XCLAIM
// with no IDLE does, for those still on consumer only.
func (m *Memory) Touch(_ context.Context, channel, group, consumer string, ids ...ID) (int, error) {
	if err := checkGroup(group); err != nil {
		return 0, err
	}
	if err := checkConsumer(consumer); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	q, g, err := m.groupLocked(channel, group)
	if g == nil {
		return 0, err
	}
	now := m.cfg.Now()
	return q.claimPending(g, ids, consumer, func(p *memPending) { p.delivered = now }), nil
}

// Leave has no consumer to forget: the in-memory queue knows consumers only
// by the requests pending on them.
func (m *Memory) Leave(_ context.Context, channel, group, consumer string) (bool, error) {
	if err := checkWorker(group, consumer, 1); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, g, err := m.groupLocked(channel, group)
	if g == nil {
		return err == nil, err
	}
	for _, p := range g.pending {
		if p.consumer == consumer {
			return false, nil
		}
	}
	return true, nil
}
