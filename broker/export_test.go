package broker

import "time"

// BufferLen is how many live publications s holds while its replay runs.
func BufferLen(s *Subscription) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buffer.pubs)
}

// Overflowed reports whether s's live buffer overflowed since its replay
// last looked.
func Overflowed(s *Subscription) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buffer.overflowed
}

// EarlyReplies is how many replies s holds for requests not yet
// registered.
func EarlyReplies(s *Session) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.early)
}

// InboxOf is the inbox of a session token without owner.
func InboxOf(token string) string { return inboxName("", token) }

// InboxOfOwner is the inbox of owner's session token.
func InboxOfOwner(owner, token string) string { return inboxName(owner, token) }

// KeptPageBytes is what the channels' kept replay pages hold in all.
func (h *Hub) KeptPageBytes() int64 { return h.keptPageBytes.Load() }

// SetKeptPageTTL shortens how long a kept page lives, until the test ends.
func SetKeptPageTTL(t interface{ Cleanup(func()) }, d time.Duration) {
	old := keptPageTTL
	keptPageTTL = d
	t.Cleanup(func() { keptPageTTL = old })
}
