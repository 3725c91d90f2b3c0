// Package gateway assembles one TSLM replica from its configuration: the
// backlog (Redis or in-memory), the hub, the public and internal listeners
// with their WebSocket servers, the internal HTTP API, health, readiness and
// metrics; and takes it down gracefully.
package gateway
