package client

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
)

// Event is what a Subscription delivers: Message, Gap, NotResumed or
// Deleted.
type Event interface{ isEvent() }

// Message is a message of the channel, in ID order, once.
type Message struct {
	Channel string
	ID      string
	Data    json.RawMessage
}

// Gap reports messages after After lost while subscribed (trimmed before
// they could be delivered, or lost by the backlog); delivery goes on with
// the oldest message still held.
type Gap struct {
	Channel string
	After   string
}

// NotResumed reports that a subscribe with a position (Since, or the last
// ID delivered, after a reconnect) was answered resumed:false: messages
// after Since may have been lost; delivery goes on with the oldest message
// still held. Head is the newest ID the channel had.
type NotResumed struct {
	Channel string
	Since   string
	Head    string
}

// Deleted is the last event of a subscription whose channel was deleted.
type Deleted struct{ Channel string }

func (Message) isEvent()    {}
func (Gap) isEvent()        {}
func (NotResumed) isEvent() {}
func (Deleted) isEvent()    {}

// SubscribeOptions positions a subscription (docs/protocol.md,
// "subscribe"): Since an ID, or the Last messages; neither means live
// messages only. Buffer is the events held for the reader (default 256).
type SubscribeOptions struct {
	Since  string
	Last   int
	Buffer int
}

// Subscription is a channel's stream of events, resumed across
// reconnections after the last message delivered. Read Events promptly: a
// reader that falls behind stalls the connection until the gateway closes
// it as a slow consumer (4000); the client then resumes, losing nothing.
type Subscription struct {
	c       *Client
	channel string
	opts    SubscribeOptions
	events  chan Event
	done    chan struct{} // closed when the subscription ends
	endOnce sync.Once
	err     error // why it ended; set before done closes

	first     chan error // the first ack or refusal
	firstOnce sync.Once

	sendMu sync.Mutex // held while sending on events; events is closed under it

	// guarded by the client's mu
	sentOn *conn // the connection its subscribe was last sent on

	mu        sync.Mutex // guards the fields below; taken after the client's mu
	ackedOn   *conn      // the connection whose subscribe was acknowledged
	head      string     // the head of the first ack
	lastID    string     // the last message delivered
	sentSince string     // the since of the last subscribe sent
	retries   int
}

// Subscribe subscribes to channel and returns once the gateway has
// acknowledged it (or refused it: a *Error). Its events flow until Close,
// the channel's deletion, or the client's end.
func (c *Client) Subscribe(ctx context.Context, channel string, opts SubscribeOptions) (*Subscription, error) {
	if opts.Since != "" && opts.Last != 0 {
		return nil, &Error{Code: "bad_request", Message: "since and last together", Channel: channel}
	}
	if opts.Buffer <= 0 {
		opts.Buffer = defaultBuffer
	}
	s := &Subscription{
		c: c, channel: channel, opts: opts,
		events: make(chan Event, opts.Buffer),
		done:   make(chan struct{}),
		first:  make(chan error, 1),
	}
	c.mu.Lock()
	if c.final != nil {
		err := c.final
		c.mu.Unlock()
		return nil, err
	}
	if c.subs[channel] != nil {
		c.mu.Unlock()
		return nil, &Error{Code: "bad_request", Message: "already subscribed on this client", Channel: channel}
	}
	c.subs[channel] = s
	// While reconnecting, attach sends it with the others.
	var b []byte
	cn := c.cur
	if cn != nil {
		b = c.subscribeFrameLocked(cn, s)
	}
	c.mu.Unlock()
	if cn != nil {
		cn.sendNow(b) // a connection dying meanwhile: the next one sends it
	}
	select {
	case err := <-s.first:
		if err != nil {
			return nil, err
		}
		return s, nil
	case <-s.done:
		return nil, s.err
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
}

// Channel is the subscription's channel.
func (s *Subscription) Channel() string { return s.channel }

// Events delivers the subscription's events; it is closed when the
// subscription ends (see Err).
func (s *Subscription) Events() <-chan Event { return s.events }

// Err returns why Events was closed: nil after Close or a Deleted event,
// the client's final error, or a *Error (forbidden after a
// re-authentication, not_found for a channel deleted while reconnecting).
func (s *Subscription) Err() error {
	select {
	case <-s.done:
		if errors.Is(s.err, errClosedByUser) {
			return nil
		}
		return s.err
	default:
		return nil
	}
}

// LastID is the ID of the last message delivered on Events, or being
// delivered ("" before the first): the position a resubscription resumes
// after.
func (s *Subscription) LastID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastID
}

var errClosedByUser = errors.New("tslm: subscription closed")

// Close unsubscribes; Events is closed.
func (s *Subscription) Close() error {
	c := s.c
	c.mu.Lock()
	var cn *conn
	if c.subs[s.channel] == s {
		delete(c.subs, s.channel)
		if c.cur != nil && s.sentOn == c.cur {
			cn = c.cur
		}
	}
	c.mu.Unlock()
	s.end(errClosedByUser)
	if cn != nil {
		// No ref, so no answer is awaited; commands are handled in
		// order, so a later subscribe to the channel comes after it.
		b, _ := json.Marshal(subscribeFrame{Type: "unsubscribe", Channel: s.channel})
		select {
		case cn.out <- b:
		case <-cn.dead:
		case <-c.stopped:
		}
	}
	return nil
}

// acked reports the first answer to Subscribe.
func (s *Subscription) acked(err error) {
	s.firstOnce.Do(func() { s.first <- err })
}

// deliver sends ev to the reader, waiting for room; id, when set, becomes
// the position to resume after. False when cn died meanwhile (ev is then
// not delivered: the next connection replays it).
func (s *Subscription) deliver(cn *conn, ev Event, id string) bool {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	select {
	case <-s.done:
		return true
	default:
	}
	// The position moves before the send, so that a reader who received
	// the message sees it in LastID; it moves back if the connection dies
	// first, before run lets the next connection resubscribe.
	var prev string
	if id != "" {
		s.mu.Lock()
		prev, s.lastID = s.lastID, id
		s.retries = 0
		s.mu.Unlock()
	}
	select {
	case s.events <- ev:
		return true
	case <-s.done:
		return true
	case <-cn.dead:
		if id != "" {
			s.mu.Lock()
			s.lastID = prev
			s.mu.Unlock()
		}
		return false
	}
}

// end ends the subscription with err and closes Events. It must not be
// called with the client's mu or s.mu held.
func (s *Subscription) end(err error) {
	s.endOnce.Do(func() {
		s.err = err
		close(s.done)
		s.sendMu.Lock()
		close(s.events)
		s.sendMu.Unlock()
	})
}
