package backlog

// SetAfterXRead installs a hook that runs in every Read between the XREAD
// wake-up and the proving read, so tests can change the stream in between.
// Call it before any Read.
func SetAfterXRead(r *Redis, f func()) { r.afterXRead = f }

// MemoryHeld returns how many channels m holds, expired ones included.
func MemoryHeld(m *Memory) int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.channels)
}

// MemoryWaiting returns how many blocked Read cursors are registered on
// channel, so tests can check that Reads leave no registration behind.
func MemoryWaiting(m *Memory, channel string) int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	m.wmu.Lock()
	defer m.wmu.Unlock()
	c, ok := m.channels[channel]
	if !ok || c.waiters.first.w == nil {
		return 0
	}
	return 1 + len(c.waiters.more)
}
