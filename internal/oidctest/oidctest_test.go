package oidctest_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tslm/tslm/internal/oidctest"
)

// claims decodes a token's payload without verifying it: these tests look
// at what the provider issued, the auth tests at whether it verifies.
func claims(t *testing.T, token string) (header, payload map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	for i, v := range []*map[string]any{&header, &payload} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatal(err)
		}
	}
	return header, payload
}

func TestProviderIssuesClientCredentialsTokens(t *testing.T) {
	p := oidctest.Start(t, oidctest.Options{Algorithm: "ES256", GrantsClaim: "realm_access.tslm", TLS: true})
	if !strings.HasPrefix(p.Issuer(), "https://127.0.0.1:") {
		t.Fatalf("issuer %q", p.Issuer())
	}
	p.AddClient("svc", "s3cret:with/odd&chars", map[string]any{"subscribe": []string{"a.*"}})
	header, payload := claims(t, p.Token(t, "svc"))
	if header["alg"] != "ES256" || header["kid"] != p.KeyID() {
		t.Errorf("header %v, want ES256 and kid %s", header, p.KeyID())
	}
	if payload["iss"] != p.Issuer() || payload["sub"] != "svc" || payload["aud"] == nil || payload["exp"] == nil {
		t.Errorf("registered claims %v", payload)
	}
	realm, _ := payload["realm_access"].(map[string]any)
	grants, _ := realm["tslm"].(map[string]any)
	if subs, _ := grants["subscribe"].([]any); len(subs) != 1 || subs[0] != "a.*" {
		t.Errorf("grants claim %v", payload["realm_access"])
	}

	// Discovery names the issuer and a JWKS holding the current key.
	c := p.HTTPClient()
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	getJSON(t, c, p.Issuer()+"/.well-known/openid-configuration", &doc)
	if doc.Issuer != p.Issuer() {
		t.Fatalf("discovery issuer %q", doc.Issuer)
	}
	kids := func() []string {
		var set struct {
			Keys []struct {
				Kid string `json:"kid"`
			} `json:"keys"`
		}
		getJSON(t, c, doc.JWKSURI, &set)
		var ids []string
		for _, k := range set.Keys {
			ids = append(ids, k.Kid)
		}
		return ids
	}
	first := p.KeyID()
	if got := kids(); len(got) != 1 || got[0] != first {
		t.Fatalf("JWKS kids %v, want [%s]", got, first)
	}
	p.RotateKey()
	second := p.KeyID()
	if got := kids(); len(got) != 2 || got[0] != first || got[1] != second {
		t.Fatalf("after rotation, JWKS kids %v, want [%s %s]", got, first, second)
	}
	if h, _ := claims(t, p.Token(t, "svc")); h["kid"] != second {
		t.Fatalf("after rotation, tokens signed by %v", h["kid"])
	}
	p.RetireOldKeys()
	if got := kids(); len(got) != 1 || got[0] != second {
		t.Fatalf("after retiring, JWKS kids %v", got)
	}
	if p.DiscoveryFetches() != 1 || p.JWKSFetches() != 3 {
		t.Fatalf("counted %d discovery and %d JWKS fetches, want 1 and 3", p.DiscoveryFetches(), p.JWKSFetches())
	}

	p.SetAvailable(false)
	resp, err := c.Get(doc.JWKSURI)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("unavailable provider answered %s", resp.Status)
	}
}

func TestProviderRefusesWrongSecret(t *testing.T) {
	p := oidctest.Start(t, oidctest.Options{Algorithm: "EdDSA"})
	p.AddClient("svc", "right", nil)
	for _, secret := range []string{"wrong", "", "right "} {
		req, err := http.NewRequest(http.MethodPost, p.Issuer()+"/oauth/token", strings.NewReader("grant_type=client_credentials"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("svc", secret)
		resp, err := p.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 4 || !strings.Contains(string(body), "invalid_client") {
			t.Errorf("secret %q: %s %s", secret, resp.Status, body)
		}
	}
	if _, payload := claims(t, p.Token(t, "svc")); payload["tslm"] != nil || payload["sub"] != "svc" {
		t.Fatalf("a client without grants: %v", payload)
	}
}

func getJSON(t *testing.T, c *http.Client, url string, v any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
