package httpapi

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/broker"
)

// Tests of docs/http-api.md "Authentication", with a real Authenticator
// over API keys.

// apiKeys makes an authenticator of keys, each standing for a principal
// named like its key.
func apiKeys(t *testing.T, keys map[string][]auth.Grant, expired ...string) *auth.Authenticator {
	t.Helper()
	var cfg auth.PublisherConfig
	for key, grants := range keys {
		p := auth.Principal{Subject: key, Grants: grants}
		for _, e := range expired {
			if e == key {
				p.Expires = time.Now().Add(-time.Minute)
			}
		}
		cfg.APIKeys = append(cfg.APIKeys, auth.APIKey{SHA256: sha256.Sum256([]byte(key)), Principal: p})
	}
	v, err := auth.NewPublisherVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return auth.NewAuthenticator(v, nil)
}

func grantOf(ops auth.OpSet, patterns ...string) auth.Grant {
	g := auth.Grant{Ops: ops}
	for _, p := range patterns {
		g.Patterns = append(g.Patterns, auth.MustParsePattern(p))
	}
	return g
}

func bearerOf(key string) http.Header { return http.Header{"Authorization": {"Bearer " + key}} }

func TestAuthentication(t *testing.T) {
	authn := apiKeys(t, map[string][]auth.Grant{
		"publisher-key": {grantOf(auth.Ops(auth.OpPublish), "orders.*"), grantOf(auth.Ops(auth.OpCreate), "*")},
		"reader-key":    {grantOf(auth.Ops(auth.OpSubscribe), "orders.*")},
		"old-key":       {grantOf(auth.AllOps, "*")},
	}, "old-key")
	rules, err := auth.NewPolicy([]auth.ChannelRule{{Pattern: auth.MustParsePattern("public.*"), Anonymous: auth.Ops(auth.OpSubscribe)}})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureWith(t, Config{AuthMode: auth.ModeOptional, Authenticator: authn, Policy: rules})
	publisher, reader := bearerOf("publisher-key"), bearerOf("reader-key")

	challenge := func(t *testing.T, method, path string, header http.Header, wantStatus int, wantCode broker.Code, says, wantChallenge string) {
		t.Helper()
		req, _ := http.NewRequest(method, f.url+path, strings.NewReader(""))
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e errorBody
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != wantStatus || e.Code != wantCode || !strings.Contains(e.Message, says) {
			t.Errorf("%s %s: %d %+v, want %d %s saying %q", method, path, resp.StatusCode, e, wantStatus, wantCode, says)
		}
		if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, wantChallenge) || (wantChallenge == "" && got != "") {
			t.Errorf("%s %s: WWW-Authenticate %q, want %q…", method, path, got, wantChallenge)
		}
	}

	// Granted: each route's operation.
	if status, body := f.doWith(t, http.MethodPut, "/v1/channels/orders.a", "", publisher); status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	for _, ch := range []string{"orders.b", "public.a", "secret"} {
		f.mustDo(t, http.MethodPut, "/v1/channels/"+ch, "", http.StatusUnauthorized, nil) // anonymous may not create
		if status, body := f.doWith(t, http.MethodPut, "/v1/channels/"+ch, "", publisher); status != http.StatusCreated {
			t.Fatalf("create %s: %d %s", ch, status, body)
		}
	}
	if status, body := f.doWith(t, http.MethodPost, "/v1/channels/orders.a/messages", `{"n":1}`, publisher); status != http.StatusCreated {
		t.Fatalf("publish: %d %s", status, body)
	}
	if status, body := f.doWith(t, http.MethodGet, "/v1/channels/orders.a/messages", "", reader); status != http.StatusOK || !strings.Contains(string(body), `"n":1`) {
		t.Fatalf("read: %d %s", status, body)
	}
	if status, _ := f.doWith(t, http.MethodGet, "/v1/channels/orders.a", "", reader); status != http.StatusOK {
		t.Fatalf("info: %d", status)
	}
	if status, _ := f.doWith(t, http.MethodGet, "/v1/channels/public.a", "", nil); status != http.StatusOK {
		t.Fatalf("anonymous info of public.a: %d", status) // the anonymous rule
	}

	// Refused: 401 without (valid) credentials, 403 with the wrong ones.
	challenge(t, http.MethodPost, "/v1/channels/orders.a/messages", nil, 401, broker.CodeUnauthorized, "needs credentials", "Bearer")
	challenge(t, http.MethodGet, "/v1/channels/orders.a", bearerOf("nope"), 401, broker.CodeUnauthorized, "API key not recognized",
		`Bearer error="invalid_token", error_description="credentials refused: API key not recognized"`)
	challenge(t, http.MethodGet, "/v1/channels/orders.a", bearerOf("old-key"), 401, broker.CodeUnauthorized, "expired", `Bearer error="invalid_token"`)
	challenge(t, http.MethodGet, "/v1/channels", http.Header{"Authorization": {"Basic eDp5"}}, 401, broker.CodeUnauthorized, "Bearer <credential>", `Bearer error="invalid_token"`)
	challenge(t, http.MethodPost, "/v1/channels/orders.a/messages", reader, 403, broker.CodeForbidden, `publish on channel "orders.a" is not granted to "reader-key"`, "")
	challenge(t, http.MethodDelete, "/v1/channels/orders.a", reader, 403, broker.CodeForbidden, "create", "")
	challenge(t, http.MethodGet, "/v1/channels/secret/messages", publisher, 403, broker.CodeForbidden, "subscribe", "")
	// A bad name is a bad name, whoever asks.
	challenge(t, http.MethodGet, "/v1/channels/a%20b", reader, 400, broker.CodeBadRequest, "channel names", "")
	if info, _ := f.log.Info(t.Context(), "orders.a"); info.Length != 1 {
		t.Errorf("refused publishes stored: length %d", info.Length)
	}

	// Listings hold only what the client may subscribe to.
	list := func(header http.Header) []string {
		t.Helper()
		status, body := f.doWith(t, http.MethodGet, "/v1/channels?limit=3", "", header)
		var page listResponse
		if err := json.Unmarshal(body, &page); status != http.StatusOK || err != nil {
			t.Fatalf("list: %d %s", status, body)
		}
		var names []string
		for {
			names = append(names, page.Channels...)
			if page.Cursor == "" {
				return names
			}
			_, body = f.doWith(t, http.MethodGet, "/v1/channels?limit=3&cursor="+page.Cursor, "", header)
			page = listResponse{}
			json.Unmarshal(body, &page)
		}
	}
	for _, c := range []struct {
		who    string
		header http.Header
		want   string
	}{{"reader", reader, "orders.a orders.b public.a"}, {"anonymous", nil, "public.a"}, {"publisher", publisher, "public.a"}} {
		if got := strings.Join(list(c.header), " "); got != c.want {
			t.Errorf("%s lists %q, want %q", c.who, got, c.want)
		}
	}
	if st := f.api.Stats(); st.AuthOK == 0 || st.AuthRefused != 3 {
		t.Errorf("stats %+v, want 3 refused", st)
	}

	t.Run("required", func(t *testing.T) {
		f := newFixtureWith(t, Config{AuthMode: auth.ModeRequired, Authenticator: authn, Policy: rules})
		f.doWith(t, http.MethodPut, "/v1/channels/public.a", "", publisher)
		// Even what anonymous clients may do elsewhere needs credentials.
		status, body := f.doWith(t, http.MethodGet, "/v1/channels/public.a", "", nil)
		wantError(t, status, body, 401, broker.CodeUnauthorized, "requires credentials")
		status, body = f.doWith(t, http.MethodGet, "/v1/channels", "", nil)
		wantError(t, status, body, 401, broker.CodeUnauthorized, "requires credentials")
		if status, _ := f.doWith(t, http.MethodGet, "/v1/channels/public.a", "", reader); status != http.StatusOK {
			t.Errorf("with credentials: %d", status)
		}
	})
	t.Run("off", func(t *testing.T) {
		f := newFixtureWith(t, Config{Authenticator: authn, Policy: rules})
		if status, body := f.doWith(t, http.MethodPut, "/v1/channels/secret", "", bearerOf("nope")); status != http.StatusCreated {
			t.Errorf("mode off: %d %s", status, body)
		}
	})
}

// TestListenerTokens: on a listener with tokens, every route (the 404 and
// 405 answers included) needs one in the TSLM-Auth-Token header; with it,
// a request is one without credentials, as the listener's auth mode sees
// it.
func TestListenerTokens(t *testing.T) {
	authn := apiKeys(t, map[string][]auth.Grant{"publisher-key": {grantOf(auth.AllOps, "*")}})
	f := newFixtureWith(t, Config{AuthMode: auth.ModeOptional, Authenticator: authn,
		Tokens: auth.NewListenerTokens([]auth.Secret{"s3cret-token"})})
	token := http.Header{auth.ListenerTokenHeader: {"s3cret-token"}}
	for _, c := range []struct {
		name, method, path string
		header             http.Header
		says               string
	}{
		{"no token", http.MethodGet, "/v1/channels", nil, "no listener token"},
		{"no token, with credentials", http.MethodPut, "/v1/channels/a", bearerOf("publisher-key"), "no listener token"},
		{"wrong token", http.MethodGet, "/v1/channels", http.Header{auth.ListenerTokenHeader: {"s3cret-tokem"}}, "refused"},
		{"two tokens", http.MethodGet, "/v1/channels", http.Header{auth.ListenerTokenHeader: {"s3cret-token", "s3cret-token"}}, "refused"},
		{"token as a bearer", http.MethodGet, "/v1/channels", bearerOf("s3cret-token"), "no listener token"},
		{"unknown route", http.MethodGet, "/v1/nothing", nil, "no listener token"},
		{"wrong method", http.MethodPatch, "/v1/channels/a", nil, "no listener token"},
	} {
		status, body := f.doWith(t, c.method, c.path, "", c.header)
		var e errorBody
		if err := json.Unmarshal(body, &e); err != nil || status != http.StatusUnauthorized || e.Code != broker.CodeUnauthorized || !strings.Contains(e.Message, c.says) {
			t.Errorf("%s: %d %s, want 401 unauthorized saying %q", c.name, status, body, c.says)
		}
		if strings.Contains(string(body), "s3cret") {
			t.Errorf("%s: the answer repeats the token: %s", c.name, body)
		}
	}
	withKey := http.Header{auth.ListenerTokenHeader: {"s3cret-token"}, "Authorization": {"Bearer publisher-key"}}
	if status, body := f.doWith(t, http.MethodPut, "/v1/channels/a", "", withKey); status != http.StatusCreated {
		t.Fatalf("create with token and credentials: %d %s", status, body)
	}
	// The token is no credential: optional mode refuses what only
	// credentials allow.
	if status, body := f.doWith(t, http.MethodPut, "/v1/channels/b", "", token); status != http.StatusUnauthorized || !strings.Contains(string(body), "needs credentials") {
		t.Fatalf("create with the token alone: %d %s, want 401 for want of credentials", status, body)
	}
	if status, _ := f.doWith(t, http.MethodGet, "/v1/nothing", "", token); status != http.StatusNotFound {
		t.Errorf("unknown route with the token: %d, want 404", status)
	}
}
