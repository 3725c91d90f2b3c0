package broker

import (
	"context"
	"errors"

	"github.com/tslm/tslm/backlog"
)

// Code is an error code of the public protocol, shared by every transport
// (WebSocket, HTTP API) so that one failure reads the same everywhere. The
// set is part of the wire contract in docs/protocol.md.
type Code string

const (
	CodeBadRequest    Code = "bad_request"    // malformed or invalid command
	CodeUnknownType   Code = "unknown_type"   // a command type the server does not know
	CodeForbidden     Code = "forbidden"      // not allowed on this listener
	CodeNotFound      Code = "not_found"      // no such channel
	CodeTooLarge      Code = "too_large"      // payload over the size limit
	CodeRateLimited   Code = "rate_limited"   // over the command rate; retry later
	CodeLimitExceeded Code = "limit_exceeded" // a configured limit (subscriptions, max_len, channels…)
	CodeUnavailable   Code = "unavailable"    // the backlog cannot be reached; retry later
	CodeInternal      Code = "internal"       // a bug or unexpected failure
)

// CodeOf maps an error from the Hub to its protocol code.
func CodeOf(err error) Code {
	switch {
	case errors.Is(err, ErrBadChannel), errors.Is(err, ErrBadConfig), errors.Is(err, ErrBadKey),
		errors.Is(err, ErrBadPrefix), errors.Is(err, ErrBadCursor):
		return CodeBadRequest
	case errors.Is(err, ErrNotFound):
		return CodeNotFound
	case errors.Is(err, ErrLimit):
		return CodeLimitExceeded
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrClosed), errors.Is(err, backlog.ErrClosed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return CodeUnavailable
	}
	return CodeInternal
}
