// Package ws serves the gateway's WebSocket clients: the upgrade, protocol
// v1 and the tslm.legacy adapter (also served at /, the original TSLM's
// endpoint: ServeLegacy), and each connection's reader and writer. A
// listener's tokens (handshake.go) are checked before anything else, on
// every upgrade and event stream; a token offered as a subprotocol is
// answered with itself when the server has nothing else to answer.
//
// Every connection has exactly one reader goroutine (the HTTP handler's),
// which decodes and runs commands in order, and one writer goroutine, which
// alone writes data frames, draining a send queue bounded in frames and
// bytes (a frame counts until written). The hub hands live messages to the
// queue without waiting, under a subscription's lock, so that path neither
// blocks nor logs; a full queue closes the connection as a slow consumer
// (close code 4000), and the client resumes with since. A SendBudget
// shared by every connection of the process bounds their queued bytes
// together; a frame it has no room for closes the connection with 4001.
// The writer drains the whole queue per wake-up and writes it in one
// syscall per 64 KiB (batch.go): gorilla frames each message into a
// batchConn, the socket it got from the upgrade's Hijack, which buffers
// them until the writer flushes; frames the reader writes meanwhile (pongs,
// the close echo) join the buffer, even during a flush, and go out with the
// batch's next or last flush. The queue wakes the writer only when a frame
// lands in an empty one.
// The writer logs the server's close, or, with Config.AccessLog, the
// reader logs every connection's end once the writer has returned, with
// who ended it (metrics.go). Server is safe for concurrent use.
//
// Requests (requests.go) follow the same rules: a session's answers come
// from hub goroutines and are queued without waiting, like live messages
// (the client resumes its session after a 4000); requests handed to a
// serving app wait for room, like a replay. The session and the servings
// belong to the reader goroutine, as subscriptions do.
//
// Credentials (auth.go): a connection speaks for at most one principal, set
// before the reader starts (the upgrade's Authorization header) or by the
// reader (an auth frame), and read by the reader's decisions and by two
// timers (the deadline to authenticate, the principal's expiry), which
// only close the connection; conn.authMu guards the three. Every command
// naming a channel is decided by the listener's auth.Policy.
//
// Server-Sent Events (sse.go) are the subscribe-only fallback at
// GET /v1/sse: a stream is a connection of the same Server (slots, origin,
// credentials, policy, send queue and budget, shutdown), with the handler's
// goroutine as its writer and one more running its replays. The writer
// alone knows what the client has read, so it alone writes the cursor
// (every channel's position) into each message's id.
package ws
