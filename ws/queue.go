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
)

// sendQueue holds the frames waiting for a connection's writer, bounded in
// frames and in bytes. Live messages are offered without waiting (a full
// queue means a slow consumer); replies and replays wait for room.
//
// A frame counts against the bounds from the moment it is queued until the
// writer reports it written (done), not until the writer takes it: the
// batch being written is memory the client pins too, and releasing it at
// take would let a slow client hold twice the limit.
type sendQueue struct {
	maxFrames, maxBytes int

	mu     sync.Mutex
	frames [][]byte // waiting for the writer
	held   int      // frames queued and not yet written, taken ones included
	bytes  int      // their bytes
	closed bool

	ready chan struct{} // cap 1: frames are waiting for the writer
	space chan struct{} // cap 1: the writer wrote frames
}

func newSendQueue(maxFrames, maxBytes int) *sendQueue {
	return &sendQueue{
		maxFrames: maxFrames,
		maxBytes:  maxBytes,
		ready:     make(chan struct{}, 1),
		space:     make(chan struct{}, 1),
	}
}

// fits expects q.mu held. A frame larger than maxBytes still goes into an
// empty queue, or it could never be sent.
func (q *sendQueue) fits(n int) bool {
	return q.held < q.maxFrames && (q.bytes+n <= q.maxBytes || q.held == 0)
}

// add expects q.mu held and frame to fit.
func (q *sendQueue) add(frame []byte) {
	q.frames = append(q.frames, frame)
	q.held++
	q.bytes += len(frame)
}

// offer queues frame unless the queue is full. A closed queue swallows it:
// the connection is going away and the client will resume.
func (q *sendQueue) offer(frame []byte) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return true
	}
	if !q.fits(len(frame)) {
		q.mu.Unlock()
		return false
	}
	q.add(frame)
	q.mu.Unlock()
	signal(q.ready)
	return true
}

// push queues frame, waiting while the queue is full. It gives up with
// errQueueStuck when the writer writes nothing for patience.
func (q *sendQueue) push(ctx context.Context, frame []byte, patience time.Duration) error {
	var timer *time.Timer
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return errQueueClosed
		}
		if q.fits(len(frame)) {
			q.add(frame)
			q.mu.Unlock()
			signal(q.ready)
			return nil
		}
		q.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(patience)
			defer timer.Stop()
		}
		select {
		case <-q.space:
			// Progress: the writer wrote frames, so patience restarts.
			timer.Reset(patience)
		case <-timer.C:
			return errQueueStuck
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// take moves every waiting frame into dst (reusing its array) and returns
// it. The frames still count against the bounds until done.
func (q *sendQueue) take(dst [][]byte) [][]byte {
	q.mu.Lock()
	dst = append(dst[:0], q.frames...)
	clear(q.frames)
	q.frames = q.frames[:0]
	q.mu.Unlock()
	return dst
}

// done releases frames taken earlier, of bytes in all, once written (or
// dropped), making room for more.
func (q *sendQueue) done(frames, bytes int) {
	q.mu.Lock()
	q.held -= frames
	q.bytes -= bytes
	q.mu.Unlock()
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
