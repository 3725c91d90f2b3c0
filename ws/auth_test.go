package ws

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/broker"
)

// Tests of docs/protocol.md "Authentication" and "Permissions" over real
// sockets, with a real auth.Authenticator over a real PublisherVerifier:
// API keys (any operations, any expiry) and Ed25519 publisher tokens.

// authKit holds a test's credentials: API keys by name, and an Ed25519
// key whose tokens the authenticator accepts as kid "k1".
type authKit struct {
	t     testing.TB
	ed    ed25519.PrivateKey
	cfg   auth.PublisherConfig
	keys  map[string]string // name → API key
	authn *auth.Authenticator
}

func newAuthKit(t testing.TB) *authKit {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &authKit{t: t, ed: priv, keys: map[string]string{},
		cfg: auth.PublisherConfig{JWTKeys: []auth.JWTKey{{ID: "k1", Ed25519: pub}}}}
}

// grant is g's operations on the patterns.
func grant(ops auth.OpSet, patterns ...string) auth.Grant {
	g := auth.Grant{Ops: ops}
	for _, p := range patterns {
		g.Patterns = append(g.Patterns, auth.MustParsePattern(p))
	}
	return g
}

// apiKey adds an API key named name (its key is kit.keys[name]) standing
// for subject, expiring at expires (zero: never), and returns it. Keys
// are added before authenticator.
func (k *authKit) apiKey(name, subject string, expires time.Time, grants ...auth.Grant) string {
	key := rand.Text()
	k.keys[name] = key
	k.cfg.APIKeys = append(k.cfg.APIKeys, auth.APIKey{SHA256: sha256.Sum256([]byte(key)),
		Principal: auth.Principal{Subject: subject, Grants: grants, Expires: expires}})
	return key
}

// token signs a publisher token for sub with grants (create, publish,
// serve lists), expiring at exp.
func (k *authKit) token(sub string, exp time.Time, grants map[string][]string) string {
	k.t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"sub": sub, "exp": exp.Unix(), "tslm": grants})
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(k.ed)
	if err != nil {
		k.t.Fatal(err)
	}
	return s
}

func (k *authKit) authenticator() *auth.Authenticator {
	k.t.Helper()
	if k.authn == nil {
		v, err := auth.NewPublisherVerifier(k.cfg)
		if err != nil {
			k.t.Fatal(err)
		}
		k.authn = auth.NewAuthenticator(v, nil)
	}
	return k.authn
}

// policy makes a Policy of rules.
func policy(t testing.TB, rules ...auth.ChannelRule) *auth.Policy {
	t.Helper()
	p, err := auth.NewPolicy(rules)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// bearerHeader is an Authorization header presenting credential.
func bearerHeader(credential string) http.Header {
	return http.Header{"Authorization": {"Bearer " + credential}}
}

// dialWith connects with header, offering subprotocol (tslm.v1 when "").
func (ts *testServer) dialWith(t testing.TB, header http.Header, subprotocol string) *client {
	t.Helper()
	if subprotocol == "" {
		subprotocol = ProtocolV1
	}
	conn, resp, err := ts.handshake(header, subprotocol)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial with %v: %v (HTTP %d)", header, err, status)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, ws: conn}
}

// authFrame sends an auth frame with credential and returns the answer.
func (c *client) authFrame(ref, credential string) map[string]any {
	c.t.Helper()
	c.send(map[string]any{"type": "auth", "ref": ref, "token": credential})
	return c.read()
}

// expectMessage reads an error frame with code whose message contains
// each of parts.
func (c *client) expectErrorSaying(ref, code string, parts ...string) map[string]any {
	c.t.Helper()
	f := c.expectError(ref, code)
	for _, p := range parts {
		if !strings.Contains(f["message"].(string), p) {
			c.t.Fatalf("error %v does not say %q", f, p)
		}
	}
	return f
}

// checkNoWSLeaks fails t if goroutines of this package, other than the
// test's own, outlive it (its cleanups, servers' Shutdown included, run
// first).
func checkNoWSLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			buf := make([]byte, 1<<22)
			buf = buf[:runtime.Stack(buf, true)]
			var leaked []string
			for _, g := range strings.Split(string(buf), "\n\n") {
				if strings.Contains(g, "github.com/tslm/tslm/ws.(*") && !strings.Contains(g, "testing.tRunner") {
					leaked = append(leaked, g)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d ws goroutines left running:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

var all = auth.AllOps

// TestUpgradeCredentials: on a listener that checks credentials, an
// Authorization header is checked before the upgrade, last of all checks;
// refused, it is a 401 with a challenge and a body saying why.
func TestUpgradeCredentials(t *testing.T) {
	checkNoWSLeaks(t)
	kit := newAuthKit(t)
	good := kit.apiKey("good", "alice", time.Time{}, grant(auth.Ops(auth.OpSubscribe), "*"))
	expired := kit.apiKey("old", "bob", time.Now().Add(-time.Minute), grant(all, "*"))
	cfg := Config{Allow: OpAll, AuthMode: auth.ModeOptional, Authenticator: kit.authenticator(), MaxConnections: 2}
	ts := startServer(t, cfg)
	ts.create(t, "c", 0)

	t.Run("accepted", func(t *testing.T) {
		c := ts.dialWith(t, bearerHeader(good), "")
		c.subscribe("c", nil) // granted, where anonymous clients are refused
		c.ws.Close()
		// The listener holds 2: the refusals below must meet the
		// credentials check, not a full listener.
		waitFor(t, "the connection gone", func() bool { return ts.srv.Stats().Open == 0 })
	})
	t.Run("lower-case scheme", func(t *testing.T) {
		c := ts.dialWith(t, http.Header{"Authorization": {"bearer " + good}}, "")
		c.subscribe("c", nil)
		c.ws.Close()
		waitFor(t, "the connection gone", func() bool { return ts.srv.Stats().Open == 0 })
	})
	refusals := []struct {
		name   string
		header http.Header
		says   string
	}{
		{"unknown key", bearerHeader("not-a-key"), "API key not recognized"},
		{"expired key", bearerHeader(expired), "expired"},
		{"forged token", bearerHeader(kit.token("alice", time.Now().Add(time.Hour), nil)[:40] + ".e30.c2ln"), "token"},
		{"basic", http.Header{"Authorization": {"Basic YTpi"}}, `must be  Bearer <credential>`},
		{"no credential", http.Header{"Authorization": {"Bearer "}}, `must be  Bearer <credential>`},
		{"two headers", http.Header{"Authorization": {"Bearer " + good, "Bearer " + good}}, `must be  Bearer <credential>`},
	}
	for i, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			resp, body := ts.refused(t, r.header, http.StatusUnauthorized)
			challenge := resp.Header.Get("WWW-Authenticate")
			if !strings.HasPrefix(challenge, `Bearer error="invalid_token", error_description="`) || !strings.Contains(challenge, r.says) {
				t.Errorf("WWW-Authenticate %q, want an invalid_token challenge saying %q", challenge, r.says)
			}
			// The challenge's quoted string holds no quotes; the body
			// does.
			if says := strings.ReplaceAll(r.says, "  Bearer <credential>", ` "Bearer <credential>"`); !strings.Contains(body, says) {
				t.Errorf("body %q does not say %q", body, says)
			}
			if got := ts.srv.Stats().Refused[RefusedUnauthorized]; got != int64(i+1) {
				t.Errorf("refused as unauthorized: %d, want %d", got, i+1)
			}
		})
	}
	if st := ts.srv.Stats(); st.AuthOK != 2 || st.AuthRefused != int64(len(refusals)) {
		t.Errorf("auth stats ok %d refused %d, want 2 and %d", st.AuthOK, st.AuthRefused, len(refusals))
	}

	t.Run("checked last", func(t *testing.T) {
		bad := bearerHeader("not-a-key")
		bad.Set("Origin", "https://evil.example")
		ts.refused(t, bad, http.StatusForbidden)
		// A full listener refuses before looking at credentials.
		a, b := ts.dial(t), ts.dial(t)
		waitFor(t, "two connections", func() bool { return ts.srv.Stats().Open == 2 })
		_, body := ts.refused(t, bearerHeader("not-a-key"), http.StatusServiceUnavailable)
		if !strings.Contains(body, "MaxConnections") {
			t.Errorf("503 body %q", body)
		}
		if got := ts.srv.Stats().AuthRefused; got != int64(len(refusals)) {
			t.Errorf("credentials checked after an earlier refusal: %d refused, want %d", got, len(refusals))
		}
		a.ws.Close()
		b.ws.Close()
		waitFor(t, "connections gone", func() bool { return ts.srv.Stats().Open == 0 })
	})

	t.Run("ignored when off", func(t *testing.T) {
		off := startServer(t, Config{Allow: OpAll, Authenticator: kit.authenticator()})
		off.create(t, "c", 0)
		c := off.dialWith(t, bearerHeader("not-a-key"), "")
		c.subscribe("c", nil)
		if st := off.srv.Stats(); st.AuthOK+st.AuthRefused != 0 {
			t.Errorf("a listener with auth off checked credentials: %+v", st)
		}
	})
}

// TestAuthFrame: the auth frame authenticates at any time, is refused
// with unauthorized (the connection keeps what it had), and keeps a
// connection to one principal.
func TestAuthFrame(t *testing.T) {
	checkNoWSLeaks(t)
	kit := newAuthKit(t)
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	alice := kit.apiKey("alice", "alice", exp, grant(auth.Ops(auth.OpSubscribe), "a.*"))
	aliceForever := kit.apiKey("alice2", "alice", time.Time{}, grant(auth.Ops(auth.OpSubscribe), "a.*"))
	bob := kit.apiKey("bob", "bob", time.Time{}, grant(all, "*"))
	old := kit.apiKey("old", "alice", time.Now().Add(-time.Second), grant(all, "*"))
	ts := startServer(t, Config{Allow: OpAll, AuthMode: auth.ModeOptional, Authenticator: kit.authenticator()})
	ts.create(t, "a.1", 0)
	ts.create(t, "b.1", 0)
	c := ts.dial(t)

	c.send(map[string]any{"type": "subscribe", "ref": "s0", "channel": "a.1"})
	c.expectErrorSaying("s0", "unauthorized", `subscribe on channel "a.1" needs credentials`, "send an auth frame")

	refuse := func(ref, token, code, says string) {
		t.Helper()
		c.send(map[string]any{"type": "auth", "ref": ref, "token": token})
		c.expectErrorSaying(ref, code, says)
	}
	// Refused without a principal: still anonymous.
	refuse("x1", "not-a-key", "unauthorized", "API key not recognized")
	refuse("x2", old, "unauthorized", "expired")
	refuse("x3", kit.token("alice", time.Now().Add(-time.Hour), map[string][]string{"publish": {"*"}}), "unauthorized", "expired")
	c.send(map[string]any{"type": "auth", "ref": "x4"})
	c.expectErrorSaying("x4", "bad_request", `missing field "token"`)
	c.send(map[string]any{"type": "subscribe", "ref": "s1", "channel": "a.1"})
	c.expectError("s1", "unauthorized")

	// Accepted: the ack names the subject and the expiry.
	if got := c.authFrame("a1", alice); diff(got, map[string]any{"type": "ack", "ref": "a1", "subject": "alice", "expires": exp.UTC().Format(time.RFC3339)}) != "" {
		t.Fatalf("auth answered %v", got)
	}
	c.subscribe("a.1", nil)
	c.send(map[string]any{"type": "subscribe", "ref": "s2", "channel": "b.1"})
	c.expectErrorSaying("s2", "forbidden", `subscribe on channel "b.1" is not granted to "alice"`)

	// Refused with a principal: the connection keeps it.
	refuse("x5", "not-a-key", "unauthorized", "API key not recognized")
	refuse("x6", bob, "forbidden", "a connection keeps the principal it authenticated as: open a new connection")
	c.send(map[string]any{"type": "subscribe", "ref": "s3", "channel": "b.1"})
	c.expectError("s3", "forbidden") // not bob's grants
	c.send(map[string]any{"type": "unsubscribe", "ref": "u", "channel": "a.1"})
	c.expect(map[string]any{"type": "ack", "ref": "u", "channel": "a.1"})
	c.subscribe("a.1", nil) // still alice's

	// Twice, the same principal: a credential that never expires has no
	// expires.
	if got := c.authFrame("a2", aliceForever); diff(got, map[string]any{"type": "ack", "ref": "a2", "subject": "alice"}) != "" {
		t.Fatalf("second auth answered %v", got)
	}
	c.roundTrip()
	// bob's credential was valid, but the auth was refused all the same.
	if st := ts.srv.Stats(); st.AuthOK != 2 || st.AuthRefused != 5 || st.Errors[broker.CodeUnauthorized] != 6 {
		t.Errorf("stats %+v", st)
	}

	t.Run("listener without credentials", func(t *testing.T) {
		off := startServer(t, Config{Allow: OpAll, Authenticator: kit.authenticator()})
		c := off.dial(t)
		c.send(map[string]any{"type": "auth", "ref": "a", "token": alice})
		c.expectErrorSaying("a", "bad_request", "this listener does not check credentials")
	})
}

// TestRequiredMode: until authenticated, a connection may only
// authenticate; one that does not within AuthTimeout is closed with 4500.
func TestRequiredMode(t *testing.T) {
	checkNoWSLeaks(t)
	kit := newAuthKit(t)
	key := kit.apiKey("k", "alice", time.Time{}, grant(all, "*"))
	cfg := Config{Allow: OpAll, AuthMode: auth.ModeRequired, Authenticator: kit.authenticator(), AuthTimeout: time.Hour,
		Policy: policy(t, auth.ChannelRule{Pattern: auth.MustParsePattern("*"), Anonymous: all})}
	ts := startServer(t, cfg)
	ts.create(t, "c", 0)

	t.Run("nothing before auth", func(t *testing.T) {
		c := ts.dial(t)
		// Even what the channel rule allows anonymously.
		for _, f := range []map[string]any{
			{"type": "subscribe", "ref": "1", "channel": "c"},
			{"type": "publish", "ref": "2", "channel": "c", "data": 1},
			{"type": "create", "ref": "3", "channel": "d"},
			{"type": "request", "ref": "4", "channel": "c", "data": 1},
			{"type": "session", "ref": "5", "session": strings.Repeat("A", 43)},
			{"type": "serve", "ref": "6", "channel": "c"},
			{"type": "unsubscribe", "ref": "7", "channel": "c"},
		} {
			c.send(f)
			c.expectErrorSaying(f["ref"].(string), "unauthorized", "this listener requires credentials")
		}
		c.send(`{"type":"bogus","ref":"8"}`) // parse errors first
		c.expectError("8", "unknown_type")
		if got := c.authFrame("a", key); got["type"] != "ack" {
			t.Fatalf("auth answered %v", got)
		}
		c.subscribe("c", nil)
		conn := ts.onlyConn(t)
		conn.authMu.Lock()
		armed := conn.deadline != nil
		conn.authMu.Unlock()
		if armed {
			t.Error("the deadline is still armed after auth")
		}
		c.ws.Close()
		waitFor(t, "no connection", func() bool { return ts.srv.Stats().Open == 0 })
	})
	t.Run("a bearer header is authenticated at once", func(t *testing.T) {
		c := ts.dialWith(t, bearerHeader(key), "")
		c.subscribe("c", nil)
		conn := ts.onlyConn(t)
		conn.authMu.Lock()
		armed := conn.deadline != nil
		conn.authMu.Unlock()
		if armed {
			t.Error("a deadline was armed for a connection authenticated by its header")
		}
		c.ws.Close()
		waitFor(t, "no connection", func() bool { return ts.srv.Stats().Open == 0 })
	})
	t.Run("deadline", func(t *testing.T) {
		quick := cfg
		quick.AuthTimeout = 50 * time.Millisecond
		ts := startServer(t, quick)
		c := ts.dial(t)
		c.send(map[string]any{"type": "auth", "ref": "x", "token": "not-a-key"}) // refused: no reprieve
		c.expectError("x", "unauthorized")
		c.expectClose(CodeUnauthorized)
		if n := ts.srv.Stats().Closes[CodeUnauthorized]; n != 1 {
			t.Errorf("closes with 4500: %d", n)
		}
	})
}

// TestExpiry: a connection whose principal expires is closed with 4501,
// unless it authenticated again first, which moves the expiry.
func TestExpiry(t *testing.T) {
	checkNoWSLeaks(t)
	// Each case has its own keys, expiring shortly after it starts.
	keys := func(t *testing.T) (kit *authKit, short, longer string, second time.Time) {
		kit = newAuthKit(t)
		start := time.Now()
		second = start.Add(700 * time.Millisecond)
		short = kit.apiKey("short", "alice", start.Add(300*time.Millisecond), grant(all, "*"))
		longer = kit.apiKey("longer", "alice", second, grant(all, "*"))
		return kit, short, longer, second
	}
	for _, mode := range []auth.Mode{auth.ModeOptional, auth.ModeRequired} {
		t.Run(mode.String(), func(t *testing.T) {
			kit, short, longer, second := keys(t)
			ts := startServer(t, Config{Allow: OpAll, AuthMode: mode, Authenticator: kit.authenticator()})
			byHeader := ts.dialWith(t, bearerHeader(short), "")
			byFrame := ts.dial(t)
			if got := byFrame.authFrame("a", short); got["type"] != "ack" {
				t.Fatalf("auth answered %v", got)
			}
			renewed := ts.dialWith(t, bearerHeader(short), "")
			if got := renewed.authFrame("b", longer); got["type"] != "ack" {
				t.Fatalf("re-auth answered %v", got)
			}
			byHeader.expectClose(CodeExpired)
			byFrame.expectClose(CodeExpired)
			renewed.expectClose(CodeExpired)
			if time.Now().Before(second) {
				t.Error("the renewed connection was closed at its first credential's expiry")
			}
		})
	}
	t.Run("legacy", func(t *testing.T) {
		kit, short, _, _ := keys(t)
		ts := startServer(t, Config{Allow: OpAll, AuthMode: auth.ModeOptional, Authenticator: kit.authenticator()})
		c := ts.dialWith(t, bearerHeader(short), ProtocolLegacy)
		c.expectClose(CodeExpired)
	})
}

// TestReauthNarrows: a re-auth whose grants no longer cover a
// subscription or a serving ends it at once, with an error frame naming
// its channel; the rest go on.
func TestReauthNarrows(t *testing.T) {
	checkNoWSLeaks(t)
	kit := newAuthKit(t)
	wide := kit.apiKey("wide", "app", time.Time{}, grant(auth.Ops(auth.OpSubscribe, auth.OpServe), "*"))
	narrow := kit.apiKey("narrow", "app", time.Time{}, grant(auth.Ops(auth.OpSubscribe), "a.*"))
	ts := startServer(t, Config{Allow: OpAll, AuthMode: auth.ModeOptional, Authenticator: kit.authenticator(),
		Policy: policy(t, auth.ChannelRule{Pattern: auth.MustParsePattern("open.*"), Anonymous: auth.Ops(auth.OpSubscribe)})})
	for _, ch := range []string{"a.1", "b.1", "open.1", "a.rpc"} {
		ts.create(t, ch, 0)
	}
	c := ts.dialWith(t, bearerHeader(wide), "")
	c.subscribe("a.1", nil)
	c.subscribe("b.1", nil)
	c.subscribe("open.1", nil)
	c.serveChannel("a.rpc")

	if got := c.authFrame("n", narrow); got["type"] != "ack" {
		t.Fatalf("re-auth answered %v", got)
	}
	ended := map[string]string{}
	for range 2 {
		f := c.expect(map[string]any{"type": "error", "code": "forbidden", "channel": matcher{"a channel", func(v any) bool { _, ok := v.(string); return ok }}, "message": anyText})
		ended[f["channel"].(string)] = f["message"].(string)
	}
	if !strings.Contains(ended["b.1"], "subscription ended") || !strings.Contains(ended["a.rpc"], "serving ended") || len(ended) != 2 {
		t.Fatalf("ended %v, want the subscription to b.1 and the serving of a.rpc", ended)
	}
	// b.1's messages no longer come; a.1's and open.1's (anonymous) do.
	ts.publish(t, "b.1", 1)
	ts.publish(t, "a.1", 1)
	c.messages("a.1", 1)
	ts.publish(t, "open.1", 1)
	c.messages("open.1", 1)
	c.send(map[string]any{"type": "serve", "ref": "v", "channel": "a.rpc"})
	c.expectError("v", "forbidden")
}

// TestAnonymousRules: on a listener that checks credentials, anonymous
// clients may do what the first matching rule lists, and are told to
// authenticate for the rest; authenticated ones without the grant are
// forbidden.
func TestAnonymousRules(t *testing.T) {
	checkNoWSLeaks(t)
	kit := newAuthKit(t)
	nobody := kit.apiKey("nobody", "nobody", time.Time{})
	rules := policy(t,
		auth.ChannelRule{Pattern: auth.MustParsePattern("prices.secret"), Anonymous: 0},
		auth.ChannelRule{Pattern: auth.MustParsePattern("prices.*"), Anonymous: auth.Ops(auth.OpSubscribe)},
	)
	ts := startServer(t, Config{Allow: OpAll, AuthMode: auth.ModeOptional, Authenticator: kit.authenticator(), Policy: rules})
	for _, ch := range []string{"prices.eur", "prices.secret", "orders"} {
		ts.create(t, ch, 0)
	}
	anon := ts.dial(t)
	anon.subscribe("prices.eur", nil)
	for _, f := range []map[string]any{
		{"type": "subscribe", "ref": "1", "channel": "prices.secret"}, // the first rule wins
		{"type": "subscribe", "ref": "2", "channel": "orders"},
		{"type": "publish", "ref": "3", "channel": "prices.eur", "data": 1},
	} {
		anon.send(f)
		anon.expectErrorSaying(f["ref"].(string), "unauthorized", "needs credentials")
	}
	known := ts.dialWith(t, bearerHeader(nobody), "")
	known.subscribe("prices.eur", nil) // anonymous rules hold for everyone
	known.send(map[string]any{"type": "subscribe", "ref": "4", "channel": "orders"})
	known.expectErrorSaying("4", "forbidden", `not granted to "nobody"`)
	if info, _ := ts.hub.Info(t.Context(), "prices.eur"); info.Length != 0 {
		t.Errorf("a refused publish stored %d messages", info.Length)
	}
}

// TestPublicRuleCeiling: on the public listener, a rule's public list
// replaces the listener's allowed operations for its channels, whatever
// the credentials; elsewhere it means nothing.
func TestPublicRuleCeiling(t *testing.T) {
	checkNoWSLeaks(t)
	kit := newAuthKit(t)
	root := kit.apiKey("root", "root", time.Time{}, grant(all, "*"))
	rules := policy(t,
		auth.ChannelRule{Pattern: auth.MustParsePattern("locked.*"), PublicSet: true},
		auth.ChannelRule{Pattern: auth.MustParsePattern("rpc.*"), Public: auth.Ops(auth.OpSubscribe, auth.OpRequest), PublicSet: true},
	)
	for _, mode := range []auth.Mode{auth.ModeOff, auth.ModeOptional} {
		t.Run(mode.String(), func(t *testing.T) {
			public := startServer(t, Config{Public: true, AuthMode: mode, Authenticator: kit.authenticator(), Policy: rules})
			for _, ch := range []string{"locked.a", "rpc.a", "plain"} {
				public.create(t, ch, 0)
			}
			c := public.dialWith(t, bearerHeader(root), "")
			c.send(map[string]any{"type": "subscribe", "ref": "1", "channel": "locked.a"})
			c.expectErrorSaying("1", "forbidden", `subscribe is not allowed on this listener for channel "locked.a"`)
			c.subscribe("plain", nil) // TSLM_PUBLIC_ALLOW: subscribe
			c.send(map[string]any{"type": "publish", "ref": "2", "channel": "plain", "data": 1})
			c.expectError("2", "forbidden")
			// Requests are allowed on rpc.*: nobody serves, so the
			// request is queued and acknowledged.
			c.request("3", "rpc.a", `1`, map[string]any{"timeout_ms": 60000})
			c.send(map[string]any{"type": "request", "ref": "4", "channel": "plain", "data": 1})
			c.expectError("4", "forbidden")
			// A session resuming requests of rpc.* is under the ceiling.
			c2 := public.dialWith(t, bearerHeader(root), "")
			c2.send(map[string]any{"type": "session", "ref": "5", "session": strings.Repeat("A", 43),
				"pending": []any{map[string]any{"channel": "plain", "id": "1-0"}}})
			c2.expectError("5", "forbidden")
			c2.send(map[string]any{"type": "session", "ref": "6", "session": strings.Repeat("A", 43),
				"pending": []any{map[string]any{"channel": "rpc.a", "id": "1-0"}}})
			c2.expectError("6", "not_found") // allowed; no such session
		})
	}
	t.Run("internal", func(t *testing.T) {
		internal := startServer(t, Config{Allow: OpAll, Policy: rules})
		internal.create(t, "locked.a", 0)
		c := internal.dial(t)
		c.subscribe("locked.a", nil)
	})
}

// TestLegacyAuth: the legacy protocol authenticates by header only, and
// its commands go through the same decisions.
func TestLegacyAuth(t *testing.T) {
	checkNoWSLeaks(t)
	kit := newAuthKit(t)
	reader := kit.apiKey("reader", "reader", time.Time{}, grant(auth.Ops(auth.OpSubscribe), "*"))
	rules := policy(t, auth.ChannelRule{Pattern: auth.MustParsePattern("open"), Anonymous: auth.Ops(auth.OpPublish)})
	ts := startServer(t, Config{Allow: OpAll, AuthMode: auth.ModeOptional, Authenticator: kit.authenticator(), Policy: rules})
	ts.create(t, "c", 0)
	ts.create(t, "open", 0)

	anon := ts.dialLegacy(t)
	anon.send(`{"Subscribe":"c"}`)
	anon.expectLegacyError("unauthorized")
	anon.send(`{"NotifyChannel":["open",{"Text":"hi"}]}`)
	anon.expect(map[string]any{"Success": "Message sent to open"})
	anon.send(`{"auth":"x"}`) // no auth frame in this protocol
	anon.expectLegacyError("unknown_type")

	known := ts.dialWith(t, bearerHeader(reader), ProtocolLegacy)
	known.send(`{"Subscribe":"c"}`)
	known.expect(map[string]any{"Success": "Subscribed to c"})
	known.send(`{"CreateChannel":"d"}`)
	known.expectLegacyError("forbidden")
	if _, err := ts.hub.Info(t.Context(), "d"); err == nil {
		t.Error("a refused CreateChannel created the channel")
	}

	t.Run("required", func(t *testing.T) {
		ts := startServer(t, Config{Allow: OpAll, AuthMode: auth.ModeRequired, Authenticator: kit.authenticator(), AuthTimeout: 50 * time.Millisecond})
		ts.create(t, "c", 0)
		c := ts.dialLegacy(t)
		c.send(`{"Subscribe":"c"}`)
		c.expectLegacyError("unauthorized")
		c.expectClose(CodeUnauthorized)
		ok := ts.dialWith(t, bearerHeader(reader), ProtocolLegacy)
		ok.send(`{"Subscribe":"c"}`)
		ok.expect(map[string]any{"Success": "Subscribed to c"})
	})
}

// TestRequestsNeedGrants: requests, serving and replies are decided like
// everything else, and a session's token is no use to another principal.
func TestRequestsNeedGrants(t *testing.T) {
	checkNoWSLeaks(t)
	kit := newAuthKit(t)
	subscriber := kit.apiKey("sub", "sub", time.Time{}, grant(auth.Ops(auth.OpSubscribe), "*"))
	alice := kit.apiKey("alice", "alice", time.Time{}, grant(auth.Ops(auth.OpRequest), "orders"))
	bob := kit.apiKey("bob", "bob", time.Time{}, grant(auth.Ops(auth.OpRequest), "orders"))
	app := kit.token("billing", time.Now().Add(time.Hour), map[string][]string{"serve": {"orders"}})
	ts := startServer(t, Config{Allow: OpAll, AuthMode: auth.ModeOptional, Authenticator: kit.authenticator()})
	ts.create(t, "orders", 0)

	for _, who := range []struct {
		name, credential, code string
	}{{"anonymous", "", "unauthorized"}, {"subscriber", subscriber, "forbidden"}} {
		t.Run(who.name, func(t *testing.T) {
			var header http.Header
			if who.credential != "" {
				header = bearerHeader(who.credential)
			}
			c := ts.dialWith(t, header, "")
			for _, f := range []map[string]any{
				{"type": "request", "ref": "1", "channel": "orders", "data": 1},
				{"type": "serve", "ref": "2", "channel": "orders"},
				{"type": "reply", "ref": "3", "channel": "orders", "id": "1-0", "data": 1},
			} {
				c.send(f)
				c.expectError(f["ref"].(string), who.code)
			}
			c.send(map[string]any{"type": "unserve", "ref": "4", "channel": "orders"}) // undoes nothing
			c.expect(map[string]any{"type": "ack", "ref": "4", "channel": "orders"})
		})
	}

	server := ts.dialWith(t, bearerHeader(app), "")
	server.serveChannel("orders")
	requester := ts.dialWith(t, bearerHeader(alice), "")
	id, token := requester.request("r", "orders", `1`, map[string]any{"timeout_ms": 60000})
	server.served("orders")
	requester.ws.Close()
	server.replyTo("orders", id, map[string]any{"data": "done"})
	pending := []any{map[string]any{"channel": "orders", "id": id, "ref": "back", "timeout_ms": 60000}}

	thief := ts.dialWith(t, bearerHeader(bob), "")
	thief.send(map[string]any{"type": "session", "ref": "s", "session": token, "pending": pending})
	thief.expectErrorSaying("s", "not_found", "session expired or unknown")
	anon := ts.dial(t)
	anon.send(map[string]any{"type": "session", "ref": "s", "session": token, "pending": pending})
	anon.expectError("s", "not_found")

	owner := ts.dialWith(t, bearerHeader(alice), "")
	owner.send(map[string]any{"type": "session", "ref": "s", "session": token, "pending": pending})
	owner.expect(map[string]any{"type": "ack", "ref": "s", "session": token})
	owner.expect(map[string]any{"type": "reply", "ref": "back", "channel": "orders", "id": id, "data": "done"})
}
