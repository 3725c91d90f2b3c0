package gateway

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/auth"
)

// Tests of the listeners a config file can name (listeners.go): further
// public-role listeners, per-listener limits and tokens, and what each
// listener serves.

// legacyDial connects to a listener's original endpoint, offering
// subprotocols.
func legacyDial(t *testing.T, addr string, subprotocols ...string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial("ws://"+addr+"/", nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial ws://%s/ offering %q: %v (HTTP %d)", addr, subprotocols, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// legacyRoundTrip sends a legacy command and reads the answer's one key.
func legacyRoundTrip(t *testing.T, c *websocket.Conn, frame string) (string, string) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	f := wsRead(t, c)
	for k, v := range f {
		s, _ := v.(string)
		return k, s
	}
	t.Fatalf("%s answered {}", frame)
	return "", ""
}

// TestFurtherListeners: a listener named in Listeners serves the original
// endpoint, /v1/ws, /v1/sse and /healthz under its own permissions, limits
// and tokens, and none of the internal listener's routes; with PublicOff
// no public listener opens; metrics label it by name.
func TestFurtherListeners(t *testing.T) {
	cfg := Config{
		PublicOff: true,
		Listeners: []Listener{
			{Name: "feed", Addrs: []string{"127.0.0.1:0"}, Allow: []string{"subscribe", "create"}, AuthTokens: []auth.Secret{"feed-token"},
				Limits: ListenerLimits{MaxConnections: 2, MaxDataBytes: 100}},
			{Name: "ops", Addrs: []string{"127.0.0.1:0", "127.0.0.1:0"}, Allow: []string{"publish"}, Rate: Unlimited},
		},
	}
	g := startGateway(t, cfg, nil)
	if addrs := g.PublicAddrs(); len(addrs) != 0 {
		t.Fatalf("public listener open at %v with PublicOff", addrs)
	}
	feed, ops := g.Addrs("feed")[0].String(), g.Addrs("ops")[1].String()
	internal := g.InternalAddrs()[0].String()
	if len(g.Addrs("ops")) != 2 || len(g.Addrs("nothing")) != 0 {
		t.Fatalf("Addrs: ops %v, nothing %v", g.Addrs("ops"), g.Addrs("nothing"))
	}

	c := legacyDial(t, feed, "feed-token")
	if c.Subprotocol() != "feed-token" {
		t.Errorf("answered %q, want the token", c.Subprotocol())
	}
	if k, v := legacyRoundTrip(t, c, `{"CreateChannel":"news"}`); k != "Success" {
		t.Fatalf("CreateChannel on feed: %s %q", k, v)
	}
	if k, v := legacyRoundTrip(t, c, `{"NotifyChannel":["news",{"Text":"hi"}]}`); k != "Error" || !strings.HasPrefix(v, "forbidden: ") {
		t.Errorf("NotifyChannel on feed, which allows subscribe and create: %s %q, want a forbidden error", k, v)
	}
	if status, _ := refusedWith(t, "ws://"+feed+"/v1/ws", nil); status != http.StatusUnauthorized {
		t.Errorf("/v1/ws on feed without its token: HTTP %d, want 401", status)
	}
	legacyDial(t, feed, "feed-token")
	if status, body := refusedWith(t, "ws://"+feed+"/v1/ws", http.Header{auth.ListenerTokenHeader: {"feed-token"}}); status != http.StatusServiceUnavailable {
		t.Errorf("a third connection to feed (max 2): HTTP %d %s, want 503", status, body)
	}

	o := legacyDial(t, ops)
	if k, v := legacyRoundTrip(t, o, `{"NotifyChannel":["news",{"Json":{"big":"`+strings.Repeat("x", 200)+`"}}]}`); k != "Success" {
		t.Errorf("a 200-byte publish on ops (feed's limit is 100, ops has the default): %s %q", k, v)
	}
	in := legacyDial(t, internal)
	if k, v := legacyRoundTrip(t, in, `{"CreateChannel":"other"}`); k != "Success" {
		t.Errorf("CreateChannel on the internal listener's original endpoint: %s %q", k, v)
	}

	for _, addr := range []string{feed, ops} {
		for _, path := range []string{"/metrics", "/readyz", "/v1/channels"} {
			if status, _ := getStatus(t, "http://"+addr+path); status != http.StatusNotFound {
				t.Errorf("GET %s on a public-role listener: %d, want 404", path, status)
			}
		}
		if status, _ := getStatus(t, "http://"+addr+"/healthz"); status != http.StatusOK {
			t.Errorf("GET /healthz on %s: %d", addr, status)
		}
	}
	families := scrape(t, internal)
	for _, sel := range []string{`tslm_connections{listener="feed"}`, `tslm_connections{listener="ops"}`, `tslm_connections{listener="internal"}`,
		`tslm_upgrades_refused_total{listener="feed",reason="token"}`, `tslm_upgrades_refused_total{listener="feed",reason="max_connections"}`} {
		if len(matching(families, sel)) != 1 {
			t.Errorf("no %s", sel)
		}
	}
	if len(matching(families, `tslm_connections{listener="public"}`)) != 0 {
		t.Error("metrics name a public listener that is not open")
	}
}

// TestPerListenerLimits: a listener's own limits replace the process-wide
// ones on it alone.
func TestPerListenerLimits(t *testing.T) {
	g := startGateway(t, Config{PublicAllow: []string{"subscribe", "publish"}, PublicLimits: ListenerLimits{MaxConnections: 1, MaxDataBytes: 50, MaxFrameBytes: 100}}, nil)
	pub, internal := g.PublicAddrs()[0].String(), g.InternalAddrs()[0].String()
	p := legacyDial(t, pub)
	if status, _ := refusedWith(t, "ws://"+pub+"/v1/ws", nil); status != http.StatusServiceUnavailable {
		t.Errorf("a second public connection (max 1): HTTP %d, want 503", status)
	}
	legacyDial(t, internal)
	in := legacyDial(t, internal)
	legacyRoundTrip(t, in, `{"CreateChannel":"c"}`)
	big := `{"NotifyChannel":["c",{"Text":"` + strings.Repeat("x", 60) + `"}]}`
	if k, v := legacyRoundTrip(t, in, big); k != "Success" {
		t.Errorf("a 62-byte publish on the internal listener: %s %q", k, v)
	}
	if k, v := legacyRoundTrip(t, p, `{"NotifyChannel":["c",{"Text":"`+strings.Repeat("x", 60)+`"}]}`); k != "Error" || !strings.HasPrefix(v, "too_large: ") {
		t.Errorf("a 62-byte publish on the public listener (max 50): %s %q, want too_large", k, v)
	}
	if err := p.WriteMessage(websocket.TextMessage, []byte(big+strings.Repeat(" ", 100))); err != nil {
		t.Fatal(err)
	}
	p.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := p.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
		t.Errorf("a frame over the public listener's 100 bytes: %v, want close 1009", err)
	}
}

// TestInternalTokensGuardEverythingButProbes: the internal listener's
// tokens guard its WebSocket, event streams and HTTP API; health,
// readiness and metrics stay open to probes and scrapers.
func TestInternalTokensGuardEverythingButProbes(t *testing.T) {
	g := startGateway(t, Config{InternalAuthTokens: []auth.Secret{"in-token"}}, nil)
	internal := "http://" + g.InternalAddrs()[0].String()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/v1/channels": 401, "/v1/sse?channel=c": 401, "/v1/nothing": 401} {
		if status, body := getStatus(t, internal+path); status != want {
			t.Errorf("GET %s: %d %s, want %d", path, status, body, want)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, internal+"/v1/channels", nil)
	req.Header.Set(auth.ListenerTokenHeader, "in-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/channels with the token: %d", resp.StatusCode)
	}
	ws := "ws://" + g.InternalAddrs()[0].String()
	for _, path := range []string{"/", "/v1/ws"} {
		if status, _ := refusedWith(t, ws+path, nil); status != http.StatusUnauthorized {
			t.Errorf("upgrade on %s without the token: %d, want 401", path, status)
		}
	}
	// The public listener has no tokens: it is open as before.
	legacyDial(t, g.PublicAddrs()[0].String())
}

func TestValidateListeners(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		wantField string
	}{
		{"fine", Config{Listeners: []Listener{{Name: "a", Addrs: []string{":9000"}}}}, ""},
		{"no name", Config{Listeners: []Listener{{Addrs: []string{":9000"}}}}, "Listeners"},
		{"reserved name", Config{Listeners: []Listener{{Name: "private", Addrs: []string{":9000"}}}}, "Listeners[private].Name"},
		{"same name", Config{Listeners: []Listener{{Name: "a", Addrs: []string{":9000"}}, {Name: "a", Addrs: []string{":9001"}}}}, "Listeners[a].Name"},
		{"no address", Config{Listeners: []Listener{{Name: "a"}}}, "Listeners[a].Addrs"},
		{"bad allow", Config{Listeners: []Listener{{Name: "a", Addrs: []string{":9000"}, Allow: []string{"delete"}}}}, "Listeners[a].Allow"},
		{"bad mode", Config{Listeners: []Listener{{Name: "a", Addrs: []string{":9000"}, Auth: "strict"}}}, "Listeners[a].Auth"},
		{"mode without credentials", Config{Listeners: []Listener{{Name: "a", Addrs: []string{":9000"}, Auth: "required"}}}, "Listeners[a].Auth"},
		{"cert alone", Config{Listeners: []Listener{{Name: "a", Addrs: []string{":9000"}, TLSCert: "x.crt"}}}, "Listeners[a].TLSCert"},
		{"bad token", Config{PublicAuthTokens: []auth.Secret{"good", "two words"}}, "PublicAuthTokens"},
		{"empty token", Config{InternalAuthTokens: []auth.Secret{""}}, "InternalAuthTokens"},
		{"token of a further listener", Config{Listeners: []Listener{{Name: "a", Addrs: []string{":9000"}, AuthTokens: []auth.Secret{"a,b"}}}}, "Listeners[a].AuthTokens"},
		{"data over own frame", Config{PublicLimits: ListenerLimits{MaxFrameBytes: 1000}}, "PublicLimits.MaxFrameBytes"},
		{"own data over frame", Config{InternalLimits: ListenerLimits{MaxDataBytes: 1 << 20}}, "InternalLimits.MaxDataBytes"},
		{"own data under own frame", Config{InternalLimits: ListenerLimits{MaxDataBytes: 1 << 20, MaxFrameBytes: 2 << 20}}, ""},
		{"negative limit", Config{Listeners: []Listener{{Name: "a", Addrs: []string{":9000"}, Limits: ListenerLimits{SendQueue: -1}}}}, "Listeners[a].Limits.SendQueue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg.WithDefaults()
			err := cfg.Validate()
			var ce *ConfigError
			switch {
			case tt.wantField == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantField != "" && (!errors.As(err, &ce) || ce.Field != tt.wantField):
				t.Errorf("Validate() = %v, want a ConfigError for %s", err, tt.wantField)
			}
			if err != nil && strings.Contains(err.Error(), "two words") {
				t.Errorf("the error quotes the token: %v", err)
			}
		})
	}
}

// TestListenerDefaultsDoNotShare: WithDefaults fills a copy of the
// listeners, not the caller's.
func TestListenerDefaultsDoNotShare(t *testing.T) {
	ls := []Listener{{Name: "a", Addrs: []string{":9000"}}}
	c := Config{Listeners: ls}.WithDefaults()
	if ls[0].Rate != 0 || c.Listeners[0].Rate != defaultPublicRate || c.Listeners[0].Allow[0] != "subscribe" {
		t.Errorf("caller's %+v, defaults' %+v", ls[0], c.Listeners[0])
	}
}
