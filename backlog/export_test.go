package backlog

// MemoryHeld returns how many channels m holds, expired ones included.
func MemoryHeld(m *Memory) int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.channels)
}

// MemoryWaiting returns how many follows are registered on channel, so
// tests can check that followers leave no registration behind.
func MemoryWaiting(m *Memory, channel string) int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	m.wmu.Lock()
	defer m.wmu.Unlock()
	c, ok := m.channels[channel]
	if !ok || c.follows.first == nil {
		return 0
	}
	return 1 + len(c.follows.more)
}

// StreamKey is the stream key of channel in r, for tests that XADD as a
// publisher would.
func StreamKey(r *Redis, channel string) string { return r.streamKey(channel) }

// SlotOf is the Cluster hash slot the follower computes for a channel.
func SlotOf(channel string) int { return slotOf(channel) }

// Unbatched makes r send every append on its own, as before the batcher,
// for comparisons.
func Unbatched(r *Redis) { r.unbatched = true }

// AfterSubscribe makes every Redis follower run h right after it writes
// an SSUBSCRIBE, until the returned func.
func AfterSubscribe(h func()) (undo func()) {
	afterSubscribe.Store(&h)
	return func() { afterSubscribe.Store(nil) }
}

// LimitNoteBytes lowers the notification data a Redis follower holds for
// Next, until the returned func.
func LimitNoteBytes(n int64) (undo func()) {
	noteBytesLimit.Store(n)
	return func() { noteBytesLimit.Store(maxNoteBytes) }
}
