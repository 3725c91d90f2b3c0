// Package httpapi serves the internal listener's HTTP API over a broker.Hub:
// creating and describing channels, publishing, and reading the backlog.
//
// Every response, error or not, is JSON. Failures are
// {"code":"<broker.Code>","message":"..."}, with the HTTP status chosen by
// the code so that one failure reads the same over HTTP and WebSocket;
// docs/http-api.md is the reference for routes, bodies and statuses.
//
// On a listener that checks credentials, each request's Authorization:
// Bearer is authenticated and the request decided by the listener's
// auth.Policy, as WebSocket commands are (auth.go). A listener with
// tokens (auth_tokens) first refuses every request without one in the
// TSLM-Auth-Token header (api.go, gate).
//
// An API holds no mutable state after New but its atomic counters: its
// handlers are safe for concurrent use, and Register may be called on several muxes. It does not
// own the Hub, so it has nothing to close.
package httpapi
