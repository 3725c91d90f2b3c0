package broker

// Code is an error code of the public protocol, shared by every transport
// (WebSocket, HTTP API) so that one failure reads the same everywhere. The
// set is part of the wire contract in docs/protocol.md.
type Code string

const (
	CodeBadRequest    Code = "bad_request"    // malformed or invalid command
	CodeUnknownType   Code = "unknown_type"   // a command type the server does not know
	CodeUnauthorized  Code = "unauthorized"   // no valid credentials, and this needs them
	CodeForbidden     Code = "forbidden"      // not allowed on this listener, or not granted to these credentials
	CodeNotFound      Code = "not_found"      // no such channel
	CodeTooLarge      Code = "too_large"      // payload over the size limit
	CodeRateLimited   Code = "rate_limited"   // over the command rate; retry later
	CodeLimitExceeded Code = "limit_exceeded" // a configured limit (subscriptions, max_len, channels…)
	CodeUnavailable   Code = "unavailable"    // the backlog cannot be reached or did not answer in time; retry later
	CodeInternal      Code = "internal"       // a bug or unexpected failure
	CodeTimeout       Code = "timeout"        // a request got no reply before its deadline
	// CodeCanceled is never sent: the client gave up on the command (it
	// went away, or closed the subscription), so nobody reads the answer,
	// and it says nothing about the backlog's health.
	CodeCanceled Code = "canceled"
)
