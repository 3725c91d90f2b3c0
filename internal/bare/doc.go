// Package bare is a minimal WebSocket broadcaster with no backlog, speaking
// just enough of protocol v1 (docs/protocol.md) for a load generator to
// drive it exactly as it drives TSLM: the ceiling that cmd/tslm-bench
// reports every figure against, from the same run.
//
// It is what a reasonable hand-rolled broadcaster looks like: one reader
// and one writer goroutine per connection, the writer draining a bounded
// queue of frames (a full queue closes the connection as a slow consumer,
// 4000, as TSLM does), a message encoded once and its bytes shared by
// every subscriber. It keeps nothing: no history, no resume, no limits
// beyond the queue, no authentication.
//
// What it speaks, on GET /v1/ws (subprotocol tslm.v1):
//   - create → ack with created;
//   - subscribe (live only: since and last are refused) → ack with head;
//   - unsubscribe → ack;
//   - publish → ack with the message's id; subscribers get
//     {"type":"message","channel":…,"id":…,"data":…}.
//
// Over HTTP: PUT /v1/channels/{channel} creates (201, or 200 when it
// existed) and POST /v1/channels/{channel}/messages publishes the body
// (201 {"id":…}), as the internal HTTP API does (docs/http-api.md).
//
// IDs are <ms>-<seq>, strictly increasing per channel: an ID is assigned
// and the message queued to every subscriber under the channel's lock, so
// each subscriber receives a channel's messages in ID order.
//
// A Server is safe for concurrent use. Close ends every connection and
// waits for their goroutines.
package bare
