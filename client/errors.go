package client

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Error is an error frame of the gateway (docs/protocol.md, "error"): Code
// is one of the documented codes, each matched by a sentinel with
// errors.Is (errors.Is(err, client.ErrNotFound)). Message is for humans
// and may change.
type Error struct {
	Code    string
	Message string
	Channel string // set when the frame named one (a timeout, an ended subscription)
}

func (e *Error) Error() string {
	if e.Channel != "" {
		return fmt.Sprintf("tslm: %s on channel %q: %s", e.Code, e.Channel, e.Message)
	}
	return fmt.Sprintf("tslm: %s: %s", e.Code, e.Message)
}

// Is matches the sentinel of e's code.
func (e *Error) Is(target error) bool {
	s, ok := target.(*sentinel)
	return ok && s.code == e.Code
}

// sentinel is an error code without a message, for errors.Is.
type sentinel struct{ code string }

func (s *sentinel) Error() string { return "tslm: " + s.code }

// The error codes of docs/protocol.md's table. A test holds this list to
// the gateway's.
var (
	ErrBadRequest    error = &sentinel{"bad_request"}
	ErrUnknownType   error = &sentinel{"unknown_type"}
	ErrUnauthorized  error = &sentinel{"unauthorized"}
	ErrForbidden     error = &sentinel{"forbidden"}
	ErrNotFound      error = &sentinel{"not_found"}
	ErrTooLarge      error = &sentinel{"too_large"}
	ErrTimeout       error = &sentinel{"timeout"}
	ErrRateLimited   error = &sentinel{"rate_limited"}
	ErrLimitExceeded error = &sentinel{"limit_exceeded"}
	ErrUnavailable   error = &sentinel{"unavailable"}
	ErrInternal      error = &sentinel{"internal"}
)

// sentinels lists every documented code's sentinel (for the test that
// holds them to the gateway's codes).
func sentinels() []error {
	return []error{ErrBadRequest, ErrUnknownType, ErrUnauthorized, ErrForbidden, ErrNotFound,
		ErrTooLarge, ErrTimeout, ErrRateLimited, ErrLimitExceeded, ErrUnavailable, ErrInternal}
}

var (
	// ErrClosed is returned by every call after Close, and by calls that
	// Close interrupted.
	ErrClosed = errors.New("tslm: client closed")
	// ErrDisconnected matches a *DisconnectError: the connection ended
	// before the answer came.
	ErrDisconnected = errors.New("tslm: disconnected")
)

// DisconnectError is a connection that ended: Code is the close code the
// gateway sent (docs/protocol.md, "Close codes"), or 1006 when none came
// (a network failure). Final reports codes after which the client does not
// reconnect (4500-4999): the client is then done, and every call fails
// with this error.
//
// A command whose answer had not come when its connection ended fails with
// a DisconnectError, unless it is safe to send again (create, a publish
// with an idempotency key, subscribe), in which case it is sent again on
// the next connection. A request acknowledged before the drop survives it:
// its session is resumed.
type DisconnectError struct {
	Code   int
	Reason string
	Final  bool
	Err    error // the underlying read or write error, if any
}

func (e *DisconnectError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tslm: connection lost (close code %d", e.Code)
	if e.Reason != "" {
		fmt.Fprintf(&b, ": %s", e.Reason)
	}
	b.WriteString(")")
	if e.Err != nil && e.Reason == "" {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *DisconnectError) Is(target error) bool {
	switch target {
	case ErrDisconnected:
		return true
	case ErrUnauthorized:
		// 4500 and 4501 both need a (fresh) credential.
		return e.Code == 4500 || e.Code == 4501
	}
	return false
}

func (e *DisconnectError) Unwrap() error { return e.Err }

// HandshakeError is the gateway's refusal of the WebSocket upgrade: an
// HTTP status and the text body that says why. 401 matches ErrUnauthorized
// and 403 ErrForbidden; both are final: a client that was connected stops
// reconnecting. Other statuses (429 and 503 after their Retry-After, a 404
// from a proxy in the middle of a deployment) are retried. Dial returns
// any refusal of the first connection.
type HandshakeError struct {
	StatusCode int
	Body       string
	// RetryAfter is the gateway's Retry-After (429, 503): the client
	// waits at least that long before it dials again.
	RetryAfter time.Duration
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("tslm: handshake refused: HTTP %d: %s", e.StatusCode, e.Body)
}

func (e *HandshakeError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.StatusCode == 401
	case ErrForbidden:
		return e.StatusCode == 403
	}
	return false
}

// final reports whether e ends the client.
func (e *HandshakeError) final() bool {
	return e.StatusCode == 401 || e.StatusCode == 403
}

// Refusal is a serving app's refusal of a request (the reply's error
// object): Code and Message are the app's, not codes of the protocol.
type Refusal struct {
	Code    string
	Message string
}

func (r *Refusal) Error() string { return "tslm: request refused: " + r.Code + ": " + r.Message }
