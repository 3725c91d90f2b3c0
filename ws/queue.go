package ws

import (
	"context"
	"errors"
	"sync"
	"time"
)

var (
	errQueueClosed = errors.New("send queue closed")
	errQueueStuck  = errors.New("send queue made no progress")
	errQueueFull   = errors.New("send queue full")
	errBudget      = errors.New("send budget exhausted")
)

// queued is a frame waiting for the writer. published is the millisecond
// time of a live message's ID (when Redis stored it), 0 for every other
// frame: the writer times the message from there to its write.
type queued struct {
	frame     []byte
	published int64
}

// sendQueue holds the frames waiting for a connection's writer, bounded in
// frames and in bytes. Live messages are offered without waiting (a full
// queue means a slow consumer); replies and replays wait for room.
//
// A frame counts against the bounds from the moment it is queued until the
// writer reports it written (done), not until the writer takes it: the
// batch being written is memory the client pins too, and releasing it at
// take would let a slow client hold twice the limit.
//
// The same bytes count against budget, shared with every other queue: taken
// with the frame's place in the queue, given back by done or, for whatever
// is still held when the connection ends, by release.
type sendQueue struct {
	maxFrames, maxBytes int
	budget              *SendBudget // nil: no shared bound

	mu     sync.Mutex
	frames []queued // waiting for the writer
	held   int      // frames queued and not yet written, taken ones included
	bytes  int      // their bytes
	closed bool

	ready chan struct{} // cap 1: frames are waiting for the writer
	space chan struct{} // cap 1: the writer wrote frames
	// notify, when set, is called instead of signalling ready
	// (newNotifyingQueue).
	notify func()
}

// newNotifyingQueue is a sendQueue that calls notify where newSendQueue's
// signals ready, and has no ready channel: a connection's writer runs only
// when kicked, and most connections are idle.
func newNotifyingQueue(maxFrames, maxBytes int, budget *SendBudget, notify func()) *sendQueue {
	return &sendQueue{
		maxFrames: maxFrames,
		maxBytes:  maxBytes,
		budget:    budget,
		space:     make(chan struct{}, 1),
		notify:    notify,
	}
}

func newSendQueue(maxFrames, maxBytes int, budget *SendBudget) *sendQueue {
	return &sendQueue{
		maxFrames: maxFrames,
		maxBytes:  maxBytes,
		budget:    budget,
		ready:     make(chan struct{}, 1),
		space:     make(chan struct{}, 1),
	}
}

// add queues frame if it fits, or says why not: errQueueFull, or
// errBudget when only the shared budget has no room; wake says the queue
// was empty, so the writer needs a signal. Frames added behind others need
// none: the writer, signalled for the first, takes them all together, and
// a signal per frame would wake it once more per batch to find nothing.
// It expects q.mu held.
// A frame larger than maxBytes still goes into an empty queue, or it could
// never be sent; the budget makes no such exception, as it bounds memory.
func (q *sendQueue) add(it queued) (wake bool, err error) {
	n := len(it.frame)
	if q.held >= q.maxFrames || (q.bytes+n > q.maxBytes && q.held > 0) {
		return false, errQueueFull
	}
	if !q.budget.acquire(n) {
		return false, errBudget
	}
	wake = len(q.frames) == 0
	q.frames = append(q.frames, it)
	q.held++
	q.bytes += n
	return wake, nil
}

// offer queues frame unless the queue is full (errQueueFull) or the budget
// is exhausted (errBudget). A closed queue swallows it: the connection is
// going away and the client will resume.
func (q *sendQueue) offer(frame []byte) error { return q.offerItem(queued{frame: frame}) }

// offerLive is offer for a live message published at ms (its ID's time).
func (q *sendQueue) offerLive(frame []byte, ms uint64) error {
	return q.offerItem(queued{frame: frame, published: int64(ms)})
}

func (q *sendQueue) offerItem(it queued) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	wake, err := q.add(it)
	q.mu.Unlock()
	if wake {
		q.wakeWriter()
	}
	return err
}

func (q *sendQueue) wakeWriter() {
	if q.notify != nil {
		q.notify()
	} else {
		signal(q.ready)
	}
}

// push queues frame, waiting while the queue is full. It gives up with
// errQueueStuck when the writer writes nothing for patience. A frame the
// budget has no room for waits likewise, since what this queue's writer
// writes gives budget back, but it gives up with errBudget, at once when
// the queue holds nothing: then only other connections could make room,
// and a replica short of memory should shed load, not wait for it.
func (q *sendQueue) push(ctx context.Context, frame []byte, patience time.Duration) error {
	var timer *time.Timer
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return errQueueClosed
		}
		wake, err := q.add(queued{frame: frame})
		empty := q.held == 0
		q.mu.Unlock()
		switch {
		case err == nil:
			if wake {
				q.wakeWriter()
			}
			return nil
		case errors.Is(err, errBudget) && empty:
			return errBudget
		}
		if timer == nil {
			timer = time.NewTimer(patience)
			defer timer.Stop()
		}
		select {
		case <-q.space:
			// Progress: the writer wrote frames, so patience restarts.
			timer.Reset(patience)
		case <-timer.C:
			if errors.Is(err, errBudget) {
				return errBudget
			}
			return errQueueStuck
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// take moves every waiting frame into dst (reusing its array) and returns
// it. The frames still count against the bounds until done.
func (q *sendQueue) take(dst []queued) []queued {
	q.mu.Lock()
	dst = append(dst[:0], q.frames...)
	q.frames = recycled(q.frames)
	q.mu.Unlock()
	return dst
}

// keptFrames is the most frames a drained queue, or an event stream's
// batch once written, keeps room for. A replay or a burst grows both to
// its length; kept, that room would stay with every connection that ever
// resumed (a reconnect storm of 10 000 clients each replaying 100 messages
// left about 7 KB per connection, docs/benchmarks.md, and 16 frames'
// room kept still 1 KB), while an idle connection needs none and a busy
// one grows it again cheaply.
const keptFrames = 4

// keptBatchFrames is keptFrames for the batches of pooled writer
// goroutines (writers.go): few, and busy, so they keep more.
const keptBatchFrames = 256

// recycled empties a slice of frames for reuse, dropping its references
// to the frames, and its array when that outgrew keptFrames.
func recycled(frames []queued) []queued { return recycledTo(frames, keptFrames) }

// recycledTo is recycled with room for keep frames.
func recycledTo(frames []queued, keep int) []queued {
	if cap(frames) > keep {
		return nil
	}
	clear(frames)
	return frames[:0]
}

// done releases frames taken earlier, of bytes in all, once written (or
// dropped), making room for more.
func (q *sendQueue) done(frames, bytes int) {
	q.mu.Lock()
	q.held -= frames
	q.bytes -= bytes
	q.mu.Unlock()
	q.budget.release(bytes)
	signal(q.space)
}

// fill is how full the queue is: the larger of its frame and byte shares
// of the bounds, at most 1.
func (q *sendQueue) fill() float64 {
	q.mu.Lock()
	held, bytes := q.held, q.bytes
	q.mu.Unlock()
	return min(max(float64(held)/float64(q.maxFrames), float64(bytes)/float64(q.maxBytes)), 1)
}

// release closes the queue and gives back to the budget every byte it
// still holds, waiting or taken. The connection calls it once, at its end,
// after its writer has returned: no done can follow, and no add, as the
// queue is closed.
func (q *sendQueue) release() {
	q.mu.Lock()
	q.closed = true
	bytes := q.bytes
	clear(q.frames)
	q.frames, q.held, q.bytes = nil, 0, 0
	q.mu.Unlock()
	q.budget.release(bytes)
	signal(q.space)
}

// close makes later offers and pushes no-ops and wakes waiting pushers.
func (q *sendQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	signal(q.space)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
