// Package client is a Go client of the TSLM gateway over WebSocket
// protocol v1 (docs/protocol.md): subscribe, publish, create channels and
// request/reply, with automatic reconnection.
//
// A Client holds one connection at a time, with one reader and one writer
// goroutine and a bounded send queue. When the connection drops, or the
// gateway closes it with 1001 (shutting down), 4000 (slow consumer) or
// 4001 (send budget), it dials again with exponential backoff and jitter,
// subscribes every Subscription again with since = the last ID it
// delivered (so nothing is missed or repeated, or NotResumed says what may
// have been), and resumes the request session so that requests
// acknowledged before the drop get their answers. Close codes 4500 and
// 4501 and HTTP 401/403 refusals are final: the client stops and reports
// them.
//
// Errors from the gateway are *Error, matched with errors.Is against a
// sentinel per documented code (ErrNotFound, ErrForbidden...). A
// connection lost before an answer is a *DisconnectError carrying the close
// code.
//
// The package stands on the documented protocol alone, as a client in
// another language would: it imports nothing of the gateway. Every method
// of Client and Subscription is safe for concurrent use.
package client
