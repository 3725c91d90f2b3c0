package broker

import (
	"context"
	"strings"
	"time"

	"github.com/tslm/tslm/backlog"
)

// InboxPrefix starts the name of every session inbox: a hidden channel of
// the log that holds one session's replies. Names with it are reserved.
const InboxPrefix = "_inbox."

// IsReserved reports whether channel is a session inbox, which clients may
// not touch by name.
func IsReserved(channel string) bool { return strings.HasPrefix(channel, InboxPrefix) }

// ReplySink receives a session's answers. Transports implement it.
type ReplySink interface {
	// Answer queues a without waiting. It returns false when the queue is
	// full: the transport then closes the connection as a slow consumer
	// and the client resumes its session elsewhere.
	Answer(a Answer) bool
}

// Answer is the one outcome of a request.
type Answer struct {
	// Tag is what the request was sent or declared with (the ref).
	Tag     string
	Channel string
	// ID is the request's ID.
	ID backlog.ID
	// Data is the reply's JSON; nil with Refusal or Timeout.
	Data []byte
	// Refusal is set when the responder refused the request.
	Refusal *Refusal
	// Timeout is set when no reply came before the deadline.
	Timeout bool
}

// Refusal is a responder's reasoned "no", passed to the requester as is.
type Refusal struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Pending is a request a resuming client still awaits.
type Pending struct {
	Channel string
	ID      backlog.ID
	Tag     string
	// Timeout is how much longer to wait; 0 means Config.RequestTimeout.
	Timeout time.Duration
}

// Session is a requester's session: its inbox, the requests it awaits and
// their deadlines. TODO(h14) [broker].
type Session struct {
	hub  *Hub
	sink ReplySink
}

// NewSession starts a session for sink. It does no I/O: the inbox is made
// by the first Request.
func (h *Hub) NewSession(sink ReplySink) *Session {
	return &Session{hub: h, sink: sink}
}

// ResumeSession reopens the session of token, awaiting pending. TODO(h14).
func (h *Hub) ResumeSession(ctx context.Context, token string, pending []Pending, sink ReplySink) (*Session, error) {
	return nil, ErrUnavailable.With("requests are not implemented yet")
}

// Token is the session's token: "" until a Request succeeded or the
// session was resumed.
func (s *Session) Token() string { return "" }

// Request enqueues data for channel's responders; the answer goes to the
// sink with tag. acked is called with the request's ID and the session
// token before any answer for it can reach the sink. TODO(h14).
func (s *Session) Request(ctx context.Context, channel string, data []byte, timeout time.Duration, tag string, acked func(id backlog.ID, token string)) error {
	return ErrUnavailable.With("requests are not implemented yet")
}

// Close ends the session on this connection; its inbox is left to expire.
func (s *Session) Close() {}
