package broker

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

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

// HTTPStatus is the HTTP status of an answer carrying c, on every HTTP
// path (the HTTP API, refused event streams); docs/http-api.md holds the
// same table.
func (c Code) HTTPStatus() int {
	switch c {
	case CodeBadRequest, CodeUnknownType:
		return http.StatusBadRequest
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeForbidden:
		return http.StatusForbidden
	case CodeNotFound:
		return http.StatusNotFound
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeLimitExceeded:
		return http.StatusUnprocessableEntity
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// WriteHTTPError answers an HTTP request with the JSON error body every
// HTTP path uses, {"code","message"}, at status. Messages quote client
// input such as "<ms>-<seq>", so HTML escaping would only garble them.
func WriteHTTPError(w http.ResponseWriter, status int, code Code, msg string) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(struct {
		Code    Code   `json:"code"`
		Message string `json:"message"`
	}{code, msg}) // strings always marshal
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	w.Write(b.Bytes())
}
