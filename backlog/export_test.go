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
