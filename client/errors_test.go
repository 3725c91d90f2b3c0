package client_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/client"
	"github.com/tslm/tslm/gateway"
)

// TestSentinelsCoverEveryCode holds the sentinels to the codes the gateway
// defines (broker/codes.go): a code added there without its sentinel here
// fails. CodeCanceled is never sent.
func TestSentinelsCoverEveryCode(t *testing.T) {
	file, err := parser.ParseFile(token.NewFileSet(), "../broker/codes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	ast.Inspect(file, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok || len(spec.Values) != 1 {
			return true
		}
		if id, ok := spec.Type.(*ast.Ident); !ok || id.Name != "Code" {
			return true
		}
		if lit, ok := spec.Values[0].(*ast.BasicLit); ok {
			v, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			if v != "canceled" {
				defined[v] = true
			}
		}
		return true
	})
	if len(defined) < 10 {
		t.Fatalf("found %d codes in broker/codes.go: the parse went wrong", len(defined))
	}
	have := map[string]bool{}
	for _, s := range client.Sentinels() {
		code := strings.TrimPrefix(s.Error(), "tslm: ")
		have[code] = true
		if !errors.Is(&client.Error{Code: code}, s) {
			t.Errorf("an Error of code %s does not match its sentinel", code)
		}
		for _, other := range client.Sentinels() {
			if other != s && errors.Is(&client.Error{Code: code}, other) {
				t.Errorf("an Error of code %s matches %v", code, other)
			}
		}
	}
	for code := range defined {
		if !have[code] {
			t.Errorf("code %q of broker/codes.go has no sentinel", code)
		}
	}
	for code := range have {
		if !defined[code] {
			t.Errorf("sentinel %q names no code of broker/codes.go", code)
		}
	}
}

// TestGatewayErrorsTyped provokes the codes a gateway answers to a
// client's commands and checks each arrives as its sentinel.
func TestGatewayErrorsTyped(t *testing.T) {
	r := startReplica(t, map[string]string{
		"TSLM_MAX_DATA_BYTES":  "100",
		"TSLM_PUBLIC_RATE":     "1",
		"TSLM_PUBLIC_BURST":    "3",
		"TSLM_REQUEST_TIMEOUT": "100ms",
		"TSLM_PUBLIC_ALLOW":    "subscribe,publish",
		"TSLM_MAX_LAST":        "5",
	}, withAPIKey("optional"))
	in := dial(t, r.internal)
	ctx := ctxT(t)
	in.Create(ctx, "a", client.ChannelOptions{})
	in.Create(ctx, "b", client.ChannelOptions{})
	check := func(what string, err, want error) {
		t.Helper()
		var e *client.Error
		if !errors.Is(err, want) || !errors.As(err, &e) {
			t.Errorf("%s: %v, want %v as a *client.Error", what, err, want)
		}
	}
	_, err := in.Publish(ctx, "no such!", 1)
	check("bad name", err, client.ErrBadRequest)
	_, err = in.Publish(ctx, "missing", 1)
	check("missing channel", err, client.ErrNotFound)
	_, err = in.Publish(ctx, "a", strings.Repeat("x", 200))
	check("large data", err, client.ErrTooLarge)
	_, err = in.Request(context.Background(), "a", 1) // nobody serves a; no deadline: TSLM_REQUEST_TIMEOUT
	check("unserved request", err, client.ErrTimeout)
	_, err = in.Publish(ctx, "_inbox.x", 1)
	check("reserved name", err, client.ErrForbidden)
	_, err = in.Create(ctx, "big", client.ChannelOptions{MaxLen: 1 << 40})
	check("max_len", err, client.ErrLimitExceeded)
	_, err = in.Subscribe(ctx, "a", client.SubscribeOptions{Last: 6})
	check("last over the limit", err, client.ErrLimitExceeded)

	pub := dial(t, r.public)
	_, err = pub.Publish(ctx, "a", 1) // anonymous, and publish needs a grant
	check("anonymous publish", err, client.ErrUnauthorized)
	_, err = pub.Create(ctx, "c", client.ChannelOptions{}) // not in TSLM_PUBLIC_ALLOW
	check("public create", err, client.ErrForbidden)
	var rateLimited bool
	for range 10 {
		if _, err := pub.Subscribe(ctx, "missing", client.SubscribeOptions{}); errors.Is(err, client.ErrRateLimited) {
			rateLimited = true
			break
		}
	}
	if !rateLimited {
		t.Error("no rate_limited after 10 quick commands at 1/s")
	}
}

// testKey is the API key withAPIKey lists.
const testKey = "a-long-random-api-key-for-the-client-tests"

// withAPIKey sets the public listener's auth mode, with an API key
// without grants to check.
func withAPIKey(mode string) func(*gateway.Config) {
	return func(c *gateway.Config) {
		c.PublicAuth = mode
		c.Publishers.APIKeys = append(c.Publishers.APIKeys, auth.APIKey{
			SHA256:    sha256.Sum256([]byte(testKey)),
			Principal: auth.Principal{Subject: "test", Issuer: auth.IssuerAPIKey},
		})
	}
}

// TestFinalRefusals: HTTP 401 at Dial, and close code 4500 once
// connected, end the client; neither is retried.
func TestFinalRefusals(t *testing.T) {
	r := startReplica(t, map[string]string{"TSLM_AUTH_TIMEOUT": "200ms"}, withAPIKey("required"))
	ctx := ctxT(t)
	_, err := client.Dial(ctx, r.public, client.WithBearer("not-a-key"), client.WithLogger(quietLogger()))
	var he *client.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != 401 || !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("dial with a bad key: %v, want a 401 HandshakeError", err)
	}
	c := dial(t, r.public)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("client still running 10s after the auth timeout")
	}
	var de *client.DisconnectError
	if err := c.Err(); !errors.As(err, &de) || de.Code != 4500 || !de.Final || !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("Err %v, want a final DisconnectError 4500", err)
	}
	if _, err := c.Publish(ctx, "a", 1); !errors.As(err, &de) || de.Code != 4500 {
		t.Fatalf("publish after 4500: %v", err)
	}
}

// scripted is a WebSocket server that plays a script per connection, for
// what a real gateway does not do on demand.
type scripted struct {
	*httptest.Server
	conns atomic.Int32
}

func startScripted(t testing.TB, play func(n int, ws *websocket.Conn, w http.ResponseWriter)) *scripted {
	t.Helper()
	s := &scripted{}
	up := websocket.Upgrader{Subprotocols: []string{"tslm.v1"}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(s.conns.Add(1))
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		play(n, ws, w)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *scripted) url() string { return "ws" + strings.TrimPrefix(s.URL, "http") }

// readFrame reads a client frame as a map.
func readFrame(ws *websocket.Conn) (map[string]any, error) {
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	var f map[string]any
	return f, json.Unmarshal(b, &f)
}

func closeWith(ws *websocket.Conn, code int) {
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "scripted"), time.Now().Add(time.Second))
}

// TestEveryCodeTyped answers each command with the next documented code:
// each arrives as a *client.Error matching its sentinel.
func TestEveryCodeTyped(t *testing.T) {
	srv := startScripted(t, func(_ int, ws *websocket.Conn, _ http.ResponseWriter) {
		for _, s := range client.Sentinels() {
			f, err := readFrame(ws)
			if err != nil {
				return
			}
			code := strings.TrimPrefix(s.Error(), "tslm: ")
			ws.WriteJSON(map[string]any{"type": "error", "ref": f["ref"], "code": code, "message": "scripted " + code, "channel": "a"})
		}
		readFrame(ws)
	})
	c := dial(t, srv.url())
	for _, s := range client.Sentinels() {
		_, err := c.Publish(ctxT(t), "a", 1)
		var e *client.Error
		if !errors.Is(err, s) || !errors.As(err, &e) || e.Channel != "a" || !strings.HasPrefix(e.Message, "scripted") {
			t.Errorf("got %v, want %v", err, s)
		}
	}
}

// TestCloseCodes: 1001, 4000 and 4001 reconnect and resubscribe after the
// last message delivered; a gap is an event; 4501 ends the client, as does
// a 403 refusal of a reconnection.
func TestCloseCodes(t *testing.T) {
	type sub struct{ since string }
	subs := make(chan sub, 10)
	srv := startScripted(t, func(n int, ws *websocket.Conn, w http.ResponseWriter) {
		f, err := readFrame(ws)
		if err != nil || f["type"] != "subscribe" {
			return
		}
		since, _ := f["since"].(string)
		subs <- sub{since}
		ws.WriteJSON(map[string]any{"type": "ack", "ref": f["ref"], "channel": "a", "head": "5-0"})
		id := fmt.Sprintf("%d-0", 5+n)
		ws.WriteJSON(map[string]any{"type": "message", "channel": "a", "id": id, "data": n})
		switch n {
		case 1:
			closeWith(ws, 1001)
		case 2:
			closeWith(ws, 4000)
		case 3:
			ws.WriteJSON(map[string]any{"type": "gap", "channel": "a", "after": id})
			closeWith(ws, 4001)
		case 4:
			closeWith(ws, 4501)
		}
		readFrame(ws) // until the client goes
	})
	c := dial(t, srv.url())
	s, err := c.Subscribe(ctxT(t), "a", client.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantSince := []string{"", "6-0", "7-0", "8-0"}
	for i, want := range wantSince {
		got := <-subs
		if got.since != want {
			t.Fatalf("subscribe %d: since %q, want %q", i+1, got.since, want)
		}
		if m := nextMessage(t, s); m.ID != fmt.Sprintf("%d-0", 6+i) {
			t.Fatalf("message %s, want %d-0", m.ID, 6+i)
		}
		if i == 2 {
			if ev := next(t, s); ev != (client.Gap{Channel: "a", After: "8-0"}) {
				t.Fatalf("event %#v, want the gap", ev)
			}
		}
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("client still running after 4501")
	}
	var de *client.DisconnectError
	if !errors.As(c.Err(), &de) || de.Code != 4501 || !errors.Is(c.Err(), client.ErrUnauthorized) {
		t.Fatalf("Err %v, want 4501", c.Err())
	}
	if _, ok := <-s.Events(); ok {
		t.Fatal("events open after the client stopped")
	}
	if !errors.As(s.Err(), &de) {
		t.Fatalf("subscription Err %v, want the 4501", s.Err())
	}
	if n := srv.conns.Load(); n != 4 {
		t.Fatalf("%d connections, want 4", n)
	}

	// A 403 on reconnecting is final too.
	var refuse atomic.Bool
	srv2 := startScripted(t, func(n int, ws *websocket.Conn, _ http.ResponseWriter) {
		refuse.Store(true)
		closeWith(ws, 1001)
		readFrame(ws)
	})
	srv2.Config.Handler = refusing(&refuse, srv2.Config.Handler)
	c2 := dial(t, srv2.url())
	select {
	case <-c2.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("client still running after a 403")
	}
	var he *client.HandshakeError
	if !errors.As(c2.Err(), &he) || he.StatusCode != 403 || !errors.Is(c2.Err(), client.ErrForbidden) {
		t.Fatalf("Err %v, want the 403", c2.Err())
	}
}

func refusing(refuse *atomic.Bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Load() {
			http.Error(w, "origin refused", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// TestAuthenticate: an auth frame authenticates the connection, a refused
// credential leaves it as it was, and the credential is presented again
// on the next connection.
func TestAuthenticate(t *testing.T) {
	r := startReplica(t, map[string]string{"TSLM_PUBLIC_ALLOW": "subscribe,publish"}, withAPIKey("optional"))
	p := startProxy(t, strings.TrimPrefix(strings.TrimSuffix(r.public, "/v1/ws"), "ws://"))
	ctx := ctxT(t)
	c := dial(t, p.url())
	// The key has no grants: anonymous is unauthorized, authenticated
	// forbidden.
	if _, err := c.Publish(ctx, "a", 1); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("anonymous publish: %v", err)
	}
	if _, _, err := c.Authenticate(ctx, "wrong"); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("a wrong key: %v", err)
	}
	sub, exp, err := c.Authenticate(ctx, testKey)
	if err != nil || sub != "test" || !exp.IsZero() {
		t.Fatalf("authenticate: %q %v %v", sub, exp, err)
	}
	if _, err := c.Publish(ctx, "a", 1); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("authenticated publish without grants: %v, want forbidden", err)
	}
	before := p.acceptCount()
	p.drop()
	waitFor(t, "the reconnection", func() bool { return p.acceptCount() > before })
	if _, err := c.Publish(ctx, "a", 1); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("publish after the reconnect: %v, want forbidden (the credential presented again)", err)
	}
}
