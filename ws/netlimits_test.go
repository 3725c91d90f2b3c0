package ws

import (
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/tslm/tslm/internal/clientip"
	"github.com/tslm/tslm/internal/syncbuf"
)

// Tests of the per-address connection limit, over real sockets.

// perIPEntries returns how many addresses the server counts slots for.
func (ts *testServer) perIPEntries() int {
	ts.srv.mu.Lock()
	defer ts.srv.mu.Unlock()
	return len(ts.srv.perIP)
}

// TestMaxConnectionsPerIP: N connections from one address are allowed, the
// N+1st is refused before the upgrade with HTTP 429, and once one closes
// the next is accepted.
func TestMaxConnectionsPerIP(t *testing.T) {
	const n = 3
	ts := startServer(t, Config{MaxConnectionsPerIP: n, Names: SettingNames{MaxConnectionsPerIP: "TSLM_MAX_CONNECTIONS_PER_IP"}})
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = ts.dial(t)
		clients[i].roundTrip()
	}
	resp, body := ts.refused(t, nil, http.StatusTooManyRequests)
	if got := resp.Header.Get("Retry-After"); got != "5" {
		t.Errorf("Retry-After: %q, want 5", got)
	}
	if !strings.Contains(body, "TSLM_MAX_CONNECTIONS_PER_IP") || !strings.Contains(body, "3") || !strings.Contains(body, "127.0.0.1") {
		t.Errorf("body %q does not name the setting, its value and the address", body)
	}
	if got := ts.srv.Stats().Refused[RefusedMaxConnectionsPerIP]; got != 1 {
		t.Errorf("Stats().Refused[%s] = %d, want 1", RefusedMaxConnectionsPerIP, got)
	}
	for _, c := range clients {
		c.roundTrip() // the refusal touched none of them
	}

	clients[0].ws.Close()
	waitFor(t, "the closed connection to be forgotten", func() bool { return ts.srv.Stats().Open == n-1 })
	clients[0] = ts.dial(t)
	clients[0].roundTrip()
	// Counted once more, and released once only: still at the limit.
	ts.refused(t, nil, http.StatusTooManyRequests)

	// Every slot comes back: no address is left counted once all leave.
	for _, c := range clients {
		c.ws.Close()
	}
	waitFor(t, "every connection gone", func() bool { return ts.srv.Stats().Open == 0 })
	if got := ts.perIPEntries(); got != 0 {
		t.Errorf("%d addresses still counted after every connection closed", got)
	}
}

// TestMaxConnectionsPerIPBehindProxy: behind a trusted proxy, clients
// named in X-Forwarded-For are counted apart, and the proxy's own address
// is not what fills up.
func TestMaxConnectionsPerIPBehindProxy(t *testing.T) {
	proxies, err := clientip.Parse([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Config{MaxConnectionsPerIP: 1, ClientIP: proxies.ClientIP})
	from := func(addr string) http.Header { return http.Header{"X-Forwarded-For": {addr}} }

	a, _, err := ts.handshake(from("198.51.100.1"), ProtocolV1)
	if err != nil {
		t.Fatalf("first client: %v", err)
	}
	defer a.Close()
	ts.refused(t, from("198.51.100.1"), http.StatusTooManyRequests)
	// A client cannot get a fresh count by prepending a made-up address:
	// the proxy appends the real one, which is what counts.
	ts.refused(t, from("192.0.2.77, 198.51.100.1"), http.StatusTooManyRequests)
	b, _, err := ts.handshake(from("198.51.100.2"), ProtocolV1)
	if err != nil {
		t.Fatalf("second client, another address: %v", err)
	}
	defer b.Close()
	if got := ts.perIPEntries(); got != 2 {
		t.Errorf("%d addresses counted, want 2", got)
	}
}

// TestPerIPBeforeCapacity: the per-address check comes before the
// listener's capacity, so a full listener still tells a client that
// has its share which limit it hit; other clients get 503.
func TestPerIPBeforeCapacity(t *testing.T) {
	proxies, _ := clientip.Parse([]string{"127.0.0.1"})
	ts := startServer(t, Config{MaxConnections: 2, MaxConnectionsPerIP: 2, ClientIP: proxies.ClientIP})
	from := http.Header{"X-Forwarded-For": {"198.51.100.1"}}
	for range 2 {
		c, _, err := ts.handshake(from, ProtocolV1)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	ts.refused(t, from, http.StatusTooManyRequests)
	ts.refused(t, http.Header{"X-Forwarded-For": {"198.51.100.2"}}, http.StatusServiceUnavailable)
}

// TestFailedUpgradeFreesItsAddressSlot: a handshake that passes the early
// checks but fails in the upgrader gives its address's slot back.
func TestFailedUpgradeFreesItsAddressSlot(t *testing.T) {
	ts := startServer(t, Config{MaxConnectionsPerIP: 1})
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, ts.http.URL+"/v1/ws", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "not base64 of 16 bytes")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("bad key answered %d, want 400", resp.StatusCode)
		}
	}
	ts.dial(t).roundTrip()
}

// TestNoPerIPLimitByDefault: 0 means unlimited, and nothing is counted.
func TestNoPerIPLimitByDefault(t *testing.T) {
	ts := startServer(t, Config{})
	for range 5 {
		ts.dial(t).roundTrip()
	}
	if got := ts.perIPEntries(); got != 0 {
		t.Errorf("%d addresses counted without a limit", got)
	}
}

// TestClientIPInCloseLog: the log of a server-closed connection names
// the client's address as resolved, not only the proxy's.
func TestClientIPInCloseLog(t *testing.T) {
	var logs syncBuffer
	ts := startServer(t, Config{
		Allow:    OpAll,
		ClientIP: func(*http.Request) netip.Addr { return netip.MustParseAddr("198.51.100.9") },
		Logger:   newTextLogger(&logs),
	})
	c := ts.dial(t)
	ts.onlyConn(t).close(CloseInternal)
	c.expectClose(CodeInternal)
	waitFor(t, "the close logged", func() bool { return strings.Contains(logs.String(), "closing connection") })
	if !strings.Contains(logs.String(), "client=198.51.100.9") {
		t.Errorf("close log lacks the client's address: %s", logs.String())
	}
}

type syncBuffer = syncbuf.Buffer

func newTextLogger(b *syncBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }
