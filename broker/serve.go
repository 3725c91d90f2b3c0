package broker

import (
	"context"
	"time"

	"github.com/tslm/tslm/backlog"
)

// ServeGroup is the consumer group of apps that serve requests through the
// gateway; Redis apps join it to share requests with them.
const ServeGroup = "tslm"

// RequestSink hands requests to a serving app. Transports implement it.
type RequestSink interface {
	// Serve queues r for the app, waiting for room until ctx is done.
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

// Serving is one app connection serving one channel. TODO(h14) [broker].
type Serving struct {
	hub *Hub
}

// Serve starts handing channel's requests to sink. TODO(h14).
func (h *Hub) Serve(ctx context.Context, channel string, sink RequestSink) (*Serving, error) {
	return nil, ErrUnavailable.With("requests are not implemented yet")
}

// Reply answers the request id this Serving holds, with data or refusal.
// TODO(h14).
func (s *Serving) Reply(ctx context.Context, id backlog.ID, data []byte, refusal *Refusal) error {
	return ErrRequestGone
}

// Close stops serving; requests held and not answered go to other servers.
func (s *Serving) Close() {}
