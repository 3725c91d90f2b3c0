package broker

import (
	"errors"
	"fmt"

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
	// ErrUnsubscribed is returned by Replay once the subscription was
	// closed, by its owner or because its sink refused a delivery.
	ErrUnsubscribed = errors.New("subscription closed")
	// ErrSlowConsumer is returned by Replay when live traffic overtook the
	// replay Config.ReplayOvertakes times in a row: the client reads
	// slower than the channel's live rate. The transport closes the
	// connection as a slow consumer; the client resumes with since, having
	// made progress.
	ErrSlowConsumer = errors.New("replay overtaken by live traffic: slow consumer")
	// ErrReplayCapacity is returned by Subscribe and Replay when the
	// replica's replay byte budget (Config.ReplayBytes) had no room for a
	// page within Config.ReplayWait. It is an ErrUnavailable: retry later.
	ErrReplayCapacity = fmt.Errorf("%w: replay capacity exhausted, retry later", ErrUnavailable)
)
