package gateway

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/broker"
)

// TestSSEOutlivesHTTPTimeouts: an event stream is served on both
// listeners, lives past the HTTP server's read timeout (which bounds
// reading a request, not a stream), shows in /metrics, and ends with
// event: shutdown when the gateway shuts down.
func TestSSEOutlivesHTTPTimeouts(t *testing.T) {
	const readTimeout = 200 * time.Millisecond
	g, err := Start(t.Context(), Config{PublicAddrs: []string{"127.0.0.1:0"}, InternalAddrs: []string{"127.0.0.1:0"},
		HTTPReadTimeout: readTimeout, PingInterval: 50 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	}
	defer shutdown()
	if _, err := g.Hub().Create(t.Context(), "news", broker.ChannelOptions{}); err != nil {
		t.Fatal(err)
	}
	var lines []*bufio.Reader
	for _, addr := range []string{g.PublicAddrs()[0].String(), g.InternalAddrs()[0].String()} {
		resp, err := http.Get("http://" + addr + "/v1/sse?channel=news")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Accel-Buffering") != "no" {
			t.Fatalf("%s: HTTP %d %v", addr, resp.StatusCode, resp.Header)
		}
		lines = append(lines, bufio.NewReader(resp.Body))
	}
	// Pings until well past the read timeout.
	start := time.Now()
	for time.Since(start) < 3*readTimeout {
		for _, r := range lines {
			if readEvent(t, r) == "" {
				t.Fatalf("stream ended after %v", time.Since(start))
			}
		}
	}
	id, err := g.Hub().Publish(t.Context(), "news", []byte(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range lines {
		for {
			ev := readEvent(t, r)
			if ev == "" {
				t.Fatal("stream ended before the message")
			}
			if strings.Contains(ev, `"id":"`+id.String()+`"`) {
				break
			}
		}
	}

	resp, err := http.Get("http://" + g.InternalAddrs()[0].String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`tslm_sse_streams{listener="public"} 1`, `tslm_sse_streams{listener="internal"} 1`,
		`tslm_sse_streams_accepted_total{listener="public"} 1`} {
		if !strings.Contains(string(body), "\n"+want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	go shutdown()
	for _, r := range lines {
		for {
			ev := readEvent(t, r)
			if ev == "" {
				t.Fatal("stream ended without event: shutdown")
			}
			if ev == "event: shutdown\ndata: {}\n" {
				break
			}
		}
		if ev := readEvent(t, r); ev != "" {
			t.Errorf("after shutdown: %q, want the end", ev)
		}
	}
}

// readEvent reads one block of an event stream, "" at its end.
func readEvent(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if b.Len() == 0 && line == "" {
				return ""
			}
			t.Fatalf("stream broke: %v", err)
		}
		if line == "\n" {
			if b.Len() == 0 {
				continue
			}
			return b.String()
		}
		b.WriteString(line)
	}
}
