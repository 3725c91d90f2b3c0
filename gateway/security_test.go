package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/internal/oidctest"
)

func TestValidateCredentials(t *testing.T) {
	key := auth.APIKey{SHA256: sha256.Sum256([]byte("k")), Principal: auth.Principal{Subject: "app"}}
	rule := auth.ChannelRule{Pattern: auth.MustParsePattern("big.*"), MaxLen: 2_000_000}
	tests := []struct {
		name        string
		set         func(*Config)
		wantField   string // "" when valid
		wantRelated string
	}{
		{"off without credentials", func(*Config) {}, "", ""},
		{"public optional without credentials", func(c *Config) { c.PublicAuth = "optional" }, "PublicAuth", "OIDCIssuer"},
		{"internal required without credentials", func(c *Config) { c.InternalAuth = "required" }, "InternalAuth", "OIDCIssuer"},
		{"public required with an API key", func(c *Config) {
			c.PublicAuth = "required"
			c.Publishers.APIKeys = []auth.APIKey{key}
		}, "", ""},
		{"optional with an OpenID provider", func(c *Config) {
			c.PublicAuth = "optional"
			c.OIDCIssuer = "https://sso.example"
		}, "", ""},
		{"an API key without hash", func(c *Config) { c.Publishers.APIKeys = []auth.APIKey{{Principal: key.Principal}} }, "Publishers", ""},
		{"a mode that is none", func(c *Config) { c.InternalAuth = "sometimes" }, "InternalAuth", ""},
		{"a rule over the max_len limit", func(c *Config) { c.Channels = []auth.ChannelRule{rule} }, "Channels", "ChannelMaxLenLimit"},
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
			case tt.wantField != "" && (!errors.As(err, &ce) || ce.Field != tt.wantField || ce.Related != tt.wantRelated):
				t.Errorf("Validate: %v, want a ConfigError for %s related to %q", err, tt.wantField, tt.wantRelated)
			}
		})
	}
}

// TestStartWaitsForOIDCKeys: once Start returns, the token of a provider
// that answers is accepted on the very first connection (the keys arrive
// within milliseconds, and without the wait a good share of first
// connections were refused as unverifiable); a provider answering 503 does
// not hold the start up, and its tokens are refused meanwhile.
func TestStartWaitsForOIDCKeys(t *testing.T) {
	p := oidctest.Start(t, oidctest.Options{Algorithm: "ES256"})
	p.AddClient("reader", "reader-secret", []string{"prices.*"})
	token := p.Token(t, "reader")
	start := func() string {
		t.Helper()
		g, err := Start(t.Context(), Config{PublicAddrs: []string{"127.0.0.1:0"}, InternalAddrs: []string{"127.0.0.1:0"},
			OIDCIssuer: p.Issuer(), PublicAuth: "required"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			g.Shutdown(ctx)
		})
		return "ws://" + g.PublicAddrs()[0].String() + "/v1/ws"
	}
	status := func(url string) int {
		t.Helper()
		d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
		c, resp, err := d.Dial(url, http.Header{"Authorization": {"Bearer " + token}})
		if err == nil {
			c.Close()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	for i := range 20 {
		if got := status(start()); got != http.StatusSwitchingProtocols {
			t.Fatalf("start %d: the first connection with a valid token got HTTP %d, want 101", i, got)
		}
	}

	p.SetAvailable(false)
	began := time.Now()
	url := start()
	if waited := time.Since(began); waited >= oidcStartWait {
		t.Errorf("Start took %v with a provider answering 503: it should not wait for one that answered", waited)
	}
	if got := status(url); got != http.StatusUnauthorized {
		t.Fatalf("a token while the provider is down: HTTP %d, want 401", got)
	}
}

// TestSecurityWired: the gateway hands the credentials, the modes and
// the channel rules to both listeners and the HTTP API, and counts what
// it checks.
func TestSecurityWired(t *testing.T) {
	const apiKey = "a-long-random-api-key"
	g, err := Start(t.Context(), Config{
		PublicAddrs: []string{"127.0.0.1:0"}, InternalAddrs: []string{"127.0.0.1:0"},
		PublicAuth: "optional", InternalAuth: "optional",
		Publishers: auth.PublisherConfig{APIKeys: []auth.APIKey{{SHA256: sha256.Sum256([]byte(apiKey)),
			Principal: auth.Principal{Subject: "ops", Grants: []auth.Grant{{Ops: auth.AllOps, Patterns: []auth.Pattern{auth.MustParsePattern("*")}}}}}}},
		Channels: []auth.ChannelRule{{Pattern: auth.MustParsePattern("prices.*"), MaxLen: 7, Retention: time.Minute, Anonymous: auth.Ops(auth.OpSubscribe)}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	}()
	internal, public := "http://"+g.InternalAddrs()[0].String(), "ws://"+g.PublicAddrs()[0].String()+"/v1/ws"
	do := func(method, url, key string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	// HTTP API: checked, and the rule's defaults shape the new channel.
	if status, body := do(http.MethodPut, internal+"/v1/channels/prices.eur", ""); status != http.StatusUnauthorized {
		t.Fatalf("anonymous create: %d %s", status, body)
	}
	if status, body := do(http.MethodPut, internal+"/v1/channels/prices.eur", "wrong"); status != http.StatusUnauthorized {
		t.Fatalf("create with a wrong key: %d %s", status, body)
	}
	if status, body := do(http.MethodPut, internal+"/v1/channels/prices.eur", apiKey); status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	_, body := do(http.MethodGet, internal+"/v1/channels/prices.eur", "") // anonymous subscribe
	var info struct {
		MaxLen    int64  `json:"max_len"`
		Retention string `json:"retention"`
	}
	if err := json.Unmarshal([]byte(body), &info); err != nil || info.MaxLen != 7 || info.Retention != "1m0s" {
		t.Fatalf("info %s, want the rule's max_len 7 and retention 1m", body)
	}

	// Public WebSocket: anonymous clients get what the rule allows.
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
	if c, resp, err := d.Dial(public, http.Header{"Authorization": {"Bearer wrong"}}); err == nil || resp.StatusCode != http.StatusUnauthorized {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial with a wrong key: %v", err)
	}
	c := wsDial(t, public)
	wsRoundTrip(t, c, `{"type":"subscribe","ref":"1","channel":"prices.eur"}`, "ack")
	if f := wsRoundTrip(t, c, `{"type":"create","ref":"2","channel":"other"}`, "error"); f["code"] != "forbidden" {
		t.Errorf("public create: %v, want forbidden (TSLM_PUBLIC_ALLOW)", f)
	}
	if f := wsRoundTrip(t, c, `{"type":"auth","ref":"3","token":"`+apiKey+`"}`, "ack"); f["subject"] != "ops" {
		t.Errorf("auth: %v", f)
	}

	resp, err := http.Get(internal + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`tslm_auth_total{listener="internal",result="ok"} 1`,
		`tslm_auth_total{listener="internal",result="refused"} 1`,
		`tslm_auth_total{listener="public",result="ok"} 1`,
		`tslm_auth_total{listener="public",result="refused"} 1`,
		`tslm_upgrades_refused_total{listener="public",reason="unauthorized"} 1`,
	} {
		if !strings.Contains(string(metrics), "\n"+want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
