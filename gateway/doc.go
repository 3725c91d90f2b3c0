// Package gateway assembles one TSLM replica from its configuration: the
// backlog (Redis or in-memory), the hub, the listeners (listeners.go: the
// public one, further public-role ones a config file names, the internal
// one) with their WebSocket servers and the original TSLM's endpoint at /,
// the internal HTTP API, health, readiness and metrics; and takes it down
// gracefully.
package gateway
