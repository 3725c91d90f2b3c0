package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/gateway"
	"github.com/tslm/tslm/internal/envconfig"
)

// Tests of the public listener's HTTP side: timeouts, refusals before the
// upgrade, and the origin setting.

// TestHTTPTimeoutsSpareWebSockets: an idle keep-alive connection and a
// request whose body trickles in are closed by the server, while a
// WebSocket connection idle for longer than both timeouts stays open.
func TestHTTPTimeoutsSpareWebSockets(t *testing.T) {
	r := startReplica(t, map[string]string{"TSLM_HTTP_IDLE_TIMEOUT": "200ms", "TSLM_HTTP_READ_TIMEOUT": "300ms"})
	addr := r.PublicAddrs()[0].String()
	ws := dial(t, r.publicURL) // idle from here on

	t.Run("idle keep-alive", func(t *testing.T) {
		conn, br := rawHTTP(t, addr, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("GET /healthz: %d, close %v; want 200, kept alive", resp.StatusCode, resp.Close)
		}
		expectClosedByServer(t, conn, br)
	})
	t.Run("trickling body", func(t *testing.T) {
		// Ten of the hundred bytes announced, then nothing.
		conn, br := rawHTTP(t, addr, "POST /healthz HTTP/1.1\r\nHost: %s\r\nContent-Length: 100\r\n\r\n0123456789", addr)
		expectClosedByServer(t, conn, br)
	})

	ws.send(map[string]any{"type": "unsubscribe", "ref": "alive", "channel": "c"})
	ws.expect(map[string]any{"type": "ack", "ref": "alive", "channel": "c"})
}

// rawHTTP opens a TCP connection to addr and writes a request to it.
func rawHTTP(t *testing.T, addr, format string, args ...any) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, format, args...); err != nil {
		t.Fatal(err)
	}
	return conn, bufio.NewReader(conn)
}

// expectClosedByServer reads, skipping whatever the server answered, until
// the server closes the connection; it fails if that takes longer than a
// deadline far beyond the timeouts under test.
func expectClosedByServer(t *testing.T, conn net.Conn, br *bufio.Reader) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, err := io.Copy(io.Discard, br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept the connection open")
	}
}

// TestRefusalsNameTheSettings: the answers a refused client gets name the
// variable an operator sets, and are counted by reason.
func TestRefusalsNameTheSettings(t *testing.T) {
	r := startReplica(t, map[string]string{"TSLM_MAX_CONNECTIONS": "1"})
	dial(t, r.publicURL)

	refused := func(origin string, status int) (*http.Response, string) {
		t.Helper()
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
		conn, resp, err := d.Dial(r.publicURL, h)
		if err == nil {
			conn.Close()
			t.Fatalf("upgraded, want HTTP %d", status)
		}
		if resp == nil || resp.StatusCode != status {
			t.Fatalf("dial: %v, response %v; want HTTP %d", err, resp, status)
		}
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	resp, body := refused("", http.StatusServiceUnavailable)
	if !strings.Contains(body, "TSLM_MAX_CONNECTIONS") || resp.Header.Get("Retry-After") == "" {
		t.Errorf("503 with Retry-After %q and body %q; want a Retry-After and the variable named", resp.Header.Get("Retry-After"), body)
	}
	if _, body := refused("https://evil.example", http.StatusForbidden); !strings.Contains(body, "https://evil.example") || !strings.Contains(body, "TSLM_ALLOWED_ORIGINS") {
		t.Errorf("403 body %q does not name the origin and TSLM_ALLOWED_ORIGINS", body)
	}

	resp, err := http.Get(r.apiURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics := readAll(t, resp)
	for _, want := range []string{
		`tslm_upgrades_refused_total{listener="public",reason="max_connections"} 1`,
		`tslm_upgrades_refused_total{listener="public",reason="origin"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestMalformedOriginsStopStart: an origin no browser could send is an
// error at start that names the variable and shows the expected form, both
// from the environment and from a Config handed to gateway.Start.
func TestMalformedOriginsStopStart(t *testing.T) {
	for _, value := range []string{"example.com", "https://example.com/", "https://*.example.com", "https://a.example,localhost:3000"} {
		t.Run(value, func(t *testing.T) {
			_, err := envconfig.Load(map[string]string{"TSLM_ALLOWED_ORIGINS": value})
			if err == nil {
				t.Fatalf("TSLM_ALLOWED_ORIGINS=%s accepted", value)
			}
			for _, want := range []string{"TSLM_ALLOWED_ORIGINS", "https://example.com", "http://localhost:3000"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			cfg := config(t, nil)
			cfg.AllowedOrigins = strings.Split(value, ",")
			g, err := gateway.Start(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				ctx, cancel := contextWithTimeout(5 * time.Second)
				defer cancel()
				g.Shutdown(ctx)
				t.Fatalf("gateway.Start accepted AllowedOrigins %q", cfg.AllowedOrigins)
			}
			var ce *gateway.ConfigError
			if !errors.As(err, &ce) || ce.Field != "AllowedOrigins" {
				t.Errorf("gateway.Start: %v, want a ConfigError for AllowedOrigins", err)
			}
		})
	}
}
