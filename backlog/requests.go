package backlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Requests is the durable queue of requests per channel, shared by groups
// of workers: every group sees every request, and within a group each
// request goes to one worker at a time. It is the Redis Streams consumer
// group model (XREADGROUP, XACK, XAUTOCLAIM), which internal apps use
// directly on the Redis backlog; Memory implements the same semantics.
// Every implementation must pass backlogtest.RunRequests.
//
// A channel's queue lives and dies with the channel: Enqueue and Claim on a
// missing channel fail with ErrNotFound, and Delete drops the queue, its
// groups and their pending requests.
//
// Bounds: a request past its Deadline is never handed out (Claim and
// Reclaim ack it for the group instead), and Enqueue drops expired
// requests from the head of the queue, or from all of it when the queue is
// full; a request acked by every group is deleted; and a queue holds at
// most MaxRequests (see MemoryConfig, RedisConfig), past which Enqueue
// fails with ErrLimit.
//
// Implementations are safe for concurrent use.
type Requests interface {
	// Enqueue appends req to channel's request queue and returns its ID,
	// which is greater than every ID the queue had. req.ID and
	// req.Deliveries are ignored. ErrNotFound when the channel does not
	// exist, ErrLimit when its queue is full, ErrInvalid when req does
	// not pass CheckRequest.
	Enqueue(ctx context.Context, channel string, req Request) (ID, error)

	// Claim hands consumer up to n requests of channel never delivered to
	// group before, oldest first, waiting up to block for one (0: do not
	// wait); it returns no request, and no error, when block passes. The
	// group is created on first use, starting at the beginning of the
	// queue: it sees every request still held. A claimed request is
	// pending for group, on consumer, until acked or reclaimed. Claim
	// returns promptly with ctx.Err() when ctx is done; requests claimed
	// at that very moment stay pending, for Reclaim. ErrNotFound when the
	// channel does not exist or is deleted during the wait.
	Claim(ctx context.Context, channel, group, consumer string, n int, block time.Duration) ([]Request, error)

	// Ack marks requests done for group; unknown or already acked IDs are
	// ignored. It returns how many were pending. ErrNotFound when the
	// channel does not exist.
	Ack(ctx context.Context, channel, group string, ids ...ID) (int, error)

	// Reclaim hands consumer up to n requests pending for group for at
	// least minIdle since they were last handed out (their consumer
	// presumably died), oldest first, incrementing their Deliveries. An
	// unknown group has nothing pending. ErrNotFound when the channel
	// does not exist.
	Reclaim(ctx context.Context, channel, group, consumer string, minIdle time.Duration, n int) ([]Request, error)

	// Release makes requests pending for group (claimed by a consumer
	// that will not answer them, e.g. whose app disconnected) at once
	// reclaimable by any consumer's Reclaim, whatever its minIdle.
	// Unknown or acked IDs are ignored. It returns how many were
	// pending. ErrNotFound when the channel does not exist.
	Release(ctx context.Context, channel, group string, ids ...ID) (int, error)

	// Leave removes consumer from group when it holds no pending request,
	// so that the consumers of apps that come and go do not pile up in
	// the group (Redis keeps every consumer a group ever saw); it reports
	// whether consumer is gone. A consumer still holding requests stays:
	// Release them first. ErrNotFound when the channel does not exist.
	Leave(ctx context.Context, channel, group, consumer string) (bool, error)

	// Touch restarts the idle time of the requests pending for group on
	// consumer, so that a Reclaim elsewhere does not take them while
	// their consumer works on them; their Deliveries stay as they are.
	// Requests pending on another consumer, unknown or acked are left
	// alone. It returns how many were touched. ErrNotFound when the
	// channel does not exist.
	Touch(ctx context.Context, channel, group, consumer string, ids ...ID) (int, error)
}

// Request is one entry of a channel's request queue.
type Request struct {
	// ID is set by Enqueue; it has the form of a message ID but lives in
	// the queue's own sequence.
	ID ID
	// ReplyTo is the opaque reply address chosen by the gateway (a
	// session inbox): 1–256 bytes of visible ASCII.
	ReplyTo string
	// Deadline is when the requester stops waiting for the answer; the
	// request is not handed out after it. Millisecond precision.
	Deadline time.Time
	// Data is JSON, opaque to the queue.
	Data []byte
	// Deliveries is how many times the request was handed out: 1 on
	// Claim, one more on each Reclaim.
	Deliveries int64
}

// A released request is pending for consumer releasedConsumer, idle for
// releasedIdle: longer than any sensible Reclaim minIdle, so that the next
// Reclaim takes it. Redis's XCLAIM ... IDLE sets the idle time, not a
// flag, hence a duration rather than "at once".
const (
	releasedConsumer = "released"
	releasedIdle     = 30 * 24 * time.Hour
)

// uniqueIDs returns ids sorted without repeats, so that an ID named twice
// in one call counts once.
func uniqueIDs(ids []ID) []ID {
	if len(ids) < 2 {
		return ids
	}
	ids = slices.Clone(ids)
	slices.SortFunc(ids, ID.Compare)
	return slices.Compact(ids)
}

// ErrInvalid reports a malformed argument to a Requests method; the
// wrapping error says which.
var ErrInvalid = errors.New("backlog: invalid argument")

// Limits on request queue arguments.
const (
	MaxReplyToLen  = 256
	MaxConsumerLen = 64
)

// DefaultMaxRequests is the default bound on a channel's request queue.
const DefaultMaxRequests = 10_000

// CheckRequest reports why req cannot be enqueued at now: ReplyTo must be
// 1–256 bytes of visible ASCII (it may become part of a Redis key) and
// Deadline must lie after now.
func CheckRequest(req Request, now time.Time) error {
	if len(req.ReplyTo) == 0 || len(req.ReplyTo) > MaxReplyToLen {
		return fmt.Errorf("%w: reply address must be 1-%d bytes, not %d", ErrInvalid, MaxReplyToLen, len(req.ReplyTo))
	}
	for i := 0; i < len(req.ReplyTo); i++ {
		if c := req.ReplyTo[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: reply address must be visible ASCII", ErrInvalid)
		}
	}
	if !req.Deadline.After(now) {
		return fmt.Errorf("%w: deadline %v is not in the future", ErrInvalid, req.Deadline)
	}
	return nil
}

// checkGroup validates a group name.
func checkGroup(group string) error {
	if !validWorkerName(group) {
		return fmt.Errorf("%w: group name %q must be 1-%d bytes of [A-Za-z0-9._:-]", ErrInvalid, group, MaxConsumerLen)
	}
	return nil
}

// checkConsumer validates a consumer name.
func checkConsumer(consumer string) error {
	if !validWorkerName(consumer) {
		return fmt.Errorf("%w: consumer name %q must be 1-%d bytes of [A-Za-z0-9._:-]", ErrInvalid, consumer, MaxConsumerLen)
	}
	return nil
}

// checkWorker validates the group, consumer and count of a Claim or
// Reclaim.
func checkWorker(group, consumer string, n int) error {
	if err := checkGroup(group); err != nil {
		return err
	}
	if err := checkConsumer(consumer); err != nil {
		return err
	}
	if n < 1 {
		return fmt.Errorf("%w: count %d must be at least 1", ErrInvalid, n)
	}
	return nil
}

// validWorkerName: a group or consumer name is a short channel name, so
// that it is safe in Redis commands, logs and JSON alike.
func validWorkerName(name string) bool {
	return len(name) <= MaxConsumerLen && ValidChannel(name)
}

// expired reports whether a request with deadline is past it at now: a
// zero deadline (an entry a foreign writer added without one) counts as
// expired, as nobody can be waiting for it.
func expired(deadline, now time.Time) bool {
	return deadline.IsZero() || !deadline.After(now)
}
