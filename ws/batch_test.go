package ws

import (
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// Tests of the writer's batches: queued frames go out in few writes, in
// order, under the write deadline.

// countingConn records the size of every write that reaches the socket.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes []int
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, len(b))
	c.mu.Unlock()
	return c.Conn.Write(b)
}

// since returns the sizes of the writes after the first n.
func (c *countingConn) since(n int) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.writes[n:]...)
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.writes)
}

// countedServer starts a server whose one client's socket is gated, with
// the writes that pass the gate counted.
func countedServer(t *testing.T, cfg Config) (*conn, *client, *gatedConn, *countingConn) {
	t.Helper()
	type pair struct {
		g *gatedConn
		c *countingConn
	}
	socks := make(chan pair, 1)
	ts := startServerWith(t, cfg, serverOptions{conn: func(c net.Conn) net.Conn {
		cc := &countingConn{Conn: c}
		g := newGatedConn(cc)
		socks <- pair{g, cc}
		return g
	}})
	c := ts.dial(t)
	p := <-socks
	t.Cleanup(p.g.release)
	return ts.onlyConn(t), c, p.g, p.c
}

// publication makes live message i of channel c with data.
func publication(i int, data string) *broker.Publication {
	return &broker.Publication{Channel: "c", ID: backlog.ID{Ms: uint64(1000 + i)}, Data: []byte(data)}
}

// TestQueuedFramesShareOneWrite holds the client's socket while frames
// queue behind the one being written, then lets it go: the frames queued
// meanwhile reach the socket in one write, whole and in order.
func TestQueuedFramesShareOneWrite(t *testing.T) {
	const queued = 10
	conn, c, g, cc := countedServer(t, Config{})
	g.hold()
	conn.Deliver(publication(0, `"first"`))
	g.waitBlocked(t) // the first frame's write, not yet counted
	before := cc.count()
	for i := 1; i <= queued; i++ {
		if !conn.Deliver(publication(i, `"queued"`)) {
			t.Fatalf("frame %d refused", i)
		}
	}
	g.release()
	for i := 0; i <= queued; i++ {
		f, err := c.next(readTimeout)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if want := publication(i, "").ID.String(); f["id"] != want {
			t.Fatalf("frame %d: id %v, want %s", i, f["id"], want)
		}
	}
	if got := cc.since(before); len(got) != 2 {
		t.Errorf("writes of %v bytes for 1 frame and %d queued behind it, want 2 writes", got, queued)
	}
}

// TestBatchWritesBounded: a batch larger than batchBytes goes out in
// several writes, none much larger than batchBytes.
func TestBatchWritesBounded(t *testing.T) {
	const queued = 10
	data := `"` + strings.Repeat("x", batchBytes/4) + `"`
	frameLen := len(v1Encoder.Encode(publication(1, data)))
	conn, c, g, cc := countedServer(t, Config{SendQueueBytes: 64 * batchBytes})
	g.hold()
	conn.Deliver(publication(0, `"first"`))
	g.waitBlocked(t)
	before := cc.count()
	for i := 1; i <= queued; i++ {
		if !conn.Deliver(publication(i, data)) {
			t.Fatalf("frame %d refused", i)
		}
	}
	g.release()
	for i := 0; i <= queued; i++ {
		if _, err := c.next(readTimeout); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	writes := cc.since(before)[1:] // the first frame's write aside
	// Each write ends with the frame that took it past batchBytes.
	if want := (queued*frameLen + batchBytes + frameLen - 1) / (batchBytes + frameLen); len(writes) < want || len(writes) >= queued {
		t.Errorf("%d queued frames of %d bytes in writes of %v bytes, want at least %d writes and fewer than %d", queued, frameLen, writes, want, queued)
	}
	for _, n := range writes {
		if n >= batchBytes+frameLen+16 {
			t.Errorf("a write of %d bytes, want under batchBytes (%d) and a frame (%d)", n, batchBytes, frameLen)
		}
	}
}

// TestBatchWriteDeadline: a client that reads nothing is dropped once a
// batch's write has waited WriteTimeout, as when every frame was written
// on its own.
func TestBatchWriteDeadline(t *testing.T) {
	ts := startServer(t, Config{WriteTimeout: 50 * time.Millisecond, SendQueueFrames: 4096, SendQueueBytes: 1 << 30})
	ts.dial(t) // never reads
	conn := ts.onlyConn(t)
	// More than loopback's socket buffers hold, both ends together.
	p := publication(0, `"`+strings.Repeat("x", 64<<10)+`"`)
	for range 1024 {
		conn.Deliver(p)
		if conn.ctx.Err() != nil {
			break
		}
	}
	waitFor(t, "the connection to end", func() bool {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		return len(ts.srv.conns) == 0
	})
	// Read after the writer has returned (forget runs after it, under
	// ts.srv.mu).
	if !errors.Is(conn.writeErr, os.ErrDeadlineExceeded) {
		t.Errorf("write error %v, want a deadline exceeded", conn.writeErr)
	}
}

// TestPongDuringFlush: a client's ping answered while the writer's flush
// is stuck on the socket neither waits for it nor fails on its own short
// deadline: the pong joins the batch and follows the frames before it.
func TestPongDuringFlush(t *testing.T) {
	conn, c, g, _ := countedServer(t, Config{})
	var pongs atomic.Int64
	c.ws.SetPongHandler(func(string) error { pongs.Add(1); return nil })
	g.hold()
	conn.Deliver(publication(0, `"first"`))
	g.waitBlocked(t)
	if err := c.ws.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(readTimeout)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pong in the batch", func() bool { return conn.out.buffered() > 0 })
	g.release()
	conn.Deliver(publication(1, `"second"`))
	for i := range 2 {
		f, err := c.next(readTimeout)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if want := publication(i, "").ID.String(); f["id"] != want {
			t.Fatalf("frame %d: id %v, want %s", i, f["id"], want)
		}
	}
	if got := pongs.Load(); got != 1 {
		t.Errorf("%d pongs before the second frame, want 1", got)
	}
}
