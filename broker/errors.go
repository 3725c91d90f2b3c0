package broker

import (
	"errors"

	"github.com/tslm/tslm/backlog"
)

// Errors returned by the Hub; transports map each to a protocol error code.
// Those wrapped with detail (fmt.Errorf("%w: ...")) carry a message fit for
// the client.
var (
	ErrBadChannel  = errors.New("channel names are 1-128 bytes of A-Z a-z 0-9 . _ : -")
	ErrBadConfig   = errors.New("invalid channel configuration")
	ErrNotFound    = backlog.ErrNotFound
	ErrUnavailable = backlog.ErrUnavailable
	ErrLimit       = errors.New("limit exceeded")
	ErrClosed      = errors.New("broker closed")
	ErrBadKey      = errors.New("idempotency keys are 1-128 bytes of visible ASCII (0x21-0x7E)")
	ErrBadPrefix   = errors.New("a channel prefix is at most 128 bytes of A-Z a-z 0-9 . _ : -")
	ErrBadCursor   = backlog.ErrBadCursor
	// ErrUnsubscribed is returned by Replay once the subscription was
	// closed, by its owner or because its sink refused a delivery, or
	// ended because its channel was deleted (the sink was told).
	ErrUnsubscribed = errors.New("subscription closed")
)
