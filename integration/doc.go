// Package integration holds the end-to-end tests: whole gateways, started
// in-process on loopback ports or as the real binary, driven over real
// sockets by WebSocket and HTTP clients.
package integration
