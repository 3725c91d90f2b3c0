package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/gateway"
	"github.com/tslm/tslm/internal/oidctest"
	"github.com/tslm/tslm/internal/redistest"
)

// The end-to-end tests of subscribers' single sign-on: real gateways
// verifying the access tokens of a real OpenID provider (internal/oidctest,
// zitadel/oidc's op) through its discovery document and JWKS, tokens
// presented by Authorization header and by auth frame, key rotation,
// expiry, resumes and sessions across replicas, and a provider that is
// down when the gateway starts.

const ssoChannel = "prices.eur"

// startProvider runs a provider with one client, "reader", whose tokens
// grant subscribe on prices.*.
func startProvider(t *testing.T, opts oidctest.Options) *oidctest.Provider {
	t.Helper()
	p := oidctest.Start(t, opts)
	p.AddClient("reader", "reader-secret", map[string]any{"subscribe": []string{"prices.*"}})
	return p
}

// ssoEnv is the configuration of a public listener that requires tokens
// of p, refreshing its keys every second.
func ssoEnv(p *oidctest.Provider, more map[string]string) map[string]string {
	return withEnv(map[string]string{
		"TSLM_PUBLIC_AUTH":   "required",
		"TSLM_OIDC_ISSUER":   p.Issuer(),
		"TSLM_OIDC_AUDIENCE": "tslm",
		"TSLM_OIDC_REFRESH":  "1s",
	}, more)
}

// startReplicaWith starts a gateway like startReplica, with edit applied
// to its configuration, for the settings only a file sets.
func startReplicaWith(t *testing.T, overrides map[string]string, edit func(*gateway.Config)) *replica {
	t.Helper()
	cfg := config(t, overrides)
	edit(&cfg)
	g, err := gateway.Start(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := contextWithTimeout(5 * time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	pub, in := g.PublicAddrs()[0].String(), g.InternalAddrs()[0].String()
	return &replica{Gateway: g, publicURL: "ws://" + pub + "/v1/ws", internalURL: "ws://" + in + "/v1/ws", apiURL: "http://" + in}
}

// dialWith opens a tslm.v1 connection whose upgrade request carries
// header; a refused upgrade returns the response, its body readable.
func dialWith(t testing.TB, url string, header http.Header) (*client, *http.Response, error) {
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial(url, header)
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn}, resp, nil
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// dialBearer connects as a program does, with the token in the upgrade's
// Authorization header.
func dialBearer(t testing.TB, url, token string) *client {
	t.Helper()
	c, resp, err := dialWith(t, url, bearer(token))
	if err != nil {
		t.Fatalf("dial with a Bearer token: %v %s", err, responseText(resp))
	}
	return c
}

// refusedBearer dials with token, which must be refused with 401 and an
// RFC 6750 challenge; it returns the response's body.
func refusedBearer(t testing.TB, url, token string) string {
	t.Helper()
	c, resp, err := dialWith(t, url, bearer(token))
	if err == nil {
		c.conn.Close()
		t.Fatal("the upgrade with the token was accepted, want HTTP 401")
	}
	if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("upgrade with the token: %v %s, want HTTP 401", err, responseText(resp))
	}
	if ch := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, `Bearer error="invalid_token", error_description="`) {
		t.Errorf("401 with WWW-Authenticate %q, want an invalid_token challenge", ch)
	}
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// upgradeStatus is the HTTP status of an upgrade with token, 101 when it
// is accepted (the connection is closed at once).
func upgradeStatus(t testing.TB, url, token string) int {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial(url, bearer(token))
	if err == nil {
		conn.Close()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("upgrade: %v", err)
	}
	return resp.StatusCode
}

func responseText(resp *http.Response) string {
	if resp == nil {
		return "(no response)"
	}
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("(%s: %s)", resp.Status, bytes.TrimSpace(b))
}

// auth sends an auth frame.
func (c *client) auth(ref, token string) {
	c.t.Helper()
	c.send(map[string]any{"type": "auth", "ref": ref, "token": token})
}

// claims decodes a token's payload, unverified.
func claims(t testing.TB, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token with %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	var c map[string]any
	if err == nil {
		err = json.Unmarshal(raw, &c)
	}
	if err != nil {
		t.Fatalf("token payload: %v", err)
	}
	return c
}

func tokenExpiry(t testing.TB, token string) time.Time {
	t.Helper()
	exp, ok := claims(t, token)["exp"].(float64)
	if !ok {
		t.Fatalf("token without exp")
	}
	return time.Unix(int64(exp), 0)
}

func tokenKID(t testing.TB, token string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	var h struct{ Kid string }
	if err == nil {
		err = json.Unmarshal(raw, &h)
	}
	if err != nil || h.Kid == "" {
		t.Fatalf("token header without kid: %v", err)
	}
	return h.Kid
}

// checkAck holds an auth ack to the token it acknowledges.
func checkAck(t testing.TB, ack map[string]any, subject, token string) {
	t.Helper()
	want := tokenExpiry(t, token).UTC().Format(time.RFC3339)
	if ack["type"] != "ack" || ack["subject"] != subject || ack["expires"] != want {
		t.Fatalf("auth ack %v, want subject %s and expires %s", ack, subject, want)
	}
}

// feed is a subscriber of one channel that keeps the IDs of the messages
// it receives while it waits for other frames, for clients that
// authenticate while messages keep coming.
type feed struct {
	*client
	channel string
	ids     []string
}

func newFeed(c *client) *feed { return &feed{client: c, channel: ssoChannel} }

// await reads until a frame other than a message of the channel, checks
// the fields of want, and returns it.
func (f *feed) await(want map[string]any) map[string]any {
	f.t.Helper()
	for {
		fr := f.read()
		if fr["type"] == "message" && fr["channel"] == f.channel {
			f.ids = append(f.ids, fr["id"].(string))
			continue
		}
		for k, v := range want {
			if fmt.Sprint(fr[k]) != fmt.Sprint(v) {
				f.t.Fatalf("frame %v: %s = %v, want %v", fr, k, fr[k], v)
			}
		}
		return fr
	}
}

func (f *feed) sub() {
	f.t.Helper()
	f.send(map[string]any{"type": "subscribe", "ref": "sub", "channel": f.channel})
	f.await(map[string]any{"type": "ack", "ref": "sub", "channel": f.channel})
}

// through reads messages until the one with id.
func (f *feed) through(id string) {
	f.t.Helper()
	for len(f.ids) == 0 || f.ids[len(f.ids)-1] != id {
		fr := f.read()
		if fr["type"] != "message" || fr["channel"] != f.channel {
			f.t.Fatalf("after %d messages got %v, want messages up to %s", len(f.ids), fr, id)
		}
		f.ids = append(f.ids, fr["id"].(string))
	}
}

// suffixOf checks that f received, without a gap, every message of all
// from its first one on.
func (f *feed) suffixOf(what string, all []string) {
	f.t.Helper()
	if len(f.ids) == 0 {
		f.t.Fatalf("%s received nothing", what)
	}
	i := slices.Index(all, f.ids[0])
	if i < 0 {
		f.t.Fatalf("%s received %s, which was not published", what, f.ids[0])
	}
	sameIDs(f.t, what, f.ids, all[i:])
}

// publisher publishes to a channel through the HTTP API of the internal
// listener, which does not check credentials, every interval until
// halted, and keeps the IDs in order.
type publisher struct {
	t          *testing.T
	stop, done chan struct{}
	halting    sync.Once

	mu  sync.Mutex
	ids []string
	err error
}

func startPublisher(t *testing.T, r *replica, channel string, every time.Duration) *publisher {
	p := &publisher{t: t, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		hc := &http.Client{Timeout: 10 * time.Second}
		tick := time.NewTicker(every)
		defer tick.Stop()
		for n := 0; ; n++ {
			id, err := postMessage(hc, r.apiURL, channel, n)
			p.mu.Lock()
			p.ids = append(p.ids, id)
			p.err = err
			p.mu.Unlock()
			if err != nil {
				return
			}
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { p.halt() })
	return p
}

func postMessage(hc *http.Client, apiURL, channel string, n int) (string, error) {
	resp, err := hc.Post(apiURL+"/v1/channels/"+channel+"/messages", "application/json", strings.NewReader(fmt.Sprint(n)))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusCreated || body.ID == "" {
		return "", fmt.Errorf("publish #%d: %s: %v", n, resp.Status, err)
	}
	return body.ID, nil
}

// more waits until at least one message has been published since the
// call, so that each step of a test happens while messages flow.
func (p *publisher) more() {
	p.t.Helper()
	n := p.count()
	eventually(p.t, 10*time.Second, "the publisher to publish again", func() bool { return p.count() > n })
}

func (p *publisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		p.t.Fatalf("publisher: %v", p.err)
	}
	return len(p.ids)
}

// halt stops the publisher and returns the IDs it published.
func (p *publisher) halt() []string {
	p.halting.Do(func() { close(p.stop) })
	<-p.done
	p.count() // fails on an error
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ids)
}

// TestSSOSubscribersOnTwoReplicas: a program presents its token in the
// Authorization header, a browser in an auth frame, on two replicas of
// one Redis; both receive what is published, within their grants, and a
// connection that never authenticates may do nothing and is closed.
func TestSSOSubscribersOnTwoReplicas(t *testing.T) {
	prov := startProvider(t, oidctest.Options{})
	_, rs := startRedis(t, redistest.Options{}, 2, ssoEnv(prov, map[string]string{"TSLM_AUTH_TIMEOUT": "1s"}))
	a, b := rs[0], rs[1]
	a.create(t, ssoChannel, nil)
	a.create(t, "news", nil)
	token := prov.Token(t, "reader")

	program := dialBearer(t, a.publicURL, token)
	program.subscribe(ssoChannel, nil)
	browser := dial(t, b.publicURL)
	browser.auth("a1", token)
	checkAck(t, browser.expect(map[string]any{"ref": "a1"}), "reader", token)
	browser.subscribe(ssoChannel, nil)

	// The grants bound what either may do; a connection without
	// credentials may only authenticate, and not for long.
	for _, c := range []*client{program, browser} {
		c.send(map[string]any{"type": "subscribe", "ref": "n", "channel": "news"})
		c.expect(map[string]any{"type": "error", "ref": "n", "code": "forbidden"})
	}
	idle := dial(t, a.publicURL)
	idle.send(map[string]any{"type": "subscribe", "ref": "s", "channel": ssoChannel})
	idle.expect(map[string]any{"type": "error", "ref": "s", "code": "unauthorized"})
	idle.expectClose(4500)

	want := []string{a.publish(t, ssoChannel, 1), b.publish(t, ssoChannel, 2), a.publish(t, ssoChannel, 3)}
	sameIDs(t, "program", program.messages(ssoChannel, len(want)), want)
	sameIDs(t, "browser", browser.messages(ssoChannel, len(want)), want)
}

// TestSSOKeyRotation: the provider rotates its signing key, then retires
// the old one. Replica A learns it by its periodic refresh, replica B
// (whose refresh is the default 15m) by the unknown kid of the first new
// token it sees. New tokens are accepted at once, old ones refused once
// the replica has the new keys, subscribers connected before keep every
// message, and one re-authenticates on its connection with a new token.
func TestSSOKeyRotation(t *testing.T) {
	prov := startProvider(t, oidctest.Options{})
	srv := redistest.Start(t, redistest.Options{})
	a := startReplica(t, ssoEnv(prov, map[string]string{"TSLM_REDIS_URL": srv.URL()}))
	b := startReplica(t, ssoEnv(prov, map[string]string{"TSLM_REDIS_URL": srv.URL(), "TSLM_OIDC_REFRESH": "15m"}))
	a.create(t, ssoChannel, nil)

	old := prov.Token(t, "reader")
	subA := newFeed(dialBearer(t, a.publicURL, old))
	subA.sub()
	subB := newFeed(dial(t, b.publicURL))
	subB.auth("a0", old)
	subB.await(map[string]any{"type": "ack", "ref": "a0"})
	subB.sub()
	pub := startPublisher(t, a, ssoChannel, 20*time.Millisecond)
	pub.more()

	prov.RotateKey()
	fresh := prov.Token(t, "reader")
	if tokenKID(t, fresh) == tokenKID(t, old) {
		t.Fatal("the rotated provider signs with the old key")
	}
	// Until the provider retires it, the old key still verifies.
	dialBearer(t, a.publicURL, old).conn.Close()
	pub.more()

	prov.RetireOldKeys()
	eventually(t, 10*time.Second, "A to refuse a token of the retired key after a refresh", func() bool {
		return upgradeStatus(t, a.publicURL, old) == http.StatusUnauthorized
	})
	if body := refusedBearer(t, a.publicURL, old); !strings.Contains(body, "unknown key id") {
		t.Errorf("A refused the old token saying %q, want the unknown key id named", body)
	}
	pub.more()

	// B has not fetched the JWKS since it started: only the new kid's
	// fetch lets it accept the new token, and then refuse the old one.
	freshB := newFeed(dialBearer(t, b.publicURL, fresh))
	freshB.sub()
	if body := refusedBearer(t, b.publicURL, old); !strings.Contains(body, "unknown key id") {
		t.Errorf("B refused the old token saying %q, want the unknown key id named", body)
	}
	subB.auth("stale", old)
	if e := subB.await(map[string]any{"type": "error", "ref": "stale", "code": "unauthorized"}); !strings.Contains(e["message"].(string), "unknown key id") {
		t.Errorf("auth frame with the old token refused with %v, want the unknown key id named", e)
	}
	pub.more()

	// A browser on A: the old token is refused, the connection stays and
	// takes the new one.
	browser := newFeed(dial(t, a.publicURL))
	browser.auth("old", old)
	browser.await(map[string]any{"type": "error", "ref": "old", "code": "unauthorized"})
	browser.auth("new", fresh)
	checkAck(t, browser.await(map[string]any{"ref": "new"}), "reader", fresh)
	browser.sub()

	// A subscriber connected with the old token re-authenticates on its
	// connection and keeps its subscription.
	subA.auth("re", fresh)
	checkAck(t, subA.await(map[string]any{"ref": "re"}), "reader", fresh)
	pub.more()

	all := pub.halt()
	last := all[len(all)-1]
	for _, f := range []*feed{subA, subB, freshB, browser} {
		f.through(last)
	}
	sameIDs(t, "subscriber on A, re-authenticated", subA.ids, all)
	sameIDs(t, "subscriber on B, authenticated before the rotation", subB.ids, all)
	freshB.suffixOf("new-token subscriber on B", all)
	browser.suffixOf("browser on A", all)
	t.Logf("%d messages published during the rotation; %d JWKS fetches", len(all), prov.JWKSFetches())
}

// TestSSOExpiry: tokens live 4s. A client that never presents another is
// closed with 4501 when its token expires; one that sends a fresh token
// before then stays, receiving every message past the first expiry.
func TestSSOExpiry(t *testing.T) {
	prov := startProvider(t, oidctest.Options{TokenTTL: 4 * time.Second})
	r := startReplica(t, ssoEnv(prov, nil))
	r.create(t, ssoChannel, nil)

	first := prov.Token(t, "reader")
	exp := tokenExpiry(t, first)
	stale := dialBearer(t, r.publicURL, first)
	stale.subscribe(ssoChannel, nil)
	kept := newFeed(dial(t, r.publicURL))
	kept.auth("a1", first)
	checkAck(t, kept.await(map[string]any{"ref": "a1"}), "reader", first)
	kept.sub()
	pub := startPublisher(t, r, ssoChannel, 50*time.Millisecond)

	// exp counts whole seconds: ask until a token expires later.
	var second string
	eventually(t, 5*time.Second, "a token expiring after the first", func() bool {
		second = prov.Token(t, "reader")
		return tokenExpiry(t, second).After(exp)
	})
	kept.auth("a2", second)
	checkAck(t, kept.await(map[string]any{"ref": "a2"}), "reader", second)
	if time.Now().After(exp) {
		t.Fatalf("the fresh token was acknowledged after the first expired (%v): the machine is too slow for this test", exp)
	}

	stale.expectClose(4501)
	if closed := time.Now(); closed.Before(exp.Add(-50*time.Millisecond)) || closed.After(exp.Add(3*time.Second)) {
		t.Errorf("closed at %v, want about the token's expiry %v", closed.Format(time.StampMilli), exp.Format(time.StampMilli))
	}
	// Messages published well past the first expiry still reach the one
	// that re-authenticated, with none missing.
	eventually(t, 10*time.Second, "half a second past the first expiry", func() bool {
		return time.Now().After(exp.Add(500 * time.Millisecond))
	})
	pub.more()
	all := pub.halt()
	kept.through(all[len(all)-1])
	sameIDs(t, "re-authenticated subscriber", kept.ids, all)
	kept.send(map[string]any{"type": "unsubscribe", "ref": "u", "channel": ssoChannel})
	kept.await(map[string]any{"type": "ack", "ref": "u"})
}

// TestSSOResumeAndSessionsAcrossReplicas: a subscriber resumes on another
// replica with a fresh token and misses nothing; a request session
// started by alice is resumed by alice on the other replica, and is not
// found by bob, who holds its token too.
func TestSSOResumeAndSessionsAcrossReplicas(t *testing.T) {
	prov := oidctest.Start(t, oidctest.Options{})
	grants := map[string]any{"subscribe": []string{"prices.*"}, "request": []string{"rpc.*"}}
	prov.AddClient("alice", "alice-secret", grants)
	prov.AddClient("bob", "bob-secret", grants)
	srv, rs := startRedis(t, redistest.Options{}, 2, ssoEnv(prov, requestAllow))
	a, b := rs[0], rs[1]
	a.create(t, ssoChannel, nil)
	a.create(t, "rpc.orders", nil)

	sub := dialBearer(t, a.publicURL, prov.Token(t, "alice"))
	sub.subscribe(ssoChannel, nil)
	seen := []string{a.publish(t, ssoChannel, 1), b.publish(t, ssoChannel, 2)}
	sameIDs(t, "before the disconnect", sub.messages(ssoChannel, len(seen)), seen)
	sub.conn.Close()
	missed := []string{a.publish(t, ssoChannel, 3), b.publish(t, ssoChannel, 4), a.publish(t, ssoChannel, 5)}
	again := dialBearer(t, b.publicURL, prov.Token(t, "alice"))
	ack := again.subscribe(ssoChannel, map[string]any{"since": seen[len(seen)-1]})
	if ack["resumed"] != true || ack["head"] != missed[len(missed)-1] {
		t.Fatalf("resume ack %v, want resumed:true head %s", ack, missed[len(missed)-1])
	}
	sameIDs(t, "missed", again.messages(ssoChannel, len(missed)), missed)
	live := []string{a.publish(t, ssoChannel, 6)}
	sameIDs(t, "live after the resume", again.messages(ssoChannel, 1), live)

	w := &redisWorker{t: t, c: srv.Client(), group: "tslm", consumer: "w1"}
	alice := dialBearer(t, a.publicURL, prov.Token(t, "alice"))
	id, session := alice.requestAcked("r1", "rpc.orders", "for alice", 10000)
	req := w.claim("rpc.orders", 1)
	if len(req) != 1 || req[0].id != id {
		t.Fatalf("claimed %+v, want request %s", req, id)
	}
	alice.conn.Close()
	w.reply("rpc.orders", req[0], echoEnvelope("rpc.orders", req[0]))

	resume := map[string]any{"type": "session", "ref": "s", "session": session,
		"pending": []any{map[string]any{"channel": "rpc.orders", "id": id, "ref": "r1"}}}
	bob := dialBearer(t, b.publicURL, prov.Token(t, "bob"))
	bob.send(resume)
	bob.expect(map[string]any{"type": "error", "ref": "s", "code": "not_found"})
	bob.quiet(300 * time.Millisecond)

	aliceB := dialBearer(t, b.publicURL, prov.Token(t, "alice"))
	aliceB.send(resume)
	aliceB.expect(map[string]any{"type": "ack", "ref": "s", "session": session})
	rep := aliceB.expect(map[string]any{"type": "reply", "ref": "r1", "channel": "rpc.orders", "id": id})
	jsonEqual(t, "reply", rep["data"], `"for alice"`)
}

// TestSSOProviderDownAtStart: the gateway starts while the provider
// answers nothing but 503, serves anonymous subscribers what the channel
// rules allow them, refuses tokens as unverifiable for now, and accepts
// the same token once the provider is back.
func TestSSOProviderDownAtStart(t *testing.T) {
	prov := startProvider(t, oidctest.Options{})
	token := prov.Token(t, "reader")
	prov.SetAvailable(false)
	r := startReplicaWith(t, ssoEnv(prov, map[string]string{"TSLM_PUBLIC_AUTH": "optional"}), func(c *gateway.Config) {
		c.Channels = []auth.ChannelRule{{Pattern: auth.MustParsePattern("prices.*"), Anonymous: auth.Ops(auth.OpSubscribe)}}
	})
	r.create(t, ssoChannel, nil)

	anon := dial(t, r.publicURL)
	anon.subscribe(ssoChannel, nil)
	id := r.publish(t, ssoChannel, "served while the provider is down")
	anon.expect(map[string]any{"type": "message", "id": id})

	const unavailable = "identity provider's keys are unavailable"
	if body := refusedBearer(t, r.publicURL, token); !strings.Contains(body, unavailable) {
		t.Errorf("upgrade refused with %q, want %q", body, unavailable)
	}
	anon.auth("a1", token)
	if e := anon.expect(map[string]any{"type": "error", "ref": "a1", "code": "unauthorized"}); !strings.Contains(e["message"].(string), unavailable) {
		t.Errorf("auth frame refused with %v, want %q", e, unavailable)
	}

	prov.SetAvailable(true)
	eventually(t, 15*time.Second, "the token to be accepted once the provider is back", func() bool {
		return upgradeStatus(t, r.publicURL, token) == http.StatusSwitchingProtocols
	})
	anon.auth("a2", token)
	checkAck(t, anon.expect(map[string]any{"ref": "a2"}), "reader", token)
	id = r.publish(t, ssoChannel, "after")
	anon.expect(map[string]any{"type": "message", "id": id})
}

// TestBinarySSO runs the real binary with an OpenID provider and a config
// file whose channel rule lets anonymous clients subscribe to prices.*:
// anonymous clients get that and nothing more, a token brings its grants,
// a token in the URL counts for nothing, and no log line, at debug level,
// holds a token, accepted, refused or expired on a connection.
func TestBinarySSO(t *testing.T) {
	prov := startProvider(t, oidctest.Options{})
	prov.AddClient("newsreader", "news-secret", map[string]any{"subscribe": []string{"news.*"}})
	path := filepath.Join(t.TempDir(), "tslm.toml")
	doc := `[listener.public]
auth = "optional"

[[channel]]
pattern = "prices.*"
anonymous = ["subscribe"]
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startBinary(t, map[string]string{"TSLM_CONFIG": path, "TSLM_OIDC_ISSUER": prov.Issuer(), "TSLM_OIDC_AUDIENCE": "tslm",
		"TSLM_LOG_LEVEL": "debug"})
	r := &replica{publicURL: "ws://" + p.addr(t, "public") + "/v1/ws", apiURL: "http://" + p.addr(t, "internal")}
	r.create(t, ssoChannel, nil)
	r.create(t, "news.eu", nil)
	token := prov.Token(t, "newsreader")

	anon := dial(t, r.publicURL)
	anon.subscribe(ssoChannel, nil)
	anon.send(map[string]any{"type": "subscribe", "ref": "n", "channel": "news.eu"})
	anon.expect(map[string]any{"type": "error", "ref": "n", "code": "unauthorized"})
	program := dialBearer(t, r.publicURL, token)
	program.subscribe("news.eu", nil)

	// RFC 6750 lets a token ride in the query; TSLM does not, since URLs
	// are logged by proxies: such a connection is anonymous.
	for _, param := range []string{"access_token", "token"} {
		c := dial(t, r.publicURL+"?"+param+"="+url.QueryEscape(token))
		c.send(map[string]any{"type": "subscribe", "ref": "q", "channel": "news.eu"})
		c.expect(map[string]any{"type": "error", "ref": "q", "code": "unauthorized"})
	}

	now := time.Now().Unix()
	expired := prov.Sign(t, map[string]any{"iss": prov.Issuer(), "sub": "newsreader", "aud": "tslm", "iat": now - 120, "exp": now - 60})
	if body := refusedBearer(t, r.publicURL, expired); !strings.Contains(body, "expired") {
		t.Errorf("expired token refused with %q, want it called expired", body)
	}
	anon.auth("x", expired)
	anon.expect(map[string]any{"type": "error", "ref": "x", "code": "unauthorized"})
	// A token that expires in two seconds gets its connection closed, which
	// is logged.
	short := prov.Sign(t, map[string]any{"iss": prov.Issuer(), "sub": "newsreader", "aud": "tslm", "iat": now, "exp": now + 2,
		"tslm": map[string]any{"subscribe": []string{"news.*"}}})
	brief := dial(t, r.publicURL)
	brief.auth("s", short)
	checkAck(t, brief.expect(map[string]any{"ref": "s"}), "newsreader", short)

	id := r.publish(t, "news.eu", "for the token holder")
	program.expect(map[string]any{"type": "message", "channel": "news.eu", "id": id})
	id = r.publish(t, ssoChannel, "for anyone")
	anon.expect(map[string]any{"type": "message", "channel": ssoChannel, "id": id})
	brief.expectClose(4501)
	eventually(t, 10*time.Second, "the expired connection's close to be logged", func() bool {
		return slices.ContainsFunc(p.logLines(), func(l map[string]any) bool {
			return l["msg"] == "connection closed" && l["code"] == 4501.0 && l["by"] == "server" && l["subject"] == "newsreader"
		})
	})

	out := p.output()
	for name, tok := range map[string]string{"accepted": token, "expired": expired, "short-lived": short} {
		parts := strings.Split(tok, ".")
		for _, s := range []string{tok, parts[1], parts[2]} {
			if strings.Contains(out, s) {
				t.Errorf("the log holds the %s token or part of it:\n%s", name, out)
			}
		}
	}
	for line := range strings.Lines(out) {
		if !json.Valid([]byte(line)) {
			t.Errorf("a log line is not JSON: %q", line)
		} else if dup := repeatedKey(line); dup != "" {
			t.Errorf("a log line has %q twice, which JSON decoders read differently: %s", dup, line)
		}
	}
}

// repeatedKey returns a key that a JSON object's top level holds twice.
func repeatedKey(object string) string {
	dec := json.NewDecoder(strings.NewReader(object))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return ""
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		key, _ := tok.(string)
		if seen[key] {
			return key
		}
		seen[key] = true
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return ""
		}
	}
	return ""
}
