package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/tslm/tslm/backlog"
)

// Error is a failure as clients see it: a protocol Code and a Message
// written for them. Every transport answers with these two only, through
// ErrorOf, so that one failure reads the same everywhere.
//
// Each code has a sentinel below; With refines one with a more precise
// message and Wrap attaches the underlying cause. Both keep
// errors.Is(err, sentinel) true. The cause is for errors.Is/As and for the
// server's log (Error includes it), never for the client: it may name
// hosts or internals.
type Error struct {
	Code    Code
	Message string

	kind  *Error // the error this one refines; nil for a root sentinel
	cause error
}

// Sentinels, one per code, then the refinements the Hub returns.
var (
	ErrBadRequest  = &Error{Code: CodeBadRequest, Message: "bad request"}
	ErrUnknownType = &Error{Code: CodeUnknownType, Message: "unknown command type"}
	ErrForbidden   = &Error{Code: CodeForbidden, Message: "not allowed on this listener"}
	// ErrUnauthorized answers a command that needs credentials from a
	// client that presented none, and a credential the gateway refused.
	ErrUnauthorized = &Error{Code: CodeUnauthorized, Message: "no valid credentials: this needs authentication; send an auth frame or connect with Authorization: Bearer"}
	ErrNotFound     = &Error{Code: CodeNotFound, Message: "channel not found"}
	ErrTooLarge     = &Error{Code: CodeTooLarge, Message: "too large"}
	ErrRateLimited  = &Error{Code: CodeRateLimited, Message: "rate limited: slow down"}
	ErrLimit        = &Error{Code: CodeLimitExceeded, Message: "limit exceeded"}
	ErrUnavailable  = &Error{Code: CodeUnavailable, Message: "the backlog is unavailable; retry later"}
	ErrInternal     = &Error{Code: CodeInternal, Message: "internal error"}
	ErrCanceled     = &Error{Code: CodeCanceled, Message: "canceled"}
	// ErrRequestTimeout is sent for a request whose deadline passed with
	// no reply, and for nothing else.
	ErrRequestTimeout = &Error{Code: CodeTimeout, Message: "no reply before the request's deadline"}

	ErrBadChannel = ErrBadRequest.With("channel names are 1-128 bytes of A-Z a-z 0-9 . _ : -")
	ErrBadConfig  = ErrBadRequest.With("invalid channel configuration")
	// ErrTimeout is an operation the backlog did not answer within the
	// operation timeout. A write may still have happened.
	ErrTimeout = ErrUnavailable.With("the backlog did not answer in time; retry later")
	// ErrClosed is returned once the Hub or its backlog is closed: the
	// server is shutting down.
	ErrClosed = ErrUnavailable.With("the server is shutting down; retry on another replica")
	// ErrUnsubscribed is returned by Replay once the subscription was
	// closed, by its owner or because its sink refused a delivery.
	ErrUnsubscribed = ErrCanceled.With("subscription closed")
	ErrBadKey       = ErrBadRequest.With("idempotency keys are 1-128 bytes of visible ASCII (0x21-0x7E)")
	ErrBadPrefix    = ErrBadRequest.With("a channel prefix is at most 128 bytes of A-Z a-z 0-9 . _ : -")
	ErrBadCursor    = ErrBadRequest.With("malformed list cursor: pass the cursor of the previous page as is")
	// ErrSlowConsumer is returned by Replay when live traffic overtook the
	// replay Config.ReplayOvertakes times in a row: the client reads
	// slower than the channel's live rate. It is never sent as an error:
	// the transport closes the connection as a slow consumer, and the
	// client resumes with since, having made progress.
	ErrSlowConsumer = ErrCanceled.With("replay overtaken by live traffic: slow consumer")
	// ErrReplayCapacity is returned by Subscribe and Replay when the
	// replica's replay byte budget (Config.ReplayBytes) had no room for a
	// page within Config.ReplayWait.
	ErrReplayCapacity = ErrUnavailable.With("replay capacity exhausted: retry later")
	// ErrReserved refuses every public and internal operation on a
	// session inbox (see IsReserved).
	ErrReserved = ErrForbidden.With("channel names starting with " + InboxPrefix + " are reserved for request sessions")
	// ErrBadSession is a session token that is not one the gateway could
	// have issued.
	ErrBadSession = ErrBadRequest.With("malformed session token")
	// ErrSessionExpired is a well-formed token with no live session: it
	// expired, or it was never issued.
	ErrSessionExpired = ErrNotFound.With("session expired or unknown")
	// ErrRequestGone answers a reply to a request the replying app does
	// not hold.
	ErrRequestGone = ErrNotFound.With("no such request awaiting a reply: unknown, answered, expired or handed to another server")
	// ErrBadRefusal refuses a reply whose error does not follow the
	// protocol (see CheckRefusal).
	ErrBadRefusal = ErrBadRequest.With("a reply's error code must be 1-%d bytes of a-z 0-9 _ . - and its message at most %d bytes of UTF-8", MaxRefusalCode, MaxRefusalMessage)
)

// With returns a refinement of e with a message for the client.
func (e *Error) With(format string, args ...any) *Error {
	return &Error{Code: e.Code, Message: fmt.Sprintf(format, args...), kind: e, cause: e.cause}
}

// Wrap returns e with cause attached, for errors.Is/As and the log.
func (e *Error) Wrap(cause error) *Error {
	return &Error{Code: e.Code, Message: e.Message, kind: e, cause: cause}
}

// Error is the message followed by the cause: the text for logs.
func (e *Error) Error() string {
	if e.cause != nil {
		return e.Message + ": " + e.cause.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() []error {
	switch {
	case e.kind != nil && e.cause != nil:
		return []error{e.kind, e.cause}
	case e.kind != nil:
		return []error{e.kind}
	case e.cause != nil:
		return []error{e.cause}
	}
	return nil
}

// ErrorOf returns what a client is told about err: err's own *Error, or
// ErrInternal (with err as its cause) for anything else. It returns nil
// for nil.
func ErrorOf(err error) *Error {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	return ErrInternal.Wrap(err)
}

// fromBacklog converts an error of the backlog, at the Hub's boundary, into
// an *Error. ctx is the caller's: when it was canceled, the caller gave up,
// whatever the backlog made of it. A deadline is the operation timeout
// (callers pass none of their own), so the backlog did not answer in time.
// Anything unexpected is internal, with its cause kept for the log.
func fromBacklog(ctx context.Context, channel string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*Error](err); ok {
		return err
	}
	switch {
	case errors.Is(ctx.Err(), context.Canceled), errors.Is(err, context.Canceled):
		return ErrCanceled.Wrap(err)
	case errors.Is(err, backlog.ErrNotFound):
		return ErrNotFound.With("channel %q not found", channel).Wrap(err)
	case errors.Is(err, backlog.ErrBadCursor):
		return ErrBadCursor.Wrap(err)
	case errors.Is(err, backlog.ErrLimit):
		return ErrLimit.Wrap(err)
	case errors.Is(err, backlog.ErrClosed):
		return ErrClosed.Wrap(err)
	case errors.Is(err, context.DeadlineExceeded):
		return ErrTimeout.Wrap(err)
	case errors.Is(err, backlog.ErrUnavailable):
		return ErrUnavailable.Wrap(err)
	}
	return ErrInternal.Wrap(err)
}
