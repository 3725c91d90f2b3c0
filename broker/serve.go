package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tslm/tslm/backlog"
)

// ServeGroup is the consumer group of apps that serve requests through the
// gateway; Redis apps join it to share requests with them.
const ServeGroup = "tslm"

// RequestSink hands requests to a serving app. Transports implement it.
type RequestSink interface {
	// Serve queues r for the app, waiting for room until ctx is done. The
	// app may Reply before Serve returns.
	Serve(ctx context.Context, r ServedRequest) error
}

// ServedRequest is a request as its server sees it.
type ServedRequest struct {
	Channel    string
	ID         backlog.ID
	Data       []byte
	Deadline   time.Time
	Deliveries int64
}

// Serving is one app connection serving one channel: a consumer of the
// channel's request queue in ServeGroup, named after the replica, that
// holds at most Config.ServeInflight requests at a time, from Claim (new
// requests) or Reclaim (requests whose consumer went away), until the app
// replies, however long the app takes: it touches what it holds every
// Config.ReclaimAfter/3, so that only the requests of a Serving that
// stopped (its replica died) become idle enough to be reclaimed. Its loop
// runs on a goroutine of its own; Reply and Close may be called from any
// goroutine.
type Serving struct {
	hub      *Hub
	channel  string
	consumer string
	sink     RequestSink

	ctx    context.Context // ends the loop
	cancel context.CancelFunc
	done   chan struct{} // closed when the loop returns
	wake   chan struct{} // cap 1: room was freed, or a poke came

	mu        sync.Mutex
	held      map[backlog.ID]*heldRequest
	poked     bool               // reclaim at once: another Serving released requests
	interrupt context.CancelFunc // cancels the Claim in flight; nil when none
	unacked   []backlog.ID       // answered but not acked: the loop retries
	closed    bool
}

type heldRequest struct {
	req      backlog.Request
	replying bool // a Reply is appending its answer
}

// newReplicaID names a hub among the consumers of a request group.
func newReplicaID() string {
	b := make([]byte, 4)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// Serve starts handing channel's requests to sink, until Close or the
// hub's Close; ctx bounds only the start. Errors: ErrBadChannel,
// ErrReserved, ErrNotFound (no such channel), ErrUnavailable.
func (h *Hub) Serve(ctx context.Context, channel string, sink RequestSink) (*Serving, error) {
	if err := checkChannel(channel); err != nil {
		return nil, err
	}
	if err := h.requests(); err != nil {
		return nil, err
	}
	if _, err := h.log.Info(ctx, channel); err != nil {
		return nil, err
	}
	s := &Serving{
		hub: h, channel: channel, sink: sink,
		consumer: fmt.Sprintf("%s.%d", h.replica, h.servingSeq.Add(1)),
		done:     make(chan struct{}), wake: make(chan struct{}, 1),
		held: make(map[backlog.ID]*heldRequest),
	}
	s.ctx, s.cancel = context.WithCancel(h.ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.goLocked(func(context.Context) { s.run() }); err != nil {
		s.cancel()
		return nil, err
	}
	set := h.servings[channel]
	if set == nil {
		set = make(map[*Serving]struct{})
		h.servings[channel] = set
	}
	set[s] = struct{}{}
	h.stats.servings.Add(1)
	return s, nil
}

// touchChunk bounds the IDs of one Touch, and so the work of one script
// on Redis.
const touchChunk = 100

func (s *Serving) run() {
	defer close(s.done)
	// Apart from the loop, which may wait long in the sink's Serve (an
	// app slow to read) while the app works on what it holds.
	var touching sync.WaitGroup
	defer touching.Wait()
	touching.Go(s.keepHeld)
	cfg := &s.hub.cfg
	var backoff time.Duration
	// A new Serving first takes what consumers that went away left.
	nextReclaim := time.Now()
	for s.ctx.Err() == nil {
		s.retryAcks()
		room, poked := s.room()
		if room == 0 {
			// Full: wait for a Reply. A poke is kept for when there
			// is room.
			select {
			case <-s.ctx.Done():
			case <-s.wake:
			}
			continue
		}
		var reqs []backlog.Request
		var err error
		if poked || !time.Now().Before(nextReclaim) {
			nextReclaim = time.Now().Add(cfg.ServeBlock)
			reqs, err = s.hub.log.Reclaim(s.ctx, s.channel, ServeGroup, s.consumer, cfg.ReclaimAfter, room)
		} else {
			reqs, err = s.claim(room, time.Until(nextReclaim))
		}
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrCanceled) {
				continue // poked: reclaim now
			}
			backoff = nextBackoff(backoff)
			// An outage is logged once by the guarded backlog; a
			// deleted channel may come back.
			s.hub.cfg.Logger.Debug("serving: taking requests failed; retrying", "channel", s.channel, "err", err, "retry_in", backoff)
			select {
			case <-s.ctx.Done():
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if !s.hand(reqs) {
			return
		}
	}
}

// keepHeld touches the held requests every ReclaimAfter/3 until the
// Serving stops: the Reclaims of every serving loop, and XAUTOCLAIMs of
// Redis workers in ServeGroup, then leave them alone.
func (s *Serving) keepHeld() {
	t := time.NewTicker(max(s.hub.cfg.ReclaimAfter/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.touch()
		}
	}
}

// touch restarts the idle time of the requests held. A failure is
// retried at the next tick, which still comes well within ReclaimAfter.
func (s *Serving) touch() {
	s.mu.Lock()
	ids := make([]backlog.ID, 0, len(s.held))
	for id := range s.held {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	for chunk := range slices.Chunk(ids, touchChunk) {
		if _, err := s.hub.log.Touch(s.ctx, s.channel, ServeGroup, s.consumer, chunk...); err != nil {
			if s.ctx.Err() == nil {
				s.hub.cfg.Logger.Debug("serving: touching held requests failed; retrying at the next tick",
					"channel", s.channel, "requests", len(ids), "err", err)
			}
			return
		}
	}
}

// room returns how many more requests the Serving may hold, and whether it
// was poked since it last looked.
func (s *Serving) room() (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.hub.cfg.ServeInflight - len(s.held)
	poked := s.poked && n > 0
	if poked {
		s.poked = false
	}
	return max(n, 0), poked
}

// claim waits up to block for new requests; a poke cancels the wait, and
// then claim returns ErrCanceled. A request the backlog handed out at the
// very moment of a cancel stays pending for this consumer, and goes to a
// server after Config.ReclaimAfter.
func (s *Serving) claim(n int, block time.Duration) ([]backlog.Request, error) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	s.mu.Lock()
	if s.poked {
		s.mu.Unlock()
		return nil, nil
	}
	s.interrupt = cancel
	s.mu.Unlock()
	reqs, err := s.hub.log.Claim(ctx, s.channel, ServeGroup, s.consumer, n, block)
	s.mu.Lock()
	s.interrupt = nil
	s.mu.Unlock()
	return reqs, err
}

// poke makes the loop reclaim at once.
func (s *Serving) poke() {
	s.mu.Lock()
	s.poked = true
	if s.interrupt != nil {
		s.interrupt()
	}
	s.mu.Unlock()
	s.signal()
}

func (s *Serving) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// hand gives reqs to the sink, holding each until its Reply; it returns
// false when the sink failed (its connection is going away: Close
// releases what it held).
func (s *Serving) hand(reqs []backlog.Request) bool {
	if len(reqs) == 0 {
		return true
	}
	s.mu.Lock()
	for _, r := range reqs {
		s.held[r.ID] = &heldRequest{req: r}
	}
	s.mu.Unlock()
	for _, r := range reqs {
		switch {
		case !r.Deadline.After(time.Now()):
			// Expired while the sink took the ones before: nobody
			// waits for it.
			s.forget(r.ID)
			continue
		case !IsReserved(r.ReplyTo):
			// Not written by a session (a foreign writer's entry):
			// no session could read its reply.
			s.hub.cfg.Logger.Debug("serving: request without a session inbox to reply to skipped", "channel", s.channel, "id", r.ID.String())
			s.forget(r.ID)
			continue
		}
		err := s.sink.Serve(s.ctx, ServedRequest{
			Channel: s.channel, ID: r.ID, Data: r.Data, Deadline: r.Deadline, Deliveries: r.Deliveries,
		})
		if err != nil {
			return false
		}
	}
	return true
}

// forget acks a request the app never saw.
func (s *Serving) forget(id backlog.ID) {
	s.mu.Lock()
	delete(s.held, id)
	s.mu.Unlock()
	if _, err := s.hub.log.Ack(s.ctx, s.channel, ServeGroup, id); err != nil && s.ctx.Err() == nil {
		s.mu.Lock()
		s.unacked = append(s.unacked, id)
		s.mu.Unlock()
	}
}

// retryAcks acks the requests answered whose Ack failed.
func (s *Serving) retryAcks() {
	s.mu.Lock()
	ids := s.unacked
	s.unacked = nil
	s.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	if _, err := s.hub.log.Ack(s.ctx, s.channel, ServeGroup, ids...); err != nil && !errors.Is(err, ErrNotFound) {
		s.mu.Lock()
		s.unacked = append(s.unacked, ids...)
		s.mu.Unlock()
	}
}

// Reply answers the request id this Serving holds, with data (JSON) or
// refusal, exactly one of them: it appends the reply to the requester's
// inbox, then acks the request. Errors: ErrRequestGone when the Serving
// does not hold id (unknown, answered, expired, or released), or when the
// requester's inbox expired (the request is acked anyway); ErrBadRequest
// or ErrBadRefusal for a malformed reply; ErrUnavailable, after which the
// request is still held and the reply may be retried.
func (s *Serving) Reply(ctx context.Context, id backlog.ID, data []byte, refusal *Refusal) error {
	env, err := encodeReply(s.channel, id, data, refusal)
	if err != nil {
		return err
	}
	s.mu.Lock()
	h := s.held[id]
	if h == nil || h.replying {
		s.mu.Unlock()
		return ErrRequestGone
	}
	h.replying = true
	s.mu.Unlock()

	_, err = s.hub.log.Append(ctx, h.req.ReplyTo, env)
	gone := errors.Is(err, ErrNotFound) // the inbox expired
	if err != nil && !gone {
		s.mu.Lock()
		h.replying = false
		closed := s.closed
		s.mu.Unlock()
		if closed {
			// Close passed it by while this Reply ran.
			s.release([]backlog.ID{id})
		}
		return err
	}
	_, ackErr := s.hub.log.Ack(ctx, s.channel, ServeGroup, id)
	s.mu.Lock()
	delete(s.held, id)
	if ackErr != nil && !errors.Is(ackErr, ErrNotFound) {
		// Answered all the same: acking is retried, and a server that
		// reclaims it meanwhile answers twice, which sessions drop.
		s.unacked = append(s.unacked, id)
	}
	s.mu.Unlock()
	s.signal()
	if gone {
		return ErrRequestGone
	}
	return nil
}

// Close stops serving: requests held and not answered are released to
// other servers, and the other Servings of the channel on this replica
// are poked to take them at once. Safe to call more than once.
// It waits for the serving loop, so it must not be called from within the
// sink's Serve.
func (s *Serving) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	<-s.done

	s.mu.Lock()
	var ids []backlog.ID
	for id, h := range s.held {
		if !h.replying {
			ids = append(ids, id)
			delete(s.held, id)
		}
	}
	unacked := s.unacked
	s.unacked = nil
	s.mu.Unlock()

	h := s.hub
	if len(unacked) > 0 {
		if _, err := h.log.Ack(context.Background(), s.channel, ServeGroup, unacked...); err != nil && !errors.Is(err, ErrNotFound) {
			h.cfg.Logger.Warn("serving: acking answered requests failed; they may be served again", "channel", s.channel, "err", err)
		}
	}
	released := s.release(ids)
	s.leave()

	h.mu.Lock()
	set := h.servings[s.channel]
	delete(set, s)
	if len(set) == 0 {
		delete(h.servings, s.channel)
	}
	others := make([]*Serving, 0, len(set))
	for o := range set {
		others = append(others, o)
	}
	h.stats.servings.Add(-1)
	h.mu.Unlock()
	if released {
		for _, o := range others {
			o.poke()
		}
	}
}

// leave takes the Serving's consumer out of the group, where Redis would
// otherwise keep it for good: every app connection that serves makes a
// new one. One still holding requests (a reply in flight) stays.
func (s *Serving) leave() {
	if _, err := s.hub.log.Leave(context.Background(), s.channel, ServeGroup, s.consumer); err != nil && !errors.Is(err, ErrNotFound) {
		s.hub.cfg.Logger.Debug("serving: leaving the consumer group failed", "channel", s.channel, "err", err)
	}
}

// release hands ids back to the group, reporting whether any were.
func (s *Serving) release(ids []backlog.ID) bool {
	if len(ids) == 0 {
		return false
	}
	if _, err := s.hub.log.Release(context.Background(), s.channel, ServeGroup, ids...); err != nil {
		if !errors.Is(err, ErrNotFound) {
			s.hub.cfg.Logger.Warn("serving: releasing held requests failed; other servers take them after the reclaim delay",
				"channel", s.channel, "requests", len(ids), "err", err)
		}
		return false
	}
	return true
}
