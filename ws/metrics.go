package ws

import (
	"errors"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/histogram"
)

// Metrics and the access log of connections and event streams: how each
// ended, how long live messages took from their publication to the
// socket, how full the send queues are. Counters are plain atomics of the
// Server; what is measured once per delivered message lives in the
// connection itself (conn.latency), so that writers share nothing, and is
// folded into the Server's total when the connection goes.

// Histogram bounds: seconds from a message's publication to its write,
// and a send queue's fill (the larger of its frame and byte shares).
var (
	publishToWriteBounds = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	queueFillBounds      = []float64{0, 0.1, 0.25, 0.5, 0.75, 0.9, 1}
)

// publishedMs is the time a live publication's message was stored (its
// ID's milliseconds), or 0 for a gap or a deletion notice, which are not
// timed.
func publishedMs(p *broker.Publication) uint64 {
	if p.Gap || p.Deleted {
		return 0
	}
	return p.ID.Ms
}

// secondsFrom is the time in seconds from ms (Unix milliseconds, the
// backlog's clock) to now (the gateway's), never below 0: clocks apart
// would make it negative. The writers pass the time they read anyway for
// the write's deadline: reading the clock costs as much as the rest of a
// frame's bookkeeping, and a message's ID has millisecond resolution.
func secondsFrom(ms int64, now time.Time) float64 {
	return float64(max(now.UnixMicro()-ms*1000, 0)) / 1e6
}

// Who ended a connection, and over what.
const (
	ByServer = "server"
	ByClient = "client"

	TransportWS  = "ws"
	TransportSSE = "sse"
)

// CodeAbnormal (1006) is the close code of a connection that ended without
// a close frame: its TCP connection went, or an event stream ended.
const CodeAbnormal = websocket.CloseAbnormalClosure

// endCodes are the close codes counted by value: RFC 6455's and TSLM's
// own. A client's other codes count as "other", so that clients cannot
// make metric series at will.
var endCodes = [...]int{1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015,
	CodeSlowConsumer, CodeBudget, CodeUnauthorized, CodeExpired}

// endCodeOther labels the codes endCodes does not hold.
const endCodeOther = "other"

func endCodeIndex(code int) int {
	for i, c := range endCodes {
		if c == code {
			return i
		}
	}
	return len(endCodes)
}

// End labels the connections that ended one way, in Stats.Ends.
type End struct {
	Transport string // TransportWS or TransportSSE
	By        string // ByServer or ByClient
	// Code is the close code: the server's (an event stream's is the one
	// a WebSocket would have had), the one in the client's close frame
	// (1005 when it held none), 1006 when the connection went without a
	// close frame, or "other" for a client's code outside RFC 6455's and
	// TSLM's.
	Code string
}

// endCounts counts ended connections by transport (WebSocket, SSE), who
// (server, client) and code.
type endCounts [2][2][len(endCodes) + 1]atomic.Int64

func (e *endCounts) add(sse bool, end ending) {
	t, b := 0, 0
	if sse {
		t = 1
	}
	if end.client {
		b = 1
	}
	e[t][b][endCodeIndex(end.code)].Add(1)
}

func (e *endCounts) snapshot(out map[End]int64) {
	for t, transport := range []string{TransportWS, TransportSSE} {
		for b, by := range []string{ByServer, ByClient} {
			for i := range e[t][b] {
				n := e[t][b][i].Load()
				if n == 0 {
					continue
				}
				code := endCodeOther
				if i < len(endCodes) {
					code = strconv.Itoa(endCodes[i])
				}
				out[End{Transport: transport, By: by, Code: code}] = n
			}
		}
	}
}

// ending is how a connection ended, for its metric and its access log.
type ending struct {
	code   int
	reason string
	client bool // ended by the client (ByClient), else by the server
}

// ending tells how the connection ended, once its reader returned readErr
// and its writer has returned.
func (c *conn) ending(readErr error) ending {
	if c.closed.Load() {
		return ending{code: c.reason.Code(), reason: c.reason.String()}
	}
	var ce *websocket.CloseError
	switch {
	case errors.Is(readErr, websocket.ErrReadLimit):
		return ending{code: CodeTooBig, reason: closeTable[CloseTooBig].text}
	case errors.As(readErr, &ce) && ce.Code != CodeAbnormal:
		return ending{code: ce.Code, reason: ce.Text, client: true}
	case c.writeErr != nil:
		return dropped(c.writeErr, "write timeout: the client read nothing")
	}
	return dropped(readErr, "ping timeout: the client answered nothing")
}

// dropped is the ending of a connection whose socket failed with err: the
// server's when err is its own deadline, described by timeout; otherwise
// the client went.
func dropped(err error, timeout string) ending {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ending{code: CodeAbnormal, reason: timeout}
	}
	return ending{code: CodeAbnormal, reason: "connection lost", client: true}
}

func (e ending) by() string {
	if e.client {
		return ByClient
	}
	return ByServer
}

// recordEnd counts the connection's end and logs it. Reader goroutine, once
// the writer has returned.
func (c *conn) recordEnd(e ending) {
	c.srv.stats.ends.add(false, e)
	if !c.srv.cfg.AccessLog {
		return
	}
	attrs := append(c.accessAttrs(),
		"duration", time.Since(c.opened), "code", e.code, "reason", e.reason, "by", e.by(),
		"frames_in", c.framesIn, "frames_out", c.framesOut)
	c.srv.cfg.Logger.Info("connection closed", attrs...)
}

// logOpen writes the access log's line for a new connection.
func (c *conn) logOpen() {
	if c.srv.cfg.AccessLog {
		c.srv.cfg.Logger.Info("connection opened", c.accessAttrs()...)
	}
}

// accessAttrs are what both access log lines of a connection say of it:
// never a credential, a payload or the request's URL.
func (c *conn) accessAttrs() []any {
	protocol := ProtocolV1
	if c.legacy {
		protocol = ProtocolLegacy
	}
	return withSubject([]any{"transport", TransportWS, "protocol", protocol,
		"client", c.client.String(), "remote", c.ws.RemoteAddr().String()}, c.who())
}

// withSubject adds the principal's subject, when there is one.
func withSubject(attrs []any, p *auth.Principal) []any {
	if p == nil {
		return attrs
	}
	return append(attrs, "subject", p.Subject)
}

// ending tells how the stream ended, once its writer has returned.
func (st *stream) ending() ending {
	select {
	case <-st.closing:
		return ending{code: st.reason.Code(), reason: st.reason.String()}
	default:
	}
	if st.writeErr != nil {
		return dropped(st.writeErr, "write timeout: the client read nothing")
	}
	return ending{code: CodeAbnormal, reason: "client went away", client: true}
}

func (st *stream) recordEnd(e ending) {
	st.srv.stats.ends.add(true, e)
	if !st.srv.cfg.AccessLog {
		return
	}
	attrs := append(st.accessAttrs(),
		"duration", time.Since(st.opened), "code", e.code, "reason", e.reason, "by", e.by(),
		"frames_out", st.framesOut)
	st.srv.cfg.Logger.Info("connection closed", attrs...)
}

func (st *stream) logOpen() {
	if st.srv.cfg.AccessLog {
		st.srv.cfg.Logger.Info("connection opened", st.accessAttrs()...)
	}
}

func (st *stream) accessAttrs() []any {
	return withSubject([]any{"transport", TransportSSE, "client", st.client.String(), "remote", st.remote}, st.principal)
}

// collectLatencyLocked adds every connection's publish-to-write times to snap.
// It expects s.mu held.
func (s *Server) collectLatencyLocked(snap *histogram.Snapshot) {
	snap.Merge(s.closedLatency)
	for c := range s.conns {
		c.latency.AddTo(snap)
	}
	for st := range s.streams {
		st.latency.AddTo(snap)
	}
}

// queueFillLocked is the fill of every open connection's send queue. It
// expects s.mu held.
func (s *Server) queueFillLocked() histogram.Snapshot {
	h := histogram.New(queueFillBounds)
	for c := range s.conns {
		h.Observe(c.queue.fill())
	}
	for st := range s.streams {
		h.Observe(st.queue.fill())
	}
	return h.Snapshot()
}
