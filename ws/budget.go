package ws

import (
	"math"
	"sync/atomic"
)

// SendBudget bounds the bytes queued for the clients of every Server that
// shares it: each connection's SendQueueBytes bounds one client, and the
// budget bounds them all together, so that many clients that each stay
// within their own limit cannot together hold more memory than the process
// has. A frame that does not fit is treated as a full send queue, but the
// connection is closed with 4001 (CloseBudget) rather than 4000: the
// client may not be slow at all, the replica is short of memory. It is
// safe for concurrent use.
type SendBudget struct {
	limit int64
	used  atomic.Int64
}

// NewSendBudget returns a budget of limit bytes; limit <= 0 means no bound,
// the bytes still counted for Used.
func NewSendBudget(limit int64) *SendBudget {
	if limit <= 0 {
		limit = math.MaxInt64
	}
	return &SendBudget{limit: limit}
}

// Limit returns the budget's bound in bytes.
func (b *SendBudget) Limit() int64 { return b.limit }

// Used returns the bytes queued now, against the budget.
func (b *SendBudget) Used() int64 { return b.used.Load() }

// acquire takes n bytes, or none when they do not fit. The nil budget
// always has room. One atomic add on the hot path rather than a
// compare-and-swap loop that every connection's every frame would contend
// on: a concurrent acquire may see the budget briefly over its limit by
// the bytes being given back, and refuse, which only near the limit and
// only as a full queue would.
func (b *SendBudget) acquire(n int) bool {
	if b == nil || n == 0 {
		return true
	}
	if b.used.Add(int64(n)) > b.limit {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

// release gives back n bytes acquired earlier.
func (b *SendBudget) release(n int) {
	if b == nil || n == 0 {
		return
	}
	b.used.Add(-int64(n))
}
