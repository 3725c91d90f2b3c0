package ws

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// Tests of the writer: what it holds, and how it closes.

// gatedConn is a server-side socket whose writes the test lets through one
// at a time once held, standing in for a client whose TCP window is full.
type gatedConn struct {
	net.Conn
	mu      sync.Mutex
	held    bool
	tokens  chan struct{} // one per write let through while held
	blocked chan struct{} // a write waits for a token
	open    chan struct{} // closed by release: writes pass again
	release func()
}

func newGatedConn(c net.Conn) *gatedConn {
	g := &gatedConn{Conn: c, tokens: make(chan struct{}), blocked: make(chan struct{}), open: make(chan struct{})}
	g.release = sync.OnceFunc(func() { close(g.open) })
	return g
}

func (g *gatedConn) hold() {
	g.mu.Lock()
	g.held = true
	g.mu.Unlock()
}

func (g *gatedConn) Write(b []byte) (int, error) {
	g.mu.Lock()
	held := g.held
	g.mu.Unlock()
	if held {
		select {
		case g.blocked <- struct{}{}:
			select {
			case <-g.tokens:
			case <-g.open:
			}
		case <-g.open:
		}
	}
	return g.Conn.Write(b)
}

// waitBlocked waits until the writer is stuck in a write.
func (g *gatedConn) waitBlocked(t *testing.T) {
	t.Helper()
	select {
	case <-g.blocked:
	case <-time.After(readTimeout):
		t.Fatal("the writer never blocked on the socket")
	}
}

// gatedServer starts a server whose one client's socket is gated.
func gatedServer(t *testing.T, cfg Config) (*testServer, *client, *gatedConn) {
	t.Helper()
	gates := make(chan *gatedConn, 1)
	ts := startServerWith(t, cfg, serverOptions{conn: func(c net.Conn) net.Conn {
		g := newGatedConn(c)
		gates <- g
		return g
	}})
	c := ts.dial(t)
	g := <-gates
	// Before the server's Shutdown at cleanup, which must write.
	t.Cleanup(g.release)
	return ts, c, g
}

// TestSendQueueCountsUntilWritten holds the client's socket and counts the
// frames the queue accepts against those written: a frame counts against
// the limits from the moment it is queued until the socket has taken it,
// so the writer's batch does not double what a slow client can pin.
func TestSendQueueCountsUntilWritten(t *testing.T) {
	const n = 4
	data := []byte(`"` + strings.Repeat("x", 100) + `"`)
	frameLen := len(v1Encoder.Encode(&broker.Publication{Channel: "c", ID: backlog.ID{Ms: 1000}, Data: data}))
	tests := []struct {
		name string
		cfg  Config
	}{
		{"frame limit", Config{SendQueueFrames: n, SendQueueBytes: 1 << 20}},
		{"byte limit", Config{SendQueueFrames: 1000, SendQueueBytes: n * frameLen}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, c, g := gatedServer(t, tt.cfg)
			conn := ts.onlyConn(t)
			g.hold()
			var accepted, written int
			deliver := func() bool {
				// IDs of one width, so that every frame has frameLen bytes.
				p := &broker.Publication{Channel: "c", ID: backlog.ID{Ms: uint64(1000 + accepted)}, Data: data}
				if len(p.Frame(v1Encoder)) != frameLen {
					t.Fatalf("frame of %d bytes, want %d", len(p.Frame(v1Encoder)), frameLen)
				}
				ok := conn.Deliver(p)
				if ok {
					accepted++
				}
				return ok
			}
			// The writer takes the first frame and blocks on the socket;
			// the queue fills up behind it.
			deliver()
			g.waitBlocked(t)
			for range n - 1 {
				if !deliver() {
					t.Fatalf("frame %d refused; the limit is %d", accepted+1, n)
				}
			}
			// One frame reaches the socket: the writer takes the rest of
			// the queue as its next batch and blocks on its first.
			g.tokens <- struct{}{}
			written++
			g.waitBlocked(t)
			for deliver() {
				if accepted > 3*n {
					t.Fatalf("%d frames accepted with %d written and nothing read", accepted, written)
				}
			}
			if held := accepted - written; held > n {
				t.Errorf("%d frames accepted, %d written: %d held for the client, want at most %d", accepted, written, held, n)
			}

			// What was written arrives, then the slow-consumer close.
			g.release()
			received := 0
			for {
				_, err := c.next(readTimeout)
				if err == nil {
					received++
					continue
				}
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != CodeSlowConsumer {
					t.Fatalf("after %d frames: %v, want close code %d", received, err, CodeSlowConsumer)
				}
				break
			}
			if received < written || received > accepted {
				t.Errorf("received %d frames, want between %d written and %d accepted", received, written, accepted)
			}
		})
	}
}

// blockingHandler is a slog handler stuck in every Handle until released,
// as a log shipper with a full pipe is.
type blockingHandler struct {
	release chan struct{}
	calls   atomic.Int64 // Handle calls begun
	mu      sync.Mutex
	records []string // message and reason of every record handled
}

func (h *blockingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *blockingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *blockingHandler) WithGroup(string) slog.Handler            { return h }

func (h *blockingHandler) Handle(_ context.Context, r slog.Record) error {
	h.calls.Add(1)
	<-h.release
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "reason" {
			line += ": " + a.Value.String()
		}
		return true
	})
	h.mu.Lock()
	h.records = append(h.records, line)
	h.mu.Unlock()
	return nil
}

func (h *blockingHandler) logged(line string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		if r == line {
			return true
		}
	}
	return false
}

// TestSlowConsumerCloseDoesNotStallFanOut: the close of a slow consumer
// happens on the hub's reader goroutine, under the subscription's lock; a
// log handler that blocks there must not hold back the other subscribers
// of the channel. The close is still logged once the handler recovers.
func TestSlowConsumerCloseDoesNotStallFanOut(t *testing.T) {
	h := &blockingHandler{release: make(chan struct{})}
	ts, slow, g := gatedServer(t, Config{Allow: OpAll, SendQueueFrames: 2, Logger: slog.New(h)})
	release := sync.OnceFunc(func() { close(h.release) })
	t.Cleanup(release) // before the server's Shutdown, which logs nothing but waits for writers
	ts.create(t, "c", 0)
	slow.subscribe("c", nil)
	slow.roundTrip() // commands run in order: the subscription is live
	fast := ts.dial(t)
	fast.subscribe("c", nil)
	frames := fast.pump()
	g.hold()

	for i := 0; ts.srv.Stats().Closes[CodeSlowConsumer] == 0 || i < 10; i++ {
		if i == 100 {
			t.Fatalf("slow client not dropped after %d messages", i)
		}
		id := ts.publish(t, "c", 1)[0]
		if f := pumped(t, frames); f["type"] != "message" || f["id"] != id {
			t.Fatalf("fast client: got %v, want message %s", f, id)
		}
	}
	// The slow client's writer logs the close once its socket moves (a
	// real one would fail after WriteTimeout), still while the handler
	// is blocked; the handler then lets the record through.
	g.release()
	waitFor(t, "the writer to log the close", func() bool { return h.calls.Load() > 0 })
	release()
	waitFor(t, "the slow-consumer close in the log", func() bool { return h.logged("closing connection: " + CloseSlowConsumer.String()) })
	slow.expectClose(CodeSlowConsumer)
}
