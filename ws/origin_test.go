package ws

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

func TestOrigins(t *testing.T) {
	const foreign = "https://evil.example"
	own := func(ts *testServer) string { return ts.http.URL } // http://127.0.0.1:port
	ownWith := func(scheme string) func(*testServer) string {
		return func(ts *testServer) string { return scheme + strings.TrimPrefix(ts.http.URL, "http") }
	}
	fixed := func(o string) func(*testServer) string { return func(*testServer) string { return o } }
	tests := []struct {
		name    string
		allowed []string
		origin  func(ts *testServer) string // "" sends no Origin
		ok      bool
	}{
		{name: "no Origin", ok: true, origin: fixed("")},
		{name: "own origin", ok: true, origin: own},
		{name: "own host over https (TLS ended by a proxy)", ok: true, origin: ownWith("https")},
		{name: "own host, upper-case scheme", ok: true, origin: ownWith("HTTP")},
		{name: "own host, another scheme", origin: ownWith("ftp")},
		{name: "own host, another port", origin: func(ts *testServer) string { return "http://127.0.0.1:1" }},
		{name: "foreign origin refused by default", origin: fixed(foreign)},
		{name: "malformed origin refused", origin: fixed("::not a url")},
		{name: "opaque origin refused", origin: fixed("null")},
		{name: "star allows any", allowed: []string{"*"}, ok: true, origin: fixed(foreign)},
		{name: "listed origin", allowed: []string{"https://other.example", foreign}, ok: true, origin: fixed(foreign)},
		{name: "unlisted origin", allowed: []string{"https://other.example"}, origin: fixed(foreign)},
		{name: "listed host, other scheme", allowed: []string{foreign}, origin: fixed("http://evil.example")},
		{name: "listed host, other port", allowed: []string{foreign}, origin: fixed("https://evil.example:8443")},
		{name: "listed with its default port", allowed: []string{"https://evil.example:443"}, ok: true, origin: fixed(foreign)},
		{name: "sent with its default port", allowed: []string{foreign}, ok: true, origin: fixed("https://evil.example:443")},
		{name: "host case ignored", allowed: []string{"https://Evil.Example"}, ok: true, origin: fixed("https://EVIL.example")},
		{name: "http default port", allowed: []string{"http://localhost:80"}, ok: true, origin: fixed("http://localhost")},
		{name: "IPv6 literal", allowed: []string{"http://[::1]:3000"}, ok: true, origin: fixed("http://[::1]:3000")},
		{name: "malformed entry matches nothing", allowed: []string{"evil.example"}, origin: fixed(foreign)},
		{name: "no Origin with a list", allowed: []string{"https://other.example"}, ok: true, origin: fixed("")},
		{name: "own origin with a list", allowed: []string{"https://other.example"}, ok: true, origin: own},
		{name: "listed origin with spaces", allowed: []string{"https://other.example", " " + foreign + " "}, ok: true, origin: fixed(foreign)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, Config{AllowedOrigins: tt.allowed, Names: SettingNames{AllowedOrigins: "TSLM_ALLOWED_ORIGINS"}})
			h := http.Header{}
			origin := tt.origin(ts)
			if origin != "" {
				h.Set("Origin", origin)
			}
			if !tt.ok {
				_, body := ts.refused(t, h, http.StatusForbidden)
				if !strings.Contains(body, origin) || !strings.Contains(body, "add it to TSLM_ALLOWED_ORIGINS") {
					t.Errorf("403 body %q does not name the origin and the setting", body)
				}
				if got := ts.srv.Stats().Refused[RefusedOrigin]; got != 1 {
					t.Errorf("Stats().Refused[%s] = %d, want 1", RefusedOrigin, got)
				}
				return
			}
			conn, resp, err := ts.handshake(h, ProtocolV1)
			if err != nil {
				t.Fatalf("dial: %v (response %v), want an upgrade", err, resp)
			}
			c := &client{t: t, ws: conn}
			t.Cleanup(func() { conn.Close() })
			c.roundTrip()
		})
	}
}

func TestParseOrigins(t *testing.T) {
	tests := []struct {
		entry string
		ok    bool
	}{
		{"*", true},
		{"", true}, // a trailing comma
		{"https://example.com", true},
		{"http://localhost:3000", true},
		{"HTTPS://Example.COM:443", true},
		{" https://example.com ", true},
		{"http://[::1]:8080", true},
		{"http://[::1]", true},
		{"example.com", false},
		{"localhost:3000", false},
		{"//example.com", false},
		{"ws://example.com", false},
		{"ftp://example.com", false},
		{"https://example.com/", false},
		{"https://example.com/app", false},
		{"https://example.com?x=1", false},
		{"https://example.com?", false},
		{"https://example.com#top", false},
		{"https://user@example.com", false},
		{"https://user:pw@example.com", false},
		{"https://*.example.com", false},
		{"https://example.*", false},
		{"*.example.com", false},
		{"**", false},
		{"https://example.com:0", false},
		{"https://example.com:65536", false},
		{"https://example.com:http", false},
		{"https://", false},
		{"https:example.com", false},
		{"null", false},
	}
	for _, tt := range tests {
		t.Run(tt.entry, func(t *testing.T) {
			err := ParseOrigins([]string{"https://fine.example", tt.entry})
			if tt.ok {
				if err != nil {
					t.Errorf("ParseOrigins(%q) = %v, want nil", tt.entry, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseOrigins(%q) accepted it", tt.entry)
			}
			// The message quotes the entry and shows what is expected.
			for _, want := range []string{strconv.Quote(tt.entry), "https://example.com", "http://localhost:3000", "*"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not show the expected form %s", err, want)
				}
			}
		})
	}
}
