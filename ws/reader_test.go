package ws

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// connGoroutines counts the goroutines running a connection's code: its
// reader or its writer.
func connGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "tslm/ws.(*conn).") {
			count++
		}
	}
	return count
}

// clientFrame is a client's frame as RFC 6455 §5.2 has it: masked (with a
// fixed key, any key will do), FIN set unless fragment.
func clientFrame(opcode byte, payload []byte, fragment bool) []byte {
	first := opcode
	if !fragment {
		first |= 0x80
	}
	var b bytes.Buffer
	b.WriteByte(first)
	switch n := len(payload); {
	case n <= 125:
		b.WriteByte(0x80 | byte(n))
	case n <= 0xffff:
		b.WriteByte(0x80 | 126)
		binary.Write(&b, binary.BigEndian, uint16(n))
	default:
		b.WriteByte(0x80 | 127)
		binary.Write(&b, binary.BigEndian, uint64(n))
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	b.Write(key[:])
	for i, c := range payload {
		b.WriteByte(c ^ key[i%4])
	}
	return b.Bytes()
}

func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	const clients = 20
	for _, reads := range []readMode{readsParked, readsBlocking} {
		blocking := reads == readsBlocking
		name := map[bool]string{false: "parked", true: "blocking"}[blocking]
		t.Run(name, func(t *testing.T) {
			ts := startServerWith(t, Config{Allow: OpAll}, serverOptions{reads: reads})
			ts.create(t, "c", 0)
			cs := make([]*client, clients)
			for i := range cs {
				cs[i] = ts.dial(t)
				cs[i].subscribe("c", nil)
			}
			// Busy: one message to every client, each written by its
			// writer.
			ts.publish(t, "c", 1)
			for _, c := range cs {
				c.messages("c", 1)
			}
			want := 0
			if blocking {
				want = clients // a reader blocked on each socket
			}
			waitFor(t, "connections idle", func() bool { return connGoroutines() == want })
			// Still there, still served: a command wakes one reader, the
			// answer one writer, and both go again.
			cs[0].roundTrip()
			waitFor(t, "connections idle again", func() bool { return connGoroutines() == want })
		})
	}
}

func TestCommandsInOneWrite(t *testing.T) {
	// Frames that arrive together sit in the read buffer, where the
	// poller cannot see them: the reader must run them all before it
	// parks.
	ts := startServer(t, Config{Allow: OpAll})
	c := ts.dial(t)
	var all []byte
	for _, ref := range []string{"a", "b", "c"} {
		all = append(all, clientFrame(websocket.TextMessage, []byte(`{"type":"unsubscribe","ref":"`+ref+`","channel":"x"}`), false)...)
	}
	if _, err := c.ws.UnderlyingConn().Write(all); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"a", "b", "c"} {
		c.expect(map[string]any{"type": "ack", "ref": ref, "channel": "x"})
	}
}

func TestFrameInPieces(t *testing.T) {
	// A frame split over several packets wakes the reader at its first
	// byte; the reader waits for the rest (under its read deadline).
	ts := startServer(t, Config{Allow: OpAll})
	c := ts.dial(t)
	frame := clientFrame(websocket.TextMessage, []byte(`{"type":"unsubscribe","ref":"split","channel":"x"}`), false)
	for _, piece := range [][]byte{frame[:1], frame[1:7], frame[7:]} {
		if _, err := c.ws.UnderlyingConn().Write(piece); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
	}
	c.expect(map[string]any{"type": "ack", "ref": "split", "channel": "x"})
}

func TestClientPingWhileIdle(t *testing.T) {
	for _, reads := range []readMode{readsParked, readsBlocking} {
		blocking := reads == readsBlocking
		name := map[bool]string{false: "parked", true: "blocking"}[blocking]
		t.Run(name, func(t *testing.T) {
			ts := startServerWith(t, Config{Allow: OpAll}, serverOptions{reads: reads})
			c := ts.dial(t)
			pongs := make(chan string, 4)
			c.ws.SetPongHandler(func(data string) error { pongs <- data; return nil })
			frames := c.pump()
			for _, payload := range []string{"", "hello", strings.Repeat("x", 125)} {
				if err := c.ws.WriteControl(websocket.PingMessage, []byte(payload), time.Now().Add(readTimeout)); err != nil {
					t.Fatal(err)
				}
				select {
				case got := <-pongs:
					if got != payload {
						t.Errorf("pong %q, want %q", got, payload)
					}
				case <-time.After(readTimeout):
					t.Fatalf("no pong to ping %q", payload)
				}
			}
			// A pong nobody asked for is allowed, and answered by nothing.
			c.ws.WriteControl(websocket.PongMessage, []byte("unasked"), time.Now().Add(readTimeout))
			if !blocking {
				// Answering them left no reader waiting for a data frame.
				waitFor(t, "the connection idle after pings", func() bool { return connGoroutines() == 0 })
			}
			c.send(map[string]any{"type": "unsubscribe", "ref": "after", "channel": "x"})
			if d := diff(pumped(t, frames), map[string]any{"type": "ack", "ref": "after", "channel": "x"}); d != "" {
				t.Error(d)
			}
			if !blocking {
				waitFor(t, "the connection idle", func() bool { return connGoroutines() == 0 })
			}
		})
	}
}

func TestBadControlFramesGoToGorilla(t *testing.T) {
	// The reader answers well-formed pings and pongs itself; any other
	// control frame is gorilla's to refuse, with 1002.
	cases := map[string][]byte{
		"fragmented ping": clientFrame(websocket.PingMessage, []byte("x"), true),
		"ping over 125": func() []byte {
			f := clientFrame(websocket.PingMessage, bytes.Repeat([]byte("x"), 126), false)
			return f
		}(),
		"unmasked pong": {0x80 | websocket.PongMessage, 0},
		"reserved bit":  append([]byte{0x80 | 0x40 | websocket.PingMessage}, clientFrame(websocket.PingMessage, nil, false)[1:]...),
	}
	for name, frame := range cases {
		t.Run(name, func(t *testing.T) {
			ts := startServer(t, Config{Allow: OpAll})
			c := ts.dial(t)
			if _, err := c.ws.UnderlyingConn().Write(frame); err != nil {
				t.Fatal(err)
			}
			for {
				_, err := c.next(readTimeout)
				if err == nil {
					continue
				}
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.CloseProtocolError {
					t.Fatalf("got %v, want close 1002", err)
				}
				break
			}
			waitFor(t, "no connection open", func() bool { return ts.srv.Stats().Open == 0 })
		})
	}
}

// writerGoroutines counts the pool's goroutines (writers.go), idle or not.
func writerGoroutines() int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "ws.(*writerGoroutine).loop")
}

func TestWriterGoroutinesEnd(t *testing.T) {
	// Writers run on pooled goroutines that end once idle for writerIdle:
	// a replica whose clients went quiet holds none.
	ts := startServer(t, Config{Allow: OpAll})
	ts.create(t, "c", 0)
	cs := make([]*client, 10)
	for i := range cs {
		cs[i] = ts.dial(t)
		cs[i].subscribe("c", nil)
	}
	ts.publish(t, "c", 3)
	for _, c := range cs {
		c.messages("c", 3)
	}
	if writerGoroutines() == 0 {
		t.Fatal("no writer goroutine right after the writes: the pool is not in use")
	}
	waitFor(t, "idle writer goroutines to end", func() bool { return writerGoroutines() == 0 })
	// And the pool starts again.
	ts.publish(t, "c", 1)
	for _, c := range cs {
		c.messages("c", 1)
	}
}
