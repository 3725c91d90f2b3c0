package jsclient_test

import (
	"crypto/sha256"
	"encoding/json"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/gateway"
)

// TestBrowserAuth: on a listener that requires credentials, a client
// without one is closed with 4500 and, as the protocol says, does not
// reconnect but reports the error; a client with a credential (sent as
// the auth frame browsers must use) subscribes and receives.
func TestBrowserAuth(t *testing.T) {
	chromium, node := browserPrerequisites(t)
	const key = "browser-test-api-key-0123456789abcdef"
	all, err := auth.ParsePattern("*")
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, gateway.Config{
		PublicAuth:  "required",
		AuthTimeout: 300 * time.Millisecond,
		Publishers: auth.PublisherConfig{APIKeys: []auth.APIKey{{
			SHA256:    sha256.Sum256([]byte(key)),
			Principal: auth.Principal{Subject: "browser", Issuer: auth.IssuerAPIKey, Grants: []auth.Grant{{Ops: auth.Ops(auth.OpSubscribe), Patterns: []auth.Pattern{all}}}},
		}}},
	})
	api := "http://" + g.InternalAddrs()[0].String() + "/v1/channels/secret"
	call(t, "PUT", api, `{}`)
	call(t, "POST", api+"/messages", `{"n":1}`)
	b := startBrowser(t, chromium, node)
	b.do(t, map[string]any{"cmd": "open", "url": "http://" + g.PublicAddrs()[0].String() + "/?channel=secret"})

	const script = `(async () => {
		const { connect } = await import("/tslm.js");
		const out = { events: [] };
		const anon = connect("ws://" + location.host + "/v1/ws");
		anon.on("reconnecting", () => out.events.push("reconnecting"));
		const err = await new Promise((resolve) => anon.on("error", resolve));
		out.anon = { code: err.code, closeCode: err.closeCode, state: anon.state };
		// Long enough for a reconnect that should not happen.
		await new Promise((r) => setTimeout(r, 500));

		const authed = connect("ws://" + location.host + "/v1/ws", { token: () => Promise.resolve(` + "`" + key + "`" + `) });
		for await (const m of authed.subscribe("secret", { since: "0-0" })) { out.received = m.data; break; }
		authed.close();
		return out;
	})()`
	a := b.do(t, map[string]any{"cmd": "eval", "expr": script})
	var out struct {
		Events []string
		Anon   struct {
			Code      string
			CloseCode int
			State     string
		}
		Received map[string]int
	}
	if err := json.Unmarshal(a.Value, &out); err != nil {
		t.Fatalf("%s: %v", a.Value, err)
	}
	if out.Anon.Code != "connection_closed" || out.Anon.CloseCode != 4500 || out.Anon.State != "closed" || len(out.Events) != 0 {
		t.Errorf("client without a credential: %+v, events %q; want connection_closed 4500, closed, no reconnect", out.Anon, out.Events)
	}
	if out.Received["n"] != 1 {
		t.Errorf("client with a credential received %v, want n=1", out.Received)
	}
}

// TestBrowserRefreshesExpiringToken: given a token function, the client
// sends a fresh credential before the first one expires, so the server
// does not close the connection with 4501 and a publish after the first
// token's expiry still goes through on the same connection.
func TestBrowserRefreshesExpiringToken(t *testing.T) {
	chromium, node := browserPrerequisites(t)
	secret := []byte("browser-test-hmac-secret-0123456789abcdef")
	g := startGateway(t, gateway.Config{
		PublicAuth:  "required",
		PublicAllow: []string{"subscribe", "publish"},
		Publishers:  auth.PublisherConfig{JWTKeys: []auth.JWTKey{{ID: "k1", HMAC: secret}}},
	})
	call(t, "PUT", "http://"+g.InternalAddrs()[0].String()+"/v1/channels/refreshed", `{}`)
	token := func(life time.Duration) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": "browser", "exp": time.Now().Add(life).Unix(), "tslm": map[string]any{"publish": []string{"*"}},
		})
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	b := startBrowser(t, chromium, node)
	b.do(t, map[string]any{"cmd": "open", "url": "http://" + g.PublicAddrs()[0].String() + "/?channel=refreshed"})
	// exp counts in whole seconds: the first token lives 2 to 3 seconds.
	tokens, _ := json.Marshal([]string{token(3 * time.Second), token(time.Minute)})

	script := `(async () => {
		const { connect } = await import("/tslm.js");
		const tokens = ` + string(tokens) + `;
		let calls = 0;
		const out = { events: [] };
		const c = connect("ws://" + location.host + "/v1/ws", { token: () => tokens[Math.min(calls++, tokens.length - 1)] });
		c.on("close", (e) => out.events.push("close " + e.code));
		c.on("error", (e) => out.events.push("error " + e.code + " " + e.message));
		try { out.first = (await c.publish("refreshed", 1)).id; } catch (e) { out.events.push("publish1 " + e.code + " " + e.message); }
		await new Promise((r) => setTimeout(r, 4000)); // past the first token's exp
		try { out.second = (await c.publish("refreshed", 2)).id; } catch (e) { out.events.push("publish " + e.code); }
		out.calls = calls;
		c.close();
		return out;
	})()`
	a := b.do(t, map[string]any{"cmd": "eval", "expr": script})
	var out struct {
		Events        []string
		First, Second string
		Calls         int
	}
	if err := json.Unmarshal(a.Value, &out); err != nil {
		t.Fatalf("%s: %v", a.Value, err)
	}
	if out.First == "" || out.Second == "" || out.Calls != 2 || len(out.Events) != 1 || out.Events[0] != "close 1000" {
		t.Errorf("publishes %q, %q; token calls %d; events %q: want both published on one connection with two tokens, closed only by the app", out.First, out.Second, out.Calls, out.Events)
	}
}
