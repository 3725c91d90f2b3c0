package gateway

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// TestDrainTurnsReadyzAndKeepsServing: Drain only turns /readyz to 503
// "draining"; clients connected and new ones are served as before, so that
// nothing is refused while a balancer's health checks catch up.
func TestDrainTurnsReadyzAndKeepsServing(t *testing.T) {
	g := startGateway(t, Config{}, nil)
	internal := "http://" + g.InternalAddrs()[0].String()
	if code, body := getStatus(t, internal+"/readyz"); code != http.StatusOK {
		t.Fatalf("readyz before Drain: %d %q, want 200", code, body)
	}
	g.Drain()
	g.Drain() // twice is harmless
	if !g.Draining() {
		t.Fatal("Draining() = false after Drain")
	}
	if code, body := getStatus(t, internal+"/readyz"); code != http.StatusServiceUnavailable || body != "draining" {
		t.Fatalf("readyz while draining: %d %q, want 503 \"draining\"", code, body)
	}
	if code, body := getStatus(t, internal+"/healthz"); code != http.StatusOK {
		t.Errorf("healthz while draining: %d %q, want 200: the process is alive", code, body)
	}
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}}
	conn, _, err := d.Dial("ws://"+g.PublicAddrs()[0].String()+"/v1/ws", nil)
	if err != nil {
		t.Fatalf("a new client while draining was refused: %v", err)
	}
	conn.Close()
}

// TestShutdownClosesInternalListenerLast: while the public clients are
// being told to leave, the internal listener still answers /readyz
// ("draining") and /metrics, which operators watch during a drain.
func TestShutdownClosesInternalListenerLast(t *testing.T) {
	g := startGateway(t, Config{}, nil)
	internal := "http://" + g.InternalAddrs()[0].String()
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}}
	// This client never reads, so it never answers the close frame: the
	// server waits its close grace (1s) for it before hanging up, which
	// keeps the drain going long enough to look at the internal listener.
	conn, _, err := d.Dial("ws://"+g.PublicAddrs()[0].String()+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- g.Shutdown(ctx)
	}()
	sawDraining, sawMetrics := false, false
	for !sawDraining || !sawMetrics {
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned (%v) before the internal listener was seen answering during the drain (readyz draining: %v, metrics: %v)", err, sawDraining, sawMetrics)
		default:
		}
		if code, body := getStatus(t, internal+"/readyz"); code == http.StatusServiceUnavailable && body == "draining" {
			sawDraining = true
		}
		if code, _ := getStatus(t, internal+"/metrics"); code == http.StatusOK && sawDraining {
			sawMetrics = true
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if code, body := getStatus(t, internal+"/readyz"); code != 0 {
		t.Errorf("readyz after Shutdown: %d %q, want the listener closed", code, body)
	}
}
