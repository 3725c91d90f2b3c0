package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/internal/syncbuf"
	"github.com/tslm/tslm/internal/tlsreload/tlstest"
	"github.com/tslm/tslm/ws"
)

// Tests of the transport and network limits of a whole gateway, over real
// sockets: handshake timeout, TLS with reload, trusted proxies and the
// per-address limit, the send budget's settings.

func startGateway(t *testing.T, cfg Config, logger *slog.Logger) *Gateway {
	t.Helper()
	cfg.PublicAddrs = []string{"127.0.0.1:0"}
	cfg.InternalAddrs = []string{"127.0.0.1:0"}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g, err := Start(t.Context(), cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	return g
}

// TestHandshakeTimeout: a client that sends half a handshake and stalls is
// disconnected once the handshake timeout passes; other clients, before
// and during the stall, are served.
func TestHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	g := startGateway(t, Config{HandshakeTimeout: timeout}, nil)
	if got := g.public.http.ReadHeaderTimeout; got != timeout {
		t.Errorf("ReadHeaderTimeout = %v, want the handshake timeout %v", got, timeout)
	}
	addr := g.PublicAddrs()[0].String()
	before := wsDial(t, "ws://"+addr+"/v1/ws")

	start := time.Now() // before the server can have accepted, and armed its timer
	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := io.WriteString(stalled, "GET /v1/ws HTTP/1.1\r\nHost: "+addr+"\r\nUpgrade: websocket\r\n"); err != nil {
		t.Fatal(err)
	}
	during := wsDial(t, "ws://"+addr+"/v1/ws")
	wsRoundTrip(t, during, `{"type":"unsubscribe","ref":"u","channel":"x"}`, "ack")

	// The server closes the stalled connection: the read ends (EOF, or a
	// reset after an error answer), well before this test's own deadline.
	stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(stalled)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the stalled handshake was not cut off")
	}
	if waited := time.Since(start); waited < timeout {
		t.Errorf("cut off after %v, before the timeout %v", waited, timeout)
	}
	wsRoundTrip(t, before, `{"type":"unsubscribe","ref":"u","channel":"x"}`, "ack")
	wsRoundTrip(t, during, `{"type":"unsubscribe","ref":"u","channel":"x"}`, "ack")
}

// TestReadHeaderTimeoutWithinReadTimeout: the header timeout never exceeds
// the whole request's.
func TestReadHeaderTimeoutWithinReadTimeout(t *testing.T) {
	g := startGateway(t, Config{HandshakeTimeout: 20 * time.Second, HTTPReadTimeout: 5 * time.Second}, nil)
	for _, srv := range []*http.Server{g.public.http, g.internal.http} {
		if srv.ReadHeaderTimeout != 5*time.Second {
			t.Errorf("ReadHeaderTimeout = %v, want HTTPReadTimeout's 5s", srv.ReadHeaderTimeout)
		}
	}
}

// TestPerIPLimitBehindProxy: behind a trusted proxy the public listener
// counts connections by the address X-Forwarded-For names; the internal
// listener has no per-address limit.
func TestPerIPLimitBehindProxy(t *testing.T) {
	var logs syncBuffer
	g := startGateway(t, Config{TrustedProxies: []string{"127.0.0.1"}, MaxConnectionsPerIP: 1, PublicRate: 1, PublicBurst: 1,
		Names: ws.SettingNames{MaxConnectionsPerIP: "TSLM_MAX_CONNECTIONS_PER_IP"}},
		slog.New(slog.NewTextHandler(&logs, nil)))
	public := "ws://" + g.PublicAddrs()[0].String() + "/v1/ws"
	from := func(addr string) http.Header { return http.Header{"X-Forwarded-For": {addr}} }

	a := dialWith(t, public, from("198.51.100.1"))
	status, body := refusedWith(t, public, from("198.51.100.1"))
	if status != http.StatusTooManyRequests || !strings.Contains(body, "TSLM_MAX_CONNECTIONS_PER_IP") || !strings.Contains(body, "198.51.100.1") {
		t.Errorf("second connection from 198.51.100.1: HTTP %d %q, want 429 naming the setting and the address", status, body)
	}
	dialWith(t, public, from("198.51.100.2"))

	internal := "ws://" + g.InternalAddrs()[0].String() + "/v1/ws"
	for range 3 {
		dialWith(t, internal, nil)
	}

	// The log of a connection closed by the server (here for its
	// command rate) names the client, not the proxy.
	for range 5 {
		if err := a.WriteMessage(websocket.TextMessage, []byte(`{"type":"unsubscribe","channel":"x"}`)); err != nil {
			break
		}
	}
	waitUntil(t, "a close logged", func() bool { return strings.Contains(logs.String(), "code=1008") })
	closed := ""
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "code=1008") {
			closed = l
		}
	}
	if !strings.Contains(closed, "msg=\"connection closed\"") || !strings.Contains(closed, "client=198.51.100.1") || !strings.Contains(closed, "by=server") {
		t.Errorf("the access log's close line does not name the client and the server as closer: %s", closed)
	}
}

// TestTLSListener: a listener given a certificate serves TLS WebSocket;
// replacing the files changes the certificate new connections get without
// a restart; a broken file keeps the last good one.
func TestTLSListener(t *testing.T) {
	one, two := tlstest.New(t, "one"), tlstest.New(t, "two")
	certFile, keyFile := tlstest.Write(t, t.TempDir(), one)
	var logs syncBuffer
	g := startGateway(t, Config{PublicTLSCert: certFile, PublicTLSKey: keyFile}, slog.New(slog.NewTextHandler(&logs, nil)))
	addr := g.PublicAddrs()[0].String()
	trust := tlstest.Pool(one, two)

	// served dials and round-trips, and returns the certificate's name.
	served := func() string {
		t.Helper()
		d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second,
			TLSClientConfig: &tls.Config{RootCAs: trust}}
		c, _, err := d.Dial("wss://"+addr+"/v1/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wsRoundTrip(t, c, `{"type":"unsubscribe","ref":"u","channel":"x"}`, "ack")
		return c.NetConn().(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "one" {
		t.Fatalf("served %q, want one", got)
	}
	if _, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/v1/ws", nil); err == nil {
		t.Error("plain WebSocket accepted on a TLS listener")
	}
	// The internal listener has no certificate: plain as before.
	wsDial(t, "ws://"+g.InternalAddrs()[0].String()+"/v1/ws")

	tlstest.Replace(t, certFile, two.CertPEM)
	tlstest.Replace(t, keyFile, two.KeyPEM)
	waitUntil(t, "new connections served the new certificate", func() bool { return served() == "two" })

	tlstest.Replace(t, certFile, []byte("broken"))
	waitUntil(t, "the broken file noticed", func() bool {
		served()
		return strings.Contains(logs.String(), "TLS certificate not reloaded")
	})
	if got := served(); got != "two" {
		t.Errorf("after a broken file, served %q, want two", got)
	}
}

func TestTLSFilesMustLoadAtStart(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := tlstest.Write(t, dir, tlstest.New(t, "x"))
	for _, tt := range []struct {
		cfg   Config
		field string
	}{
		{Config{PublicTLSCert: dir + "/missing.pem", PublicTLSKey: keyFile}, "PublicTLSCert"},
		{Config{InternalTLSCert: certFile, InternalTLSKey: certFile}, "InternalTLSCert"},
	} {
		tt.cfg.PublicAddrs, tt.cfg.InternalAddrs = []string{"127.0.0.1:0"}, []string{"127.0.0.1:0"}
		g, err := Start(t.Context(), tt.cfg, slog.New(slog.DiscardHandler))
		if err == nil {
			g.Shutdown(t.Context())
			t.Errorf("%s: started with an unreadable pair", tt.field)
			continue
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tt.field {
			t.Errorf("Start = %v, want a ConfigError for %s", err, tt.field)
		}
	}
}

func TestValidateNetworkSettings(t *testing.T) {
	tests := []struct {
		name      string
		set       func(*Config)
		wantField string
	}{
		{"defaults", func(*Config) {}, ""},
		{"proxies", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "192.0.2.1", "::1"} }, ""},
		{"proxy not an address", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "lb.internal"} }, "TrustedProxies"},
		{"budget of one queue", func(c *Config) { c.SendQueueBudget = int64(c.SendQueueBytes) }, ""},
		{"budget under one queue", func(c *Config) { c.SendQueueBudget = int64(c.SendQueueBytes) - 1 }, "SendQueueBudget"},
		{"per-IP negative", func(c *Config) { c.MaxConnectionsPerIP = -1 }, "MaxConnectionsPerIP"},
		{"handshake timeout negative", func(c *Config) { c.HandshakeTimeout = -time.Second }, "HandshakeTimeout"},
		{"certificate without key", func(c *Config) { c.PublicTLSCert = "/etc/cert.pem" }, "PublicTLSCert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{}.WithDefaults()
			tt.set(&cfg)
			err := cfg.Validate()
			var ce *ConfigError
			switch {
			case tt.wantField == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tt.wantField != "" && (!errors.As(err, &ce) || ce.Field != tt.wantField):
				t.Errorf("Validate: %v, want a ConfigError for %s", err, tt.wantField)
			}
		})
	}
}

// TestSendBudgetMetric: the budget both listeners share is exposed, its
// limit as configured.
func TestSendBudgetMetric(t *testing.T) {
	g := startGateway(t, Config{SendQueueBudget: 8 << 20}, nil)
	resp, err := http.Get("http://" + g.InternalAddrs()[0].String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`tslm_send_budget_bytes{state="limit"} 8.388608e+06`, `tslm_send_budget_bytes{state="used"} 0`} {
		if !strings.Contains(string(body), "\n"+want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func dialWith(t *testing.T, url string, header http.Header) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(url, header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// refusedWith dials expecting a refusal, and returns its status and body.
func refusedWith(t *testing.T, url string, header http.Header) (int, string) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(url, header)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s upgraded, want a refusal", url)
	}
	if resp == nil {
		t.Fatalf("dial %s: %v, want an HTTP refusal", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type syncBuffer = syncbuf.Buffer
