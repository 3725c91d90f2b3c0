package ws

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// BenchmarkIdleConnection is what an idle subscriber costs the server:
// each op opens a connection, subscribes it and leaves it idle. It reports
// the Go heap in use per connection after a collection (the raw clients
// here hold a socket each, a few hundred bytes of it), the goroutine
// stacks per connection, and the goroutines per connection, which parking
// keeps at 0 (TSLM_TEST_BLOCKING_READS=1 shows a blocked reader's cost). Run with -benchtime=2000x:
// docs/benchmarks.md has the figures (tslm-bench -scenario idle measures
// RSS, from outside the process).
func BenchmarkIdleConnection(b *testing.B) {
	ts := startServer(b, Config{Allow: OpAll, MaxConnections: 1 << 20})
	ts.create(b, "c", 0)
	addr := strings.TrimPrefix(strings.TrimSuffix(ts.url, "/v1/ws"), "ws://")
	conns := make([]net.Conn, 0, b.N)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()
	b.ResetTimer()
	for i := range b.N {
		c, err := rawSubscriber(addr, "c", i)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	b.StopTimer()
	waitFor(b, "every connection registered", func() bool { return ts.srv.Stats().Open == int64(b.N) })
	idle := 0 // parked: no goroutine
	if ts.srv.testBlockingReads {
		idle = b.N // a reader blocked on each socket
	}
	waitFor(b, "connections idle", func() bool { return connGoroutines() == idle })
	time.Sleep(1200 * time.Millisecond) // pooled writers idle long enough end
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/float64(b.N), "heap-B/conn")
	b.ReportMetric(float64(int64(after.StackInuse)-int64(before.StackInuse))/float64(b.N), "stack-B/conn")
	b.ReportMetric(float64(runtime.NumGoroutine()-goroutines)/float64(b.N), "goroutines/conn")
}

// rawSubscriber opens a WebSocket connection by hand (no client library,
// so that the benchmark's own side holds only the socket), subscribes to
// channel and reads the ack.
func rawSubscriber(addr, channel string, i int) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "GET /v1/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n", addr, ProtocolV1)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		return nil, fmt.Errorf("upgrade: %s", resp.Status)
	}
	c.Write(clientFrame(1, []byte(fmt.Sprintf(`{"type":"subscribe","ref":"s%d","channel":%q}`, i, channel)), false))
	// The ack: a text frame, unmasked, short.
	header := make([]byte, 2)
	if _, err := br.Read(header[:1]); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := br.Read(header[1:]); err != nil {
		c.Close()
		return nil, err
	}
	n := int(header[1] & 0x7f)
	if n > 125 {
		c.Close()
		return nil, fmt.Errorf("ack of %d bytes: not expected", n)
	}
	ack := make([]byte, n)
	for read := 0; read < n; {
		m, err := br.Read(ack[read:])
		if err != nil {
			c.Close()
			return nil, err
		}
		read += m
	}
	if !strings.Contains(string(ack), `"ack"`) {
		c.Close()
		return nil, fmt.Errorf("want an ack, got %s", ack)
	}
	return c, nil
}
