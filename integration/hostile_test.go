package integration

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/internal/oidctest"
)

// hostileGateway is the real binary with every kind of credential
// configured: publisher API key and Ed25519 token key on the internal
// listener (required), SSO subscribers on the public one (optional, with
// an anonymous pattern), and a real OpenID provider.
type hostileGateway struct {
	proc             *process
	public, internal string // host:port
	idp, otherIdP    *oidctest.Provider
	apiKey           string
	signer           ed25519.PrivateKey
	strangerSigner   ed25519.PrivateKey
	t                *testing.T
}

const (
	hostileAudience = "tslm"
	hostileTokenIss = "https://publishers.example"
	hostileMaxPerIP = 24
	hostileSubLimit = 100
)

func startHostileGateway(t *testing.T) *hostileGateway {
	t.Helper()
	h := &hostileGateway{}
	h.idp = oidctest.Start(t, oidctest.Options{})
	h.otherIdP = oidctest.Start(t, oidctest.Options{})
	h.idp.AddClient("alice", "alice-secret", map[string][]string{"subscribe": {"prices.*", "news"}, "request": {"rpc.*"}})
	h.idp.AddClient("bob", "bob-secret", []string{"bob.*"})
	h.otherIdP.AddClient("alice", "alice-secret", []string{"*"})
	h.t = t

	h.apiKey = "k_" + hex.EncodeToString(randomBytes(t, 32))
	sum := sha256.Sum256([]byte(h.apiKey))
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	h.signer = priv
	_, h.strangerSigner, _ = ed25519.GenerateKey(rand.Reader)
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})

	file := filepath.Join(t.TempDir(), "tslm.toml")
	conf := fmt.Sprintf(`
[listener.public]
max_connections_per_ip = %d

[auth]
timeout = "1s"

[auth.oidc]
issuer = %q
audience = %q

[auth.publisher_tokens]
issuer = %q
audience = %q

[[auth.api_key]]
name = "billing"
sha256 = %q
grants = { create = ["*"], publish = ["prices.*", "rpc.*", "news"], serve = ["rpc.*"], subscribe = ["flood.*"] }

[[auth.token_key]]
kid = "pub-1"
ed25519 = """
%s"""

[[channel]]
pattern = "open.*"
anonymous = ["subscribe"]

[[channel]]
pattern = "rpc.*"
public = ["subscribe", "request"]
`, hostileMaxPerIP, h.idp.Issuer(), hostileAudience, hostileTokenIss, hostileAudience, hex.EncodeToString(sum[:]), pemKey)
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	h.proc = startBinary(t, map[string]string{
		"TSLM_CONFIG":            file,
		"TSLM_PUBLIC_AUTH":       "optional",
		"TSLM_INTERNAL_AUTH":     "required",
		"TSLM_HANDSHAKE_TIMEOUT": "1s",
	})
	h.public = h.proc.addr(t, "public")
	h.internal = h.proc.addr(t, "internal")
	return h
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// publisherToken signs a publisher token with key under kid.
func publisherToken(t testing.TB, key any, method jwt.SigningMethod, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ssoClaims are the claims of an access token of h.idp for sub, with
// overrides.
func (h *hostileGateway) ssoClaims(sub string, overrides map[string]any) map[string]any {
	now := time.Now()
	c := map[string]any{"iss": h.idp.Issuer(), "sub": sub, "aud": []string{hostileAudience},
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "tslm": []string{"*"}}
	for k, v := range overrides {
		c[k] = v
	}
	return c
}

func (h *hostileGateway) goodClaims(grants map[string][]string) jwt.MapClaims {
	return jwt.MapClaims{"sub": "ci", "iss": hostileTokenIss, "aud": hostileAudience,
		"exp": time.Now().Add(time.Hour).Unix(), "tslm": grants}
}

// dialAuth dials url with an optional bearer credential; it returns the
// connection or the HTTP refusal.
func dialAuth(t testing.TB, url, bearer string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	if hdr == nil {
		hdr = http.Header{}
	}
	if bearer != "" {
		hdr.Set("Authorization", "Bearer "+bearer)
	}
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial(url, hdr)
	if conn != nil {
		t.Cleanup(func() { conn.Close() })
	}
	return conn, resp, err
}

// refusedWith returns a check that an upgrade was refused with status;
// the check returns the body. A 401 must say how to authenticate.
func refusedWith(t *testing.T, status int) func(*websocket.Conn, *http.Response, error) string {
	return func(conn *websocket.Conn, resp *http.Response, err error) string {
		t.Helper()
		if err == nil {
			conn.Close()
			t.Fatalf("upgraded, want HTTP %d", status)
		}
		if resp == nil || resp.StatusCode != status {
			t.Fatalf("dial: %v, response %v; want HTTP %d", err, resp, status)
		}
		if status == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without a Bearer challenge: WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
}

// TestHostileInputs runs a table of attacks against one real gateway
// process, each expecting its documented answer, while a bystander
// subscriber receives a steady stream: at the end the process is up and
// the bystander has every message, in order.
func TestHostileInputs(t *testing.T) {
	h := startHostileGateway(t)
	pubURL, inURL := "ws://"+h.public+"/v1/ws", "ws://"+h.internal+"/v1/ws"
	api := "http://" + h.internal

	// The publisher creates the channels the cases use.
	pubConn, _, err := dialAuth(t, inURL, h.apiKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := &client{t: t, conn: pubConn}
	for _, ch := range []string{"prices.live", "prices.other", "news", "open.board", "rpc.quote", "bob.feed"} {
		pub.send(map[string]any{"type": "create", "ref": ch, "channel": ch})
		pub.expect(map[string]any{"type": "ack", "ref": ch})
	}

	// The bystander: a legitimate SSO subscriber.
	aliceToken := h.idp.Token(t, "alice")
	byConn, _, err := dialAuth(t, pubURL, aliceToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	bystander := &client{t: t, conn: byConn}
	bystander.subscribe("prices.live", nil)

	// A steady publisher, through the HTTP API with the API key.
	var published []string
	var pubMu sync.Mutex
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			req, _ := http.NewRequest("POST", api+"/v1/channels/prices.live/messages", strings.NewReader(fmt.Sprintf(`{"n":%d}`, i)))
			req.Header.Set("Authorization", "Bearer "+h.apiKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			var ack struct {
				ID string `json:"id"`
			}
			json.NewDecoder(resp.Body).Decode(&ack)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
				t.Errorf("publish %d: HTTP %d", i, resp.StatusCode)
				return
			}
			pubMu.Lock()
			published = append(published, ack.ID)
			pubMu.Unlock()
		}
	}()

	cases := hostileCases(h, pubURL, inURL, api)
	if len(cases) < 40 {
		t.Fatalf("%d hostile cases, want at least 40", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, c.run)
	}

	close(stop)
	<-pubDone
	pubMu.Lock()
	want := append([]string(nil), published...)
	pubMu.Unlock()
	got := bystander.messages("prices.live", len(want))
	sameIDs(t, "bystander's messages", got, want)
	if resp, err := http.Get(api + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("gateway after the hostile inputs: %v %v", resp, err)
	}
	select {
	case err := <-h.proc.exited:
		t.Fatalf("gateway exited: %v\n%s", err, h.proc.output())
	default:
	}
	for _, l := range h.proc.logLines() {
		line, _ := json.Marshal(l)
		if strings.Contains(string(line), h.apiKey) || strings.Contains(string(line), aliceToken) {
			t.Fatalf("a credential reached the log: %s", line)
		}
	}
}

type hostileCase struct {
	name string
	run  func(t *testing.T)
}

func hostileCases(h *hostileGateway, pubURL, inURL, api string) []hostileCase {
	var cases []hostileCase
	add := func(name string, run func(t *testing.T)) { cases = append(cases, hostileCase{name, run}) }
	// Upgrades refused before the upgrade with 401.
	unauthorizedUpgrade := func(url, bearer string) func(t *testing.T) {
		return func(t *testing.T) {
			body := refusedWith(t, http.StatusUnauthorized)(dialAuth(t, url, bearer, nil))
			_ = body
		}
	}
	good := h.goodClaims(map[string][]string{"publish": {"prices.*"}})
	expired := h.goodClaims(map[string][]string{"publish": {"prices.*"}})
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	notYet := h.goodClaims(map[string][]string{"publish": {"prices.*"}})
	notYet["nbf"] = time.Now().Add(time.Hour).Unix()
	wrongAud := h.goodClaims(map[string][]string{"publish": {"prices.*"}})
	wrongAud["aud"] = "someone-else"
	wrongIss := h.goodClaims(map[string][]string{"publish": {"prices.*"}})
	wrongIss["iss"] = "https://evil.example"
	valid := publisherToken(h.t, h.signer, jwt.SigningMethodEdDSA, "pub-1", good)
	parts := strings.Split(valid, ".")
	none := publisherToken(h.t, jwt.UnsafeAllowNoneSignatureType, jwt.SigningMethodNone, "pub-1", good)

	add("forged signature", unauthorizedUpgrade(inURL, parts[0]+"."+parts[1]+"."+strings.Repeat("A", len(parts[2]))))
	add("token signed by an unlisted key", unauthorizedUpgrade(inURL, publisherToken(h.t, h.strangerSigner, jwt.SigningMethodEdDSA, "pub-1", good)))
	add("unknown kid", unauthorizedUpgrade(inURL, publisherToken(h.t, h.signer, jwt.SigningMethodEdDSA, "pub-2", good)))
	add("no kid", unauthorizedUpgrade(inURL, publisherToken(h.t, h.signer, jwt.SigningMethodEdDSA, "", good)))
	add("alg none", unauthorizedUpgrade(inURL, none))
	add("expired publisher token", unauthorizedUpgrade(inURL, publisherToken(h.t, h.signer, jwt.SigningMethodEdDSA, "pub-1", expired)))
	add("publisher token not yet valid", unauthorizedUpgrade(inURL, publisherToken(h.t, h.signer, jwt.SigningMethodEdDSA, "pub-1", notYet)))
	add("publisher token for another audience", unauthorizedUpgrade(inURL, publisherToken(h.t, h.signer, jwt.SigningMethodEdDSA, "pub-1", wrongAud)))
	add("publisher token from another issuer", unauthorizedUpgrade(inURL, publisherToken(h.t, h.signer, jwt.SigningMethodEdDSA, "pub-1", wrongIss)))
	add("HS256 keyed with the public key (alg confusion)", unauthorizedUpgrade(inURL, publisherToken(h.t, []byte(h.signer.Public().(ed25519.PublicKey)), jwt.SigningMethodHS256, "pub-1", good)))
	add("API key whose hash is not listed", unauthorizedUpgrade(inURL, h.apiKey+"x"))
	add("empty bearer", func(t *testing.T) {
		hdr := http.Header{"Authorization": {"Bearer "}}
		refusedWith(t, http.StatusUnauthorized)(dialAuth(t, inURL, "", hdr))
	})
	add("basic authorization", func(t *testing.T) {
		hdr := http.Header{"Authorization": {"Basic YWxpY2U6cHc="}}
		refusedWith(t, http.StatusUnauthorized)(dialAuth(t, inURL, "", hdr))
	})
	add("credential of 64 KiB", unauthorizedUpgrade(inURL, strings.Repeat("a", 64<<10)))
	add("no credentials on the internal listener", func(t *testing.T) {
		// Required mode: the upgrade succeeds, commands are refused, and
		// the connection is closed once the auth deadline passes.
		c := h.dialWS(t, inURL, "")
		c.send(map[string]any{"type": "publish", "ref": "p", "channel": "prices.live", "data": 1})
		c.expect(map[string]any{"type": "error", "ref": "p", "code": "unauthorized"})
		c.expectClose(4500)
	})
	add("auth frame that never comes", func(t *testing.T) {
		c := h.dialWS(t, inURL, "")
		c.expectClose(4500)
	})
	add("garbage auth frame", func(t *testing.T) {
		c := h.dialWS(t, pubURL, "")
		c.send(map[string]any{"type": "auth", "ref": "a", "token": "not a token"})
		c.expect(map[string]any{"type": "error", "ref": "a", "code": "unauthorized"})
		c.subscribe("open.board", nil) // still anonymous, still served
	})
	add("auth frame with a non-string token", func(t *testing.T) {
		c := h.dialWS(t, pubURL, "")
		c.send(map[string]any{"type": "auth", "ref": "a", "token": 42})
		c.expect(map[string]any{"type": "error", "ref": "a", "code": "bad_request"})
	})

	// SSO tokens.
	add("SSO token for another audience", func(t *testing.T) {
		tok := h.idp.Sign(t, h.ssoClaims("alice", map[string]any{"aud": "other-api"}))
		refusedWith(t, http.StatusUnauthorized)(dialAuth(t, pubURL, tok, nil))
	})
	add("SSO token from another provider", unauthorizedUpgradeLazy(pubURL, func(t *testing.T) string { return h.otherIdP.Token(t, "alice") }))
	add("expired SSO token", unauthorizedUpgradeLazy(pubURL, func(t *testing.T) string {
		return h.idp.Sign(t, h.ssoClaims("alice", map[string]any{"exp": time.Now().Add(-time.Minute).Unix()}))
	}))
	add("SSO token presented to another subject's connection", func(t *testing.T) {
		c := h.dialWS(t, pubURL, h.idp.Token(t, "alice"))
		c.send(map[string]any{"type": "auth", "ref": "a", "token": h.idp.Token(t, "bob")})
		c.expect(map[string]any{"type": "error", "ref": "a", "code": "forbidden"})
	})

	// Grants.
	add("token for channel a used on b", func(t *testing.T) {
		c := h.dialWS(t, inURL, valid) // publish prices.*
		c.send(map[string]any{"type": "publish", "ref": "p", "channel": "news", "data": 1})
		c.expect(map[string]any{"type": "error", "ref": "p", "code": "forbidden"})
	})
	add("SSO subscriber outside its patterns", func(t *testing.T) {
		c := h.dialWS(t, pubURL, h.idp.Token(t, "bob"))
		c.send(map[string]any{"type": "subscribe", "ref": "s", "channel": "prices.live"})
		c.expect(map[string]any{"type": "error", "ref": "s", "code": "forbidden"})
	})
	add("anonymous subscribe outside the anonymous pattern", func(t *testing.T) {
		c := h.dialWS(t, pubURL, "")
		c.send(map[string]any{"type": "subscribe", "ref": "s", "channel": "prices.live"})
		c.expect(map[string]any{"type": "error", "ref": "s", "code": "unauthorized"})
	})
	add("publish on the public listener with publish grants", func(t *testing.T) {
		// The public listener does not allow publish, whatever the token.
		c := h.dialWS(t, pubURL, h.apiKey)
		c.send(map[string]any{"type": "publish", "ref": "p", "channel": "prices.live", "data": 1})
		c.expect(map[string]any{"type": "error", "ref": "p", "code": "forbidden"})
	})
	add("request without a request grant", func(t *testing.T) {
		c := h.dialWS(t, pubURL, h.idp.Token(t, "bob"))
		c.send(map[string]any{"type": "request", "ref": "r", "channel": "rpc.quote", "data": 1})
		c.expect(map[string]any{"type": "error", "ref": "r", "code": "forbidden"})
	})
	add("serve without a serve grant", func(t *testing.T) {
		c := h.dialWS(t, inURL, valid)
		c.send(map[string]any{"type": "serve", "ref": "s", "channel": "rpc.quote"})
		c.expect(map[string]any{"type": "error", "ref": "s", "code": "forbidden"})
	})
	add("reply without a serve grant", func(t *testing.T) {
		c := h.dialWS(t, inURL, valid)
		c.send(map[string]any{"type": "reply", "ref": "y", "channel": "rpc.quote", "id": "1-0", "data": 1})
		c.expect(map[string]any{"type": "error", "ref": "y", "code": "forbidden"})
	})
	add("another subject's session token", func(t *testing.T) {
		alice := h.dialWS(t, pubURL, h.idp.Token(t, "alice"))
		alice.send(map[string]any{"type": "request", "ref": "r", "channel": "rpc.quote", "data": 1, "timeout_ms": 60000})
		ack := alice.expect(map[string]any{"type": "ack", "ref": "r"})
		bob := h.dialWS(t, pubURL, h.idp.Token(t, "bob"))
		bob.send(map[string]any{"type": "session", "ref": "s", "session": ack["session"]})
		bob.expect(map[string]any{"type": "error", "ref": "s", "code": "not_found"})
	})
	add("a session inbox by name", func(t *testing.T) {
		c := h.dialWS(t, inURL, h.apiKey)
		c.send(map[string]any{"type": "subscribe", "ref": "s", "channel": "_inbox.0123456789abcdef0123456789abcdef"})
		c.expect(map[string]any{"type": "error", "ref": "s", "code": "forbidden"})
	})

	// Malformed names and frames.
	for _, name := range []string{"a{b}", "a\x00b", "a b", strings.Repeat("x", 129)} {
		add(fmt.Sprintf("channel name %.12q", name), func(t *testing.T) {
			c := h.dialWS(t, inURL, h.apiKey)
			c.send(map[string]any{"type": "create", "ref": "c", "channel": name})
			c.expect(map[string]any{"type": "error", "ref": "c", "code": "bad_request"})
		})
	}
	add("channel name of 1 MB", func(t *testing.T) {
		// The server closes at 128 KiB, while the client is still
		// writing: its close frame may be lost to the reset that follows
		// (the client's unread bytes), so the close is also checked where
		// it is counted.
		closes := func() float64 {
			return h.metric(t, `tslm_server_closes_total{code="1009",listener="public"}`)
		}
		before := closes()
		c := h.dialWS(t, pubURL, "")
		frame := `{"type":"subscribe","ref":"s","channel":"` + strings.Repeat("x", 1<<20) + `"}`
		go c.conn.WriteMessage(websocket.TextMessage, []byte(frame))
		_, err := c.next(15 * time.Second)
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code != websocket.CloseMessageTooBig {
			t.Fatalf("closed with %d, want 1009", ce.Code)
		}
		eventually(t, 10*time.Second, "the 1009 close to be counted", func() bool { return closes() == before+1 })
	})
	add("binary frame", func(t *testing.T) {
		c := h.dialWS(t, pubURL, "")
		c.conn.WriteMessage(websocket.BinaryMessage, []byte(`{"type":"subscribe"}`))
		c.expect(map[string]any{"type": "error", "code": "bad_request"})
	})
	add("invalid UTF-8", func(t *testing.T) {
		c := h.dialWS(t, pubURL, "")
		c.conn.WriteMessage(websocket.TextMessage, []byte("{\"type\":\"subscribe\",\"channel\":\"\xff\"}"))
		c.expect(map[string]any{"type": "error", "code": "bad_request"})
	})
	add("not JSON", func(t *testing.T) {
		c := h.dialWS(t, pubURL, "")
		c.conn.WriteMessage(websocket.TextMessage, []byte("subscribe prices"))
		c.expect(map[string]any{"type": "error", "code": "bad_request"})
	})
	add("unknown type", func(t *testing.T) {
		c := h.dialWS(t, pubURL, "")
		c.send(map[string]any{"type": "exec", "ref": "x"})
		c.expect(map[string]any{"type": "error", "ref": "x", "code": "unknown_type"})
	})
	add("ref of 1 KiB", func(t *testing.T) {
		c := h.dialWS(t, pubURL, "")
		c.send(map[string]any{"type": "subscribe", "ref": strings.Repeat("r", 1024), "channel": "open.board"})
		c.expect(map[string]any{"type": "error", "code": "bad_request"})
	})
	add("10 000 subscribes on one connection", func(t *testing.T) {
		// 101 channels exist; the connection subscribes to each, then to
		// them all again, 10 000 subscribes in all: 100 acks, then
		// limit_exceeded for the 101st channel and bad_request for the
		// repeats, and the connection still answers.
		const channels = hostileSubLimit + 1
		c := h.dialWS(t, inURL, h.apiKey)
		for i := range channels {
			c.send(map[string]any{"type": "create", "ref": fmt.Sprint("c", i), "channel": fmt.Sprint("flood.", i)})
			c.expect(map[string]any{"type": "ack"})
		}
		for i := range 10_000 {
			c.send(map[string]any{"type": "subscribe", "ref": fmt.Sprint(i), "channel": fmt.Sprint("flood.", i%channels)})
		}
		answers := map[string]int{}
		for range 10_000 {
			f := c.read()
			switch {
			case f["type"] == "ack":
				answers["ack"]++
			case f["type"] == "error":
				answers[f["code"].(string)]++
			default:
				t.Fatalf("unexpected frame %v", f)
			}
		}
		want := map[string]int{"ack": hostileSubLimit, "limit_exceeded": 10_000 / channels, "bad_request": 10_000 - hostileSubLimit - 10_000/channels}
		if fmt.Sprint(answers) != fmt.Sprint(want) {
			t.Fatalf("answers %v, want %v", answers, want)
		}
		c.send(map[string]any{"type": "unsubscribe", "ref": "u", "channel": "flood.0"})
		c.expect(map[string]any{"type": "ack", "ref": "u"})
	})
	add("command flood on the public listener", func(t *testing.T) {
		c := h.dialWS(t, pubURL, "")
		for i := range 2000 {
			if c.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"unsubscribe","channel":"open.board"}`)) != nil {
				_ = i
				break
			}
		}
		c.expectClose(websocket.ClosePolicyViolation)
	})

	// The transport.
	add("handshake that never finishes", func(t *testing.T) {
		conn, br := rawHTTP(t, h.public, "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
		expectClosedByServer(t, conn, br)
	})
	add("not a WebSocket handshake", func(t *testing.T) {
		resp, err := http.Get("http://" + h.public + "/v1/ws")
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("GET /v1/ws: %v %v, want 400", resp, err)
		}
	})
	add("unsupported subprotocol", func(t *testing.T) {
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}}
		_, resp, err := d.Dial(pubURL, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("dial: %v %v, want 400", resp, err)
		}
	})
	add("foreign origin", func(t *testing.T) {
		refusedWith(t, http.StatusForbidden)(dialAuth(t, pubURL, "", http.Header{"Origin": {"https://evil.example"}}))
	})
	add("connections past the per-address limit", func(t *testing.T) {
		// The bystander and publisher hold some already; fill the rest.
		var refused bool
		for i := 0; i < hostileMaxPerIP+1; i++ {
			_, resp, err := dialAuth(t, pubURL, "", nil)
			if err != nil {
				if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
					t.Fatalf("dial %d: %v %v, want 429", i, resp, err)
				}
				refused = true
				break
			}
		}
		if !refused {
			t.Fatal("no connection refused with 429")
		}
	})
	add("X-Forwarded-For from an untrusted peer", func(t *testing.T) {
		// Spoofing other addresses does not escape the per-address
		// limit: the header is not believed.
		var refused bool
		for i := 0; i < hostileMaxPerIP+1; i++ {
			_, resp, err := dialAuth(t, pubURL, "", http.Header{"X-Forwarded-For": {fmt.Sprintf("10.0.0.%d", i)}})
			if err != nil {
				if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
					t.Fatalf("dial %d: %v %v, want 429", i, resp, err)
				}
				refused = true
				break
			}
		}
		if !refused {
			t.Fatal("spoofed X-Forwarded-For escaped the per-address limit")
		}
	})

	// The HTTP API.
	add("HTTP publish without credentials", func(t *testing.T) {
		resp, err := http.Post(api+"/v1/channels/prices.live/messages", "application/json", strings.NewReader(`1`))
		if err != nil || resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("POST without credentials: %v %v, want 401 with WWW-Authenticate", resp, err)
		}
	})
	add("HTTP publish outside the grants", func(t *testing.T) {
		req, _ := http.NewRequest("POST", api+"/v1/channels/bob.feed/messages", strings.NewReader(`1`))
		req.Header.Set("Authorization", "Bearer "+h.apiKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("POST outside the grants: %v %v, want 403", resp, err)
		}
	})
	add("HTTP delete with an expired token", func(t *testing.T) {
		req, _ := http.NewRequest("DELETE", api+"/v1/channels/prices.live", nil)
		req.Header.Set("Authorization", "Bearer "+publisherToken(t, h.signer, jwt.SigningMethodEdDSA, "pub-1", expired))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("DELETE with an expired token: %v %v, want 401", resp, err)
		}
	})
	return cases
}

func unauthorizedUpgradeLazy(url string, token func(t *testing.T) string) func(t *testing.T) {
	return func(t *testing.T) {
		refusedWith(t, http.StatusUnauthorized)(dialAuth(t, url, token(t), nil))
	}
}

// metric reads one series from the gateway's /metrics; 0 when absent.
func (h *hostileGateway) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + h.internal + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	for _, line := range strings.Split(readAll(t, resp), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// dialWS dials with an optional bearer and wraps the connection.
func (h *hostileGateway) dialWS(t *testing.T, url, bearer string) *client {
	t.Helper()
	conn, resp, err := dialAuth(t, url, bearer, nil)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", url, err, resp)
	}
	return &client{t: t, conn: conn}
}
