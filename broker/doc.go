// Package broker is one replica's hub: it follows the backlog for the
// channels its clients subscribe to and fans every message out to them in
// ID order, merging each subscriber's replay with live traffic without gap
// or duplicate.
//
// Hub and Subscription are safe for concurrent use. A Subscription's
// Replay must be called once, by the goroutine that called Subscribe; its
// Close may come from any goroutine (but not from within a Sink method) and
// is final: it cancels a replay in flight and waits for it. Replays hold
// their pages within a byte bound per replay and a byte budget per hub
// (Config.ReplayPageBytes, Config.ReplayBytes); the merge of replay and
// live traffic is the pure logic of merge.go.
// Live publications reach a Sink from the hub's reader goroutines, never
// concurrently for one subscription, and each Publication is encoded once
// per Encoder however many sinks receive it.
//
// Requests and replies (session.go, serve.go, reply.go): a Session is a
// requester's, with an inbox (a hidden channel, see IsReserved) that it
// follows through an ordinary subscription, and answers each request it
// awaits exactly once, with a reply or a timeout; a Serving is an app's
// consumer of one channel's request queue, on a goroutine of its own. Both
// are safe for concurrent use; their Close is final and waits for their
// goroutine, so it must not be called from within their sink's methods
// (ReplySink.Answer, Request's acked, RequestSink.Serve). Answers are
// handed to the ReplySink under the session's lock, which makes "acked
// before any answer" and "nothing after Close" hold.
//
// Every error the Hub returns is an *Error (or wraps one): a protocol Code
// and a message for the client, refining one of the sentinels, with the
// backlog's own error kept as its cause for logs. Transports turn any error
// into what the client is told with ErrorOf, and never answer CodeCanceled.
// Each backlog call made for a client is bounded by Config.OperationTimeout.
package broker
