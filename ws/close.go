package ws

import "github.com/gorilla/websocket"

// CloseReason is why the server closes a connection. Each maps to one
// WebSocket close code; the table is part of the contract in
// docs/protocol.md. Codes 4000-4499 mean "reconnect and resume with since";
// 4500-4999 mean "do not reconnect until something changes".
type CloseReason int

const (
	CloseShutdown     CloseReason = iota // server draining: reconnect, possibly elsewhere
	CloseTooBig                          // a frame over the size limit
	ClosePolicy                          // the client kept sending past its rate limit
	CloseTryLater                        // reserved: a full listener now refuses before the upgrade, with HTTP 503
	CloseInternal                        // unexpected server failure
	CloseSlowConsumer                    // the client did not read fast enough
	CloseUnauthorized                    // no credentials within the listener's AuthTimeout
	CloseExpired                         // the connection's credentials expired without a re-auth
	CloseBudget                          // the process-wide send budget had no room for a live frame
)

// Close codes, as sent on the wire.
const (
	CodeGoingAway    = websocket.CloseGoingAway         // 1001
	CodePolicy       = websocket.ClosePolicyViolation   // 1008
	CodeTooBig       = websocket.CloseMessageTooBig     // 1009
	CodeInternal     = websocket.CloseInternalServerErr // 1011
	CodeTryLater     = websocket.CloseTryAgainLater     // 1013
	CodeSlowConsumer = 4000
	CodeBudget       = 4001
	CodeUnauthorized = 4500
	CodeExpired      = 4501
)

var closeTable = [...]struct {
	code int
	text string
}{
	CloseShutdown:     {CodeGoingAway, "server shutting down: reconnect and resume"},
	CloseTooBig:       {CodeTooBig, "frame too large"},
	ClosePolicy:       {CodePolicy, "rate limit exceeded"},
	CloseTryLater:     {CodeTryLater, "too many connections: try again later"},
	CloseInternal:     {CodeInternal, "internal error"},
	CloseSlowConsumer: {CodeSlowConsumer, "slow consumer: reconnect and resume"},
	CloseUnauthorized: {CodeUnauthorized, "authentication required"},
	CloseExpired:      {CodeExpired, "credentials expired: authenticate again"},
	CloseBudget:       {CodeBudget, "server send budget exhausted: reconnect and resume"},
}

// Code returns the WebSocket close code for r.
func (r CloseReason) Code() int { return closeTable[r].code }

func (r CloseReason) String() string { return closeTable[r].text }

// dropsQueue reports whether a connection closed for r drops what is
// queued instead of sending it first: a slow consumer cannot take it, and
// the budget is closed to get its memory back.
func (r CloseReason) dropsQueue() bool { return r == CloseSlowConsumer || r == CloseBudget }
