package backlog

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// MemoryConfig configures Memory. Zero values mean the documented defaults.
type MemoryConfig struct {
	// MaxChannels bounds how many channels may exist; 0 means 100 000.
	// Creating one more fails with ErrLimit.
	MaxChannels int
	// MaxIdempotencyKeys bounds the idempotency keys remembered across
	// all channels; 0 means 100 000. Past it the oldest key is forgotten
	// before its window ends, and a retry with it appends again.
	MaxIdempotencyKeys int
	// MaxRequests bounds each channel's request queue (see Requests);
	// 0 means DefaultMaxRequests. Enqueue past it fails with ErrLimit.
	MaxRequests int
	// Now is the clock, injectable for tests; nil means time.Now.
	Now func() time.Time
}

// Memory is the embedded backlog: a single node's channels held in memory,
// lost when the process exits. Its semantics are those of the Redis backlog.
type Memory struct {
	cfg MemoryConfig

	mu       sync.RWMutex
	channels map[string]*memChannel
	// removed is closed (and replaced) whenever a channel goes, deleted or
	// expired, and on Close, so that blocked Claims notice; guarded by mu.
	// Followers are woken per channel instead (memChannel.follows): a
	// broadcast on every append would cost every follower a scan of all
	// its channels, O(channels followed) per message.
	removed chan struct{}
	// done is closed by Close, ending every follower's Next.
	done   chan struct{}
	closed bool
	// wmu guards every memChannel's follows and every memFollower's
	// entries and marks. It is not mu so that Follow registers under the
	// read lock; whoever takes both takes mu first.
	wmu sync.Mutex
	// idemQueue holds every remembered idempotency key, oldest first, so
	// that expired keys and keys past MaxIdempotencyKeys are forgotten in
	// order; guarded by mu.
	idemQueue []*idemEntry
	// floors holds the last IDs of deleted channels, so that a channel
	// created again under the same name goes on after them: a client
	// holding an old ID must never find it held again. Only IDs of the
	// current millisecond or later matter, as new IDs are never below
	// the clock; older ones are pruned. Guarded by mu.
	floors map[string]ID
}

// idemEntry is a remembered idempotency key.
type idemEntry struct {
	ch      *memChannel
	key     string
	id      ID
	expires time.Time
}

type memChannel struct {
	cfg     ChannelConfig
	created time.Time
	msgs    []Message // oldest first
	last    ID        // newest ID ever appended
	// trimmed is set once any message was removed, like Redis's
	// entries-added > length.
	trimmed bool
	idem    map[string]*idemEntry // live idempotency keys; nil until used
	floor   ID                    // new IDs go after it; see Memory.floors
	reqs    *memQueue             // the request queue; nil until used
	// expires is when the channel goes, with cfg.Expiry; zero without.
	// An expired channel stays in the map until TrimExpired, a Create of
	// its name or a Delete drops it, but every lookup ignores it.
	expires time.Time
	// follows are the followers' entries on the channel; guarded by
	// Memory.wmu.
	follows followList
}

// touch restarts the expiry countdown, if the channel has one.
func (c *memChannel) touch(now time.Time) {
	if c.cfg.Expiry > 0 {
		c.expires = now.Add(c.cfg.Expiry)
	}
}

// expiredAt reports whether the channel's expiry passed at now.
func (c *memChannel) expiredAt(now time.Time) bool {
	return !c.expires.IsZero() && !now.Before(c.expires)
}

var _ Log = (*Memory)(nil)

// NewMemory returns an empty in-memory backlog.
func NewMemory(cfg MemoryConfig) *Memory {
	cfg = cfg.WithDefaults()
	return &Memory{
		cfg:      cfg,
		channels: make(map[string]*memChannel),
		removed:  make(chan struct{}),
		done:     make(chan struct{}),
	}
}

func (m *Memory) Create(_ context.Context, channel string, cfg ChannelConfig) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false, ErrClosed
	}
	now := m.cfg.Now()
	if c, ok := m.channels[channel]; ok {
		if !c.expiredAt(now) {
			c.touch(now)
			return false, nil
		}
		m.removeLocked(channel, c, now)
	}
	if len(m.channels) >= m.cfg.MaxChannels {
		// Expired channels linger until swept: they must not count.
		m.dropExpiredLocked(now)
		if len(m.channels) >= m.cfg.MaxChannels {
			return false, ErrLimit
		}
	}
	c := &memChannel{cfg: cfg, created: now}
	if f, ok := m.floors[channel]; ok {
		c.floor = f
		delete(m.floors, channel)
	}
	c.touch(now)
	m.channels[channel] = c
	return true, nil
}

func (m *Memory) Info(_ context.Context, channel string) (Info, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c, err := m.lookup(channel)
	if err != nil {
		return Info{}, err
	}
	info := Info{Config: c.cfg, Created: c.created, Length: int64(len(c.msgs)), LastID: c.last}
	if len(c.msgs) > 0 {
		info.FirstID = c.msgs[0].ID
	}
	return info, nil
}

// lookup expects m.mu held. An expired channel is not found; as lookup
// may run under the read lock, it is left for writers to drop.
func (m *Memory) lookup(channel string) (*memChannel, error) {
	if m.closed {
		return nil, ErrClosed
	}
	c, ok := m.channels[channel]
	if !ok || c.expiredAt(m.cfg.Now()) {
		return nil, ErrNotFound
	}
	return c, nil
}

func (m *Memory) Append(_ context.Context, channel string, data []byte) (ID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.lookup(channel)
	if err != nil {
		return ID{}, err
	}
	return m.appendLocked(c, data), nil
}

// appendLocked expects m.mu held for writing.
func (m *Memory) appendLocked(c *memChannel, data []byte) ID {
	// The same rule as Redis: the millisecond clock, never going backwards,
	// with a sequence number within one millisecond.
	now := m.cfg.Now()
	c.touch(now)
	last := c.newest()
	id := ID{Ms: uint64(now.UnixMilli())}
	if id.Ms <= last.Ms {
		id = ID{Ms: last.Ms, Seq: last.Seq + 1}
	}
	c.last = id
	c.msgs = append(c.msgs, Message{ID: id, Data: data})
	if c.cfg.MaxLen > 0 && int64(len(c.msgs)) > c.cfg.MaxLen {
		c.removeFirst(len(c.msgs) - int(c.cfg.MaxLen))
	}
	m.notifyLocked(c)
	return id
}

func (m *Memory) AppendIdempotent(_ context.Context, channel string, data []byte, idem Idempotency) (ID, bool, error) {
	if !ValidIdempotencyKey(idem.Key) || idem.Window <= 0 {
		return ID{}, false, fmt.Errorf("backlog: invalid idempotency key %q or window %v", idem.Key, idem.Window)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.lookup(channel)
	if err != nil {
		return ID{}, false, err
	}
	now := m.cfg.Now()
	m.forgetExpiredLocked(now)
	if e, ok := c.idem[idem.Key]; ok && now.Before(e.expires) {
		return e.id, true, nil
	}
	id := m.appendLocked(c, data)
	e := &idemEntry{ch: c, key: idem.Key, id: id, expires: now.Add(idem.Window)}
	if c.idem == nil {
		c.idem = make(map[string]*idemEntry)
	}
	c.idem[idem.Key] = e
	m.idemQueue = append(m.idemQueue, e)
	if len(m.idemQueue) > m.cfg.MaxIdempotencyKeys {
		m.forgetOldestLocked()
	}
	return id, false, nil
}

// forgetExpiredLocked drops the expired keys at the head of the queue.
// With one window for every key, as the broker uses, the queue is in
// expiry order and this drops them all; a key with a longer window ahead
// only delays the others, which are still ignored once expired.
func (m *Memory) forgetExpiredLocked(now time.Time) {
	for len(m.idemQueue) > 0 && !now.Before(m.idemQueue[0].expires) {
		m.forgetOldestLocked()
	}
}

func (m *Memory) forgetOldestLocked() {
	e := m.idemQueue[0]
	m.idemQueue[0] = nil
	m.idemQueue = m.idemQueue[1:]
	// The key may have been remembered again since, by a newer entry.
	if e.ch.idem[e.key] == e {
		delete(e.ch.idem, e.key)
	}
}

// Delete removes the channel with its request queue and wakes blocked
// followers, which report it deleted, and Claims, which return ErrNotFound. Its idempotency keys leave the queue as they expire; until then
// they count towards MaxIdempotencyKeys.
func (m *Memory) Delete(_ context.Context, channel string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.lookup(channel)
	if err != nil {
		return err
	}
	m.removeLocked(channel, c, m.cfg.Now())
	return nil
}

// removeLocked drops channel c, deleted or expired, keeping its floor,
// and wakes its followers and blocked Claims; it expects m.mu held for writing.
func (m *Memory) removeLocked(channel string, c *memChannel, at time.Time) {
	delete(m.channels, channel)
	now := uint64(at.UnixMilli())
	for name, f := range m.floors {
		if f.Ms < now {
			delete(m.floors, name)
		}
	}
	last := c.newest()
	if last.Ms >= now {
		if m.floors == nil {
			m.floors = make(map[string]ID)
		}
		m.floors[channel] = last
	}
	m.notifyLocked(c)
	close(m.removed)
	m.removed = make(chan struct{})
}

// dropExpiredLocked removes every expired channel; it expects m.mu held
// for writing.
func (m *Memory) dropExpiredLocked(now time.Time) {
	for name, c := range m.channels {
		if c.expiredAt(now) {
			m.removeLocked(name, c, now)
		}
	}
}

// List walks the names in order; the cursor is the last name returned.
func (m *Memory) List(_ context.Context, prefix, cursor string, limit int) ([]string, string, error) {
	if cursor != "" && !ValidChannel(cursor) {
		return nil, "", ErrBadCursor
	}
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return nil, "", ErrClosed
	}
	var names []string
	now := m.cfg.Now()
	for name, c := range m.channels {
		if name > cursor && strings.HasPrefix(name, prefix) && !c.expiredAt(now) {
			names = append(names, name)
		}
	}
	m.mu.RUnlock()
	slices.Sort(names)
	if limit <= 0 || len(names) <= limit {
		return names, "", nil
	}
	names = names[:limit:limit]
	return names, names[limit-1], nil
}

// newest is the greatest ID the name ever had: its newest message's, or a
// deleted predecessor's (floor), after which new IDs go.
func (c *memChannel) newest() ID {
	if c.last.Less(c.floor) {
		return c.floor
	}
	return c.last
}

// removeFirst drops the n oldest messages, clearing them so that the
// backing array does not pin their payloads.
func (c *memChannel) removeFirst(n int) {
	if n <= 0 {
		return
	}
	c.trimmed = true
	clear(c.msgs[:n])
	c.msgs = c.msgs[n:]
}

// indexAfter returns the index of the first message with an ID after id.
func (c *memChannel) indexAfter(id ID) int {
	return sort.Search(len(c.msgs), func(i int) bool { return id.Less(c.msgs[i].ID) })
}

// holds reports whether the message id is still held.
func (c *memChannel) holds(id ID) bool {
	i := sort.Search(len(c.msgs), func(i int) bool { return !c.msgs[i].ID.Less(id) })
	return i < len(c.msgs) && c.msgs[i].ID == id
}

// provesAfter reports whether nothing after id was lost, by the proofs
// the Redis backlog can make (docs/redis.md, "Resume proof"): id is still
// held, or id is Zero and nothing was ever removed.
func (c *memChannel) provesAfter(id ID) bool {
	return c.holds(id) || (id.IsZero() && !c.trimmed)
}

func (m *Memory) Range(_ context.Context, channel string, after ID, limit int) (Page, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c, err := m.lookup(channel)
	if err != nil {
		return Page{}, err
	}
	page := Page{Continuous: c.provesAfter(after)}
	page.Messages = copyUpTo(c.msgs[c.indexAfter(after):], limit)
	return page, nil
}

func (m *Memory) Before(_ context.Context, channel string, id ID) (ID, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c, err := m.lookup(channel)
	if err != nil {
		return ID{}, false, err
	}
	i := sort.Search(len(c.msgs), func(i int) bool { return !c.msgs[i].ID.Less(id) })
	if i == len(c.msgs) || c.msgs[i].ID != id {
		return ID{}, false, nil
	}
	if i == 0 {
		return ID{}, true, nil
	}
	return c.msgs[i-1].ID, true, nil
}

func (m *Memory) TailStart(_ context.Context, channel string, n int) (ID, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c, err := m.lookup(channel)
	if err != nil || n <= 0 || len(c.msgs) == 0 {
		return ID{}, err
	}
	return c.msgs[max(len(c.msgs)-n, 0)].ID, nil
}

// copyUpTo copies so that callers never share the channel's slice; the
// payloads themselves are immutable and shared.
func copyUpTo(msgs []Message, limit int) []Message {
	if limit > 0 && len(msgs) > limit {
		msgs = msgs[:limit]
	}
	if len(msgs) == 0 {
		return nil
	}
	return append([]Message(nil), msgs...)
}

func (m *Memory) TrimExpired(_ context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	now := m.cfg.Now()
	m.dropExpiredLocked(now)
	for _, c := range m.channels {
		if c.cfg.Retention <= 0 {
			continue
		}
		minID := ID{Ms: uint64(max(now.Add(-c.cfg.Retention).UnixMilli(), 0))}
		n := sort.Search(len(c.msgs), func(i int) bool { return !c.msgs[i].ID.Less(minID) })
		// The newest message stays, however old: a client that saw it can
		// then always prove it resumes right after it.
		c.removeFirst(min(n, len(c.msgs)-1))
	}
	return nil
}

// Close empties the backlog and ends followers' Next and blocked Claims with ErrClosed.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		m.channels = nil
		close(m.removed)
		close(m.done)
	}
	return nil
}
