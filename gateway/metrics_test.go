package gateway

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/broker"
)

// TestMetricsExposeRequests holds /metrics to exposing every request
// metric, each fed by its own hub counter: one request served, answered
// and collected moves each of them as it should.
func TestMetricsExposeRequests(t *testing.T) {
	g, err := Start(t.Context(), Config{PublicAddrs: []string{"127.0.0.1:0"}, InternalAddrs: []string{"127.0.0.1:0"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	}()
	internal := g.InternalAddrs()[0].String()
	check := func(want ...string) {
		t.Helper()
		resp, err := http.Get("http://" + internal + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, w := range want {
			if !strings.Contains(string(body), "\n"+w+"\n") {
				t.Errorf("/metrics lacks %q", w)
			}
		}
	}
	check("tslm_sessions 0", "tslm_requests_pending 0", "tslm_replies_total 0", "tslm_refusals_total 0",
		"tslm_request_timeouts_total 0", "tslm_replies_dropped_total 0", "tslm_servings 0")

	if _, err := g.Hub().Create(t.Context(), "orders", broker.ChannelOptions{}); err != nil {
		t.Fatal(err)
	}
	app, req := wsDial(t, "ws://"+internal+"/v1/ws"), wsDial(t, "ws://"+internal+"/v1/ws")
	wsRoundTrip(t, app, `{"type":"serve","ref":"s","channel":"orders"}`, "ack")
	ack := wsRoundTrip(t, req, `{"type":"request","ref":"r","channel":"orders","data":1,"timeout_ms":10000}`, "ack")
	check("tslm_sessions 1", "tslm_requests_pending 1", "tslm_servings 1")
	served := wsRead(t, app)
	if served["id"] != ack["id"] {
		t.Fatalf("app got %v, want request %v", served, ack["id"])
	}
	wsRoundTrip(t, app, `{"type":"reply","ref":"p","channel":"orders","id":"`+ack["id"].(string)+`","error":{"code":"no"}}`, "ack")
	if got := wsRead(t, req); got["type"] != "reply" {
		t.Fatalf("requester got %v, want the reply", got)
	}
	check("tslm_requests_pending 0", "tslm_refusals_total 1", "tslm_replies_total 0")
}

func wsDial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wsRead(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var f map[string]any
	if err := c.ReadJSON(&f); err != nil {
		t.Fatal(err)
	}
	return f
}

// wsRoundTrip sends frame and reads its answer, which must be of typ.
func wsRoundTrip(t *testing.T, c *websocket.Conn, frame, typ string) map[string]any {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	f := wsRead(t, c)
	if f["type"] != typ {
		t.Fatalf("%s answered %v, want %s", frame, f, typ)
	}
	return f
}
