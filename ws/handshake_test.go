package ws

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/broker"
)

// Tests of the original endpoint and of listener tokens: docs/protocol.md
// "Connecting", "Listener tokens" and "The tslm.legacy subprotocol".

// upgradeAt dials url offering subprotocols with header, without failing.
func upgradeAt(url string, header http.Header, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: readTimeout}
	return d.Dial(url, header)
}

// dialAt dials url and checks the subprotocol the server answered.
func dialAt(t testing.TB, url string, header http.Header, answered string, subprotocols ...string) *client {
	t.Helper()
	conn, resp, err := upgradeAt(url, header, subprotocols...)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s offering %q: %v (HTTP %d)", url, subprotocols, err, status)
	}
	t.Cleanup(func() { conn.Close() })
	if got := conn.Subprotocol(); got != answered {
		t.Errorf("dial %s offering %q: answered subprotocol %q, want %q", url, subprotocols, got, answered)
	}
	return &client{t: t, ws: conn}
}

// refusedAt dials url expecting status and returns the answer and body.
func refusedAt(t testing.TB, url string, header http.Header, status int, subprotocols ...string) (*http.Response, string) {
	t.Helper()
	conn, resp, err := upgradeAt(url, header, subprotocols...)
	if err == nil {
		conn.Close()
		t.Fatalf("dial %s offering %q: upgraded, want HTTP %d", url, subprotocols, status)
	}
	if resp == nil || resp.StatusCode != status {
		t.Fatalf("dial %s offering %q: %v, response %v; want HTTP %d", url, subprotocols, err, resp, status)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// speaksLegacy checks that c speaks the original protocol: a legacy
// command is answered in the legacy framing.
func (c *client) speaksLegacy(channel string) {
	c.t.Helper()
	c.send(`{"CreateChannel":"` + channel + `"}`)
	f := c.read()
	if s, _ := f["Success"].(string); !strings.HasPrefix(s, "Channel "+channel) {
		c.t.Fatalf("CreateChannel answered %v, want {\"Success\":\"Channel %s …\"}", f, channel)
	}
}

// speaksV1 checks that c speaks v1.
func (c *client) speaksV1(channel string) {
	c.t.Helper()
	c.send(`{"type":"create","ref":"r","channel":"` + channel + `"}`)
	c.expect(map[string]any{"type": "ack", "ref": "r", "channel": channel, "created": anyBool})
}

var anyBool = matcher{"true or false", func(v any) bool { _, ok := v.(bool); return ok }}

// TestOriginalEndpoint: an upgrade on / speaks tslm.legacy, offering no
// subprotocol (the original client) or tslm.legacy; tslm.v1 and unknown
// subprotocols are refused with 400, without repeating what was offered.
func TestOriginalEndpoint(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	t.Run("no subprotocol", func(t *testing.T) {
		dialAt(t, ts.root, nil, "").speaksLegacy("a")
	})
	t.Run("tslm.legacy", func(t *testing.T) {
		dialAt(t, ts.root, nil, ProtocolLegacy, ProtocolLegacy).speaksLegacy("b")
	})
	t.Run("tslm.legacy among others", func(t *testing.T) {
		dialAt(t, ts.root, nil, ProtocolLegacy, "chat", ProtocolLegacy).speaksLegacy("c")
	})
	t.Run("tslm.v1", func(t *testing.T) {
		_, body := refusedAt(t, ts.root, nil, http.StatusBadRequest, ProtocolV1)
		if !strings.Contains(body, "/v1/ws") {
			t.Errorf("body %q does not point to /v1/ws", body)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		_, body := refusedAt(t, ts.root, nil, http.StatusBadRequest, "maybe-a-token")
		if strings.Contains(body, "maybe-a-token") || !strings.Contains(body, "original TSLM protocol") {
			t.Errorf("body %q: want it to say what the endpoint speaks, and not to repeat the offer", body)
		}
	})
	t.Run("not an upgrade", func(t *testing.T) {
		resp, err := http.Get(ts.http.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET / without an upgrade: HTTP %d, want 400", resp.StatusCode)
		}
	})
	t.Run("v1 unchanged", func(t *testing.T) {
		dialAt(t, ts.url, nil, "").speaksV1("d")
		dialAt(t, ts.url, nil, ProtocolV1, ProtocolV1).speaksV1("e")
		dialAt(t, ts.url, nil, ProtocolLegacy, ProtocolLegacy).speaksLegacy("f")
	})
	if got := ts.srv.Stats().Refused[RefusedSubprotocol]; got != 2 {
		t.Errorf("Stats().Refused[%s] = %d, want 2", RefusedSubprotocol, got)
	}
}

// TestTooManySubprotocols: an offer longer than 16 is refused before any
// is looked at.
func TestTooManySubprotocols(t *testing.T) {
	ts := startServer(t, Config{Tokens: auth.NewListenerTokens([]auth.Secret{"s3cret-token"})})
	offer := make([]string, 17)
	for i := range offer {
		offer[i] = "p" + strings.Repeat("x", i)
	}
	offer[16] = "s3cret-token"
	if _, body := refusedAt(t, ts.root, nil, http.StatusBadRequest, offer...); !strings.Contains(body, "at most 16") {
		t.Errorf("body %q", body)
	}
	dialAt(t, ts.root, nil, "s3cret-token", offer[1:]...)
}

// TestListenerTokens: on a listener with tokens, every way in (the
// original endpoint, /v1/ws, /v1/sse) needs one, as a subprotocol, in the
// TSLM-Auth-Token header or, for event streams, the auth_token parameter;
// the server answers a token offered as the only known subprotocol with
// the token itself, as browsers require.
func TestListenerTokens(t *testing.T) {
	const token, other = "s3cret-token", "second.token~2"
	var logs syncBuffer
	ts := startServer(t, Config{
		Allow: OpAll, AccessLog: true,
		Tokens: auth.NewListenerTokens([]auth.Secret{token, other}),
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	ts.create(t, "c", 0)
	header := func(v ...string) http.Header { return http.Header{auth.ListenerTokenHeader: v} }

	admitted := []struct {
		name     string
		url      string
		header   http.Header
		offer    []string
		answered string
		legacy   bool
	}{
		{"root, token as the subprotocol", ts.root, nil, []string{token}, token, true},
		{"root, the other token", ts.root, nil, []string{other}, other, true},
		{"root, tslm.legacy and a token", ts.root, nil, []string{token, ProtocolLegacy}, ProtocolLegacy, true},
		{"root, token in the header", ts.root, header(token), nil, "", true},
		{"root, header and tslm.legacy", ts.root, header(other), []string{ProtocolLegacy}, ProtocolLegacy, true},
		{"v1, token as the subprotocol", ts.url, nil, []string{token}, token, false},
		{"v1, tslm.v1 and a token", ts.url, nil, []string{token, ProtocolV1}, ProtocolV1, false},
		{"v1, tslm.legacy and a token", ts.url, nil, []string{ProtocolLegacy, other}, ProtocolLegacy, true},
		{"v1, token in the header", ts.url, header(token), []string{ProtocolV1}, ProtocolV1, false},
	}
	for _, tt := range admitted {
		t.Run(tt.name, func(t *testing.T) {
			c := dialAt(t, tt.url, tt.header, tt.answered, tt.offer...)
			if tt.legacy {
				c.speaksLegacy("c")
			} else {
				c.speaksV1("c")
			}
		})
	}

	refused := []struct {
		name   string
		url    string
		header http.Header
		offer  []string
		says   string
	}{
		{"root, nothing", ts.root, nil, nil, "no listener token"},
		{"root, tslm.legacy only", ts.root, nil, []string{ProtocolLegacy}, "no listener token"},
		{"root, a wrong token", ts.root, nil, []string{"s3cret-tokem"}, "refused"},
		{"root, a token's prefix", ts.root, nil, []string{"s3cret"}, "refused"},
		{"root, a wrong header", ts.root, header("s3cret-tokem"), nil, "refused"},
		{"root, two headers", ts.root, header(token, token), nil, "refused"},
		{"v1, nothing", ts.url, nil, nil, "no listener token"},
		{"v1, tslm.v1 only", ts.url, nil, []string{ProtocolV1}, "no listener token"},
		{"v1, tslm.v1 and a wrong token", ts.url, nil, []string{ProtocolV1, "S3CRET-TOKEN"}, "refused"},
	}
	for i, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := refusedAt(t, tt.url, tt.header, http.StatusUnauthorized, tt.offer...)
			if !strings.Contains(body, tt.says) {
				t.Errorf("body %q, want it to say %q", body, tt.says)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != auth.ListenerTokenChallenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, auth.ListenerTokenChallenge)
			}
			if got := ts.srv.Stats().Refused[RefusedToken]; got != int64(i+1) {
				t.Errorf("Stats().Refused[%s] = %d, want %d", RefusedToken, got, i+1)
			}
		})
	}

	t.Run("event streams", func(t *testing.T) {
		before := ts.srv.Stats().Refused[RefusedToken]
		for _, c := range []struct {
			name   string
			query  string
			header http.Header
			says   string
		}{
			{"nothing", "channel=c", nil, "no listener token"},
			{"wrong parameter", "channel=c&auth_token=nope", nil, "refused"},
			{"wrong header", "channel=c", header("nope"), "refused"},
			{"both", "channel=c&auth_token=" + token, header(token), "more than one"},
			{"twice", "channel=c&auth_token=" + token + "&auth_token=" + token, nil, "more than one"},
		} {
			resp, msg := ts.refusedSSE(t, c.query, c.header, http.StatusUnauthorized, broker.CodeUnauthorized)
			if !strings.Contains(msg, c.says) || resp.Header.Get("WWW-Authenticate") != auth.ListenerTokenChallenge {
				t.Errorf("%s: %q, WWW-Authenticate %q; want it to say %q", c.name, msg, resp.Header.Get("WWW-Authenticate"), c.says)
			}
		}
		if got := ts.srv.Stats().Refused[RefusedToken] - before; got != 5 {
			t.Errorf("%d event streams counted as refused for their token, want 5", got)
		}
		for _, s := range []*sseStream{ts.sse(t, "channel=c&auth_token="+other, nil), ts.sse(t, "channel=c", header(token))} {
			if ev := s.next(); ev.Event != "subscribed" {
				t.Errorf("stream began with %+v", ev)
			}
			s.resp.Body.Close()
		}
	})

	// Wait for every connection's close to be logged before reading.
	ts.srv.Shutdown(t.Context())
	if out := logs.String(); strings.Contains(out, token) || strings.Contains(out, other) || strings.Contains(out, "auth_token") {
		t.Errorf("the log holds a token:\n%s", out)
	}
}

// TestListenerTokensAreNoCredentials: a token admits a connection but is
// no principal, so a listener that requires credentials still does.
func TestListenerTokensAreNoCredentials(t *testing.T) {
	kit := newAuthKit(t)
	ts := startServer(t, Config{
		Allow: OpAll, AuthMode: auth.ModeRequired, Authenticator: kit.authenticator(),
		Tokens: auth.NewListenerTokens([]auth.Secret{"s3cret-token"}),
	})
	c := dialAt(t, ts.root, nil, "s3cret-token", "s3cret-token")
	c.send(`{"Subscribe":"c"}`)
	c.expectLegacyError("unauthorized")
}
