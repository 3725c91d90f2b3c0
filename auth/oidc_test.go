package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/internal/oidctest"
)

// grantsObject is alice's grants claim: operations by name.
var grantsObject = map[string]any{
	"subscribe": []string{"prices.*"},
	"request":   []string{"quotes"},
	"publish":   []string{"chat.*"},
}

func startProvider(t *testing.T, opts oidctest.Options) *oidctest.Provider {
	t.Helper()
	p := oidctest.Start(t, opts)
	p.AddClient("alice", "alice-secret", grantsObject)
	p.AddClient("bob", "bob-secret", []string{"news.*", "weather"})
	p.AddClient("carol", "carol-secret", nil)
	return p
}

// newVerifier verifies p's tokens with audience "tslm"; mod adjusts the
// configuration. It does not wait for the keys: see ready.
func newVerifier(t *testing.T, p *oidctest.Provider, mod func(*auth.OIDCConfig)) *auth.OIDCVerifier {
	t.Helper()
	cfg := auth.OIDCConfig{
		Issuer:     p.Issuer(),
		Audience:   "tslm",
		HTTPClient: p.HTTPClient(),
		Logger:     slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := auth.NewOIDCVerifier(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func ready(t *testing.T, v *auth.OIDCVerifier) {
	t.Helper()
	select {
	case <-v.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("the provider's keys were not loaded within 10s")
	}
}

func mustVerify(t *testing.T, v *auth.OIDCVerifier, token string) *auth.Principal {
	t.Helper()
	p, err := v.Verify(t.Context(), token, time.Now())
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	return p
}

// eventually polls cond until it holds, for at most 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// signWith signs claims with a key of the test's, not the provider's.
func signWith(t *testing.T, method jwt.SigningMethod, kid string, claims map[string]any, key any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, jwt.MapClaims(claims))
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func handMade(header, claims string, sig []byte) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(claims)) + "." + enc(sig)
}

type allow struct {
	op      auth.Op
	channel string
	want    bool
}

func checkAllows(t *testing.T, who string, p *auth.Principal, cases []allow) {
	t.Helper()
	for _, c := range cases {
		if got := p.Allows(c.op, c.channel, time.Now()); got != c.want {
			t.Errorf("%s: Allows(%v, %q) = %v", who, c.op, c.channel, got)
		}
	}
}

func TestOIDCVerifyValid(t *testing.T) {
	for _, tc := range []struct {
		alg string
		tls bool
	}{{"RS256", true}, {"PS256", false}, {"ES384", false}, {"EdDSA", false}} {
		t.Run(tc.alg, func(t *testing.T) {
			p := startProvider(t, oidctest.Options{Algorithm: tc.alg, TLS: tc.tls, TokenTTL: 10 * time.Minute})
			v := newVerifier(t, p, nil)
			if v.Issuer() != p.Issuer() {
				t.Fatalf("Issuer() = %q", v.Issuer())
			}
			ready(t, v)

			before := time.Now()
			alice := mustVerify(t, v, p.Token(t, "alice"))
			if alice.Subject != "alice" || alice.Issuer != p.Issuer() {
				t.Errorf("principal %q of %q", alice.Subject, alice.Issuer)
			}
			// exp has a second's resolution.
			if lo, hi := before.Add(10*time.Minute-time.Second), time.Now().Add(10*time.Minute+time.Second); alice.Expires.Before(lo) || alice.Expires.After(hi) {
				t.Errorf("expires %v, want within [%v, %v]", alice.Expires, lo, hi)
			}
			checkAllows(t, "alice", alice, []allow{
				{auth.OpSubscribe, "prices.eu", true},
				{auth.OpRequest, "quotes", true},
				{auth.OpPublish, "chat.room", true},
				{auth.OpRequest, "prices.eu", false},
				{auth.OpSubscribe, "quotes", false},
				{auth.OpCreate, "chat.room", false},
				{auth.OpServe, "quotes", false},
			})

			// A list of patterns may be subscribed to and requested.
			bob := mustVerify(t, v, p.Token(t, "bob"))
			checkAllows(t, "bob", bob, []allow{
				{auth.OpSubscribe, "news.eu", true},
				{auth.OpRequest, "news.eu", true},
				{auth.OpSubscribe, "weather", true},
				{auth.OpPublish, "news.eu", false},
				{auth.OpSubscribe, "weather.eu", false},
			})

			// No claim: authenticated, granted nothing.
			carol := mustVerify(t, v, p.Token(t, "carol"))
			if carol.Subject != "carol" || len(carol.Grants) != 0 {
				t.Errorf("carol: %+v", carol)
			}
		})
	}
}

func TestOIDCVerifyRefused(t *testing.T) {
	p := startProvider(t, oidctest.Options{})
	v := newVerifier(t, p, nil)
	ready(t, v)
	now := time.Now()
	kid := p.KeyID()
	good := func() map[string]any {
		return map[string]any{
			"iss": p.Issuer(), "sub": "mallory", "aud": []string{"tslm"},
			"exp": now.Add(time.Hour).Unix(), "tslm": []string{"*"},
		}
	}
	with := func(key string, value any) map[string]any {
		c := good()
		if value == nil {
			delete(c, key)
		} else {
			c[key] = value
		}
		return c
	}
	// Control: the crafted tokens below differ from an accepted one in the
	// one way each names.
	if m := mustVerify(t, v, p.Sign(t, good())); m.Subject != "mallory" || !m.Allows(auth.OpSubscribe, "x", now) {
		t.Fatalf("crafted control token: %+v", m)
	}

	rsaPub, err := x509.MarshalPKIXPublicKey(p.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPub})
	rsaPKCS1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(p.PublicKey().(*rsa.PublicKey))})
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, otherEd, _ := ed25519.GenerateKey(rand.Reader)
	claimsJSON := fmt.Sprintf(`{"iss":%q,"sub":"mallory","aud":"tslm","exp":%d,"tslm":["*"]}`, p.Issuer(), now.Add(time.Hour).Unix())
	tampered := func() string {
		parts := strings.Split(p.Sign(t, good()), ".")
		parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(claimsJSON, "mallory", "admin", 1)))
		return strings.Join(parts, ".")
	}()

	for _, tc := range []struct {
		name  string
		token string
		at    time.Time
		want  error
	}{
		{"issued token, an hour later", p.Token(t, "alice"), now.Add(time.Hour), auth.ErrExpired},
		{"expired", p.Sign(t, with("exp", now.Add(-time.Minute).Unix())), now, auth.ErrExpired},
		{"no exp", p.Sign(t, with("exp", nil)), now, auth.ErrMissingClaim},
		{"nbf in the future", p.Sign(t, with("nbf", now.Add(time.Minute).Unix())), now, auth.ErrNotYetValid},
		{"wrong issuer", p.Sign(t, with("iss", "https://evil.example")), now, auth.ErrIssuer},
		{"issuer with a trailing slash", p.Sign(t, with("iss", p.Issuer()+"/")), now, auth.ErrIssuer},
		{"no iss", p.Sign(t, with("iss", nil)), now, auth.ErrMissingClaim},
		{"wrong audience", p.Sign(t, with("aud", []string{"billing", "crm"})), now, auth.ErrAudience},
		{"no aud", p.Sign(t, with("aud", nil)), now, auth.ErrMissingClaim},
		{"no sub", p.Sign(t, with("sub", nil)), now, auth.ErrClaims},
		{"grants with an unknown operation", p.Sign(t, with("tslm", map[string]any{"subscribe": []string{"a"}, "delete": []string{"*"}})), now, auth.ErrClaims},
		{"grants with an operation in capitals", p.Sign(t, with("tslm", map[string]any{"Subscribe": []string{"a"}})), now, auth.ErrClaims},
		{"grants with an invalid pattern", p.Sign(t, with("tslm", []string{"ok", "a{b}"})), now, auth.ErrClaims},
		{"grants with an empty pattern", p.Sign(t, with("tslm", map[string]any{"publish": []string{""}})), now, auth.ErrClaims},
		{"grants a string", p.Sign(t, with("tslm", "prices.*")), now, auth.ErrClaims},
		{"grants of numbers", p.Sign(t, with("tslm", []int{1})), now, auth.ErrClaims},
		{"exp not a number", p.Sign(t, with("exp", "tomorrow")), now, auth.ErrMalformed},
		{"claims tampered", tampered, now, auth.ErrSignature},
		{"key not in the JWKS, own kid", signWith(t, jwt.SigningMethodES256, "forged", good(), otherEC), now, auth.ErrUnknownKID},
		{"key not in the JWKS, provider's kid", signWith(t, jwt.SigningMethodRS256, kid, good(), otherRSA), now, auth.ErrSignature},
		{"ES256 under the RSA key's kid", signWith(t, jwt.SigningMethodES256, kid, good(), otherEC), now, auth.ErrAlg},
		{"EdDSA under the RSA key's kid", signWith(t, jwt.SigningMethodEdDSA, kid, good(), otherEd), now, auth.ErrAlg},
		{"no kid", signWith(t, jwt.SigningMethodRS256, "", good(), otherRSA), now, auth.ErrNoKID},
		{"alg none", handMade(`{"alg":"none","kid":"`+kid+`","typ":"JWT"}`, claimsJSON, nil), now, auth.ErrAlg},
		{"alg none, library-made", signWith(t, jwt.SigningMethodNone, kid, good(), jwt.UnsafeAllowNoneSignatureType), now, auth.ErrAlg},
		{"alg None", handMade(`{"alg":"None","kid":"`+kid+`"}`, claimsJSON, nil), now, auth.ErrAlg},
		// The classic confusion: the provider's public key, which anyone
		// can fetch from its JWKS, used as an HMAC secret.
		{"HS256 with the RSA public key (PEM)", signWith(t, jwt.SigningMethodHS256, kid, good(), rsaPEM), now, auth.ErrAlg},
		{"HS256 with the RSA public key (PKCS#1 PEM)", signWith(t, jwt.SigningMethodHS256, kid, good(), rsaPKCS1), now, auth.ErrAlg},
		{"HS256 with the RSA public key (DER)", signWith(t, jwt.SigningMethodHS256, kid, good(), rsaPub), now, auth.ErrAlg},
		{"HS512 with the RSA public key", signWith(t, jwt.SigningMethodHS512, kid, good(), rsaPEM), now, auth.ErrAlg},
		{"crit header", handMade(`{"alg":"RS256","kid":"`+kid+`","crit":["x"]}`, claimsJSON, []byte("sig")), now, auth.ErrMalformed},
		{"not a JWT", "a.b", now, auth.ErrMalformed},
		{"header not JSON", handMade(`{`, claimsJSON, nil), now, auth.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(t.Context(), tc.token, tc.at)
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			if got != nil {
				t.Errorf("a principal with the error: %+v", got)
			}
			if !errors.Is(err, auth.ErrUnauthenticated) || !errors.Is(err, tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), tc.token) {
				t.Fatalf("error echoes the token: %q", err)
			}
		})
	}
}

func TestOIDCAudienceAndLeeway(t *testing.T) {
	p := startProvider(t, oidctest.Options{Algorithm: "ES256"})
	tok := p.Token(t, "alice")

	billing := newVerifier(t, p, func(c *auth.OIDCConfig) { c.Audience = "billing" })
	ready(t, billing)
	if _, err := billing.Verify(t.Context(), tok, time.Now()); !errors.Is(err, auth.ErrAudience) {
		t.Fatalf("a token for tslm verified for billing: %v", err)
	}
	anyAud := newVerifier(t, p, func(c *auth.OIDCConfig) { c.Audience = "" })
	ready(t, anyAud)
	mustVerify(t, anyAud, tok)

	lenient := newVerifier(t, p, func(c *auth.OIDCConfig) { c.Leeway = 30 * time.Second })
	ready(t, lenient)
	now := time.Now()
	exp := now.Add(-10 * time.Second).Truncate(time.Second)
	late := p.Sign(t, map[string]any{"iss": p.Issuer(), "sub": "s", "aud": "tslm", "exp": exp.Unix()})
	got, err := lenient.Verify(t.Context(), late, now)
	if err != nil {
		t.Fatalf("expired 10s ago, leeway 30s: %v", err)
	}
	if !got.Expires.Equal(exp.Add(30 * time.Second)) {
		t.Errorf("expires %v, want exp plus leeway %v", got.Expires, exp.Add(30*time.Second))
	}
	if _, err := lenient.Verify(t.Context(), late, now.Add(time.Minute)); !errors.Is(err, auth.ErrExpired) {
		t.Errorf("expired past the leeway: %v", err)
	}
}

func TestOIDCGrantsClaim(t *testing.T) {
	p := startProvider(t, oidctest.Options{Algorithm: "ES256", GrantsClaim: "realm_access.tslm"})
	tok := p.Token(t, "alice")

	nested := newVerifier(t, p, func(c *auth.OIDCConfig) { c.GrantsClaim = "realm_access.tslm" })
	ready(t, nested)
	checkAllows(t, "realm_access.tslm", mustVerify(t, nested, tok), []allow{{auth.OpSubscribe, "prices.eu", true}})

	// Looking elsewhere finds no claim: authenticated, granted nothing.
	top := newVerifier(t, p, nil)
	ready(t, top)
	if got := mustVerify(t, top, tok); len(got.Grants) != 0 {
		t.Fatalf("grants from a claim not configured: %+v", got.Grants)
	}

	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{"iss": p.Issuer(), "sub": "s", "aud": "tslm", "exp": time.Now().Add(time.Hour).Unix()}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	// A path through something that is not an object is no claim.
	if got := mustVerify(t, nested, p.Sign(t, claims(map[string]any{"realm_access": "tslm"}))); len(got.Grants) != 0 {
		t.Fatalf("grants through a string: %+v", got.Grants)
	}
	// A namespaced claim's dots are part of its name.
	ns := newVerifier(t, p, func(c *auth.OIDCConfig) { c.GrantsClaim = "https://tslm.example/grants" })
	ready(t, ns)
	got := mustVerify(t, ns, p.Sign(t, claims(map[string]any{"https://tslm.example/grants": []string{"x.*"}})))
	checkAllows(t, "namespaced", got, []allow{{auth.OpSubscribe, "x.1", true}, {auth.OpPublish, "x.1", false}})
}

func TestOIDCUnknownKIDFetchesAfterRotation(t *testing.T) {
	p := startProvider(t, oidctest.Options{Algorithm: "ES256"})
	v := newVerifier(t, p, func(c *auth.OIDCConfig) { c.Refresh = time.Hour })
	ready(t, v)
	old := p.Token(t, "alice")
	mustVerify(t, v, old)
	before := p.JWKSFetches()

	p.RotateKey()
	tok := p.Token(t, "alice")
	// At once: the unknown kid fetches the JWKS, rather than waiting an
	// hour for the refresh.
	mustVerify(t, v, tok)
	if got := p.JWKSFetches() - before; got != 1 {
		t.Fatalf("%d JWKS fetches for the new kid, want 1", got)
	}
	// Known kids fetch nothing; the old key is still published.
	for range 10 {
		mustVerify(t, v, tok)
		mustVerify(t, v, old)
	}
	if got := p.JWKSFetches() - before; got != 1 {
		t.Fatalf("%d JWKS fetches after verifying known kids, want 1", got)
	}
}

func TestOIDCForgedKIDFloodFetchesOncePerInterval(t *testing.T) {
	p := startProvider(t, oidctest.Options{Algorithm: "ES256"})
	const interval = 300 * time.Millisecond
	v := newVerifier(t, p, func(c *auth.OIDCConfig) { c.Refresh = time.Hour; c.UnknownKIDInterval = interval })
	ready(t, v)
	forger, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"iss": p.Issuer(), "sub": "s", "aud": "tslm", "exp": time.Now().Add(time.Hour).Unix()}
	forged := make([]string, 200)
	for i := range forged {
		forged[i] = signWith(t, jwt.SigningMethodES256, fmt.Sprintf("forged-%d", i), claims, forger)
	}

	before := p.JWKSFetches()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(forged))
	for _, tok := range forged {
		wg.Go(func() {
			_, err := v.Verify(t.Context(), tok, time.Now())
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, auth.ErrUnknownKID) {
			t.Fatalf("forged kid: %v", err)
		}
	}
	if got := p.JWKSFetches() - before; got != 1 {
		t.Fatalf("%d JWKS fetches for %d forged kids, want 1", got, len(forged))
	}

	// Once the interval has passed, an unknown kid may fetch again, and
	// not before.
	eventually(t, "a second fetch", func() bool {
		_, err := v.Verify(t.Context(), forged[0], time.Now())
		if !errors.Is(err, auth.ErrUnknownKID) {
			t.Fatalf("forged kid: %v", err)
		}
		return p.JWKSFetches()-before == 2
	})
	if elapsed := time.Since(start); elapsed < interval {
		t.Fatalf("a second fetch %v after the first, within UnknownKIDInterval %v", elapsed, interval)
	}
}

func TestOIDCProviderDownAtStart(t *testing.T) {
	p := startProvider(t, oidctest.Options{Algorithm: "ES256"})
	tok := p.Token(t, "alice")
	p.SetAvailable(false)

	v := newVerifier(t, p, nil) // does not fail: the provider may come back
	eventually(t, "discovery retried", func() bool { return p.DiscoveryFetches() >= 2 })
	select {
	case <-v.Ready():
		t.Fatal("ready while the provider is down")
	default:
	}
	_, err := v.Verify(t.Context(), tok, time.Now())
	if !errors.Is(err, auth.ErrProviderUnavailable) || errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("while the provider is down: %v, want the provider unavailable, not the token refused", err)
	}
	// The Authenticator refuses the client all the same, saying why and
	// nothing of the provider's address.
	_, err = auth.NewAuthenticator(nil, v).Authenticate(t.Context(), tok)
	if !errors.Is(err, auth.ErrUnavailable) || !errors.Is(err, auth.ErrUnauthenticated) || strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("Authenticate while the provider is down: %v", err)
	}

	p.SetAvailable(true)
	ready(t, v)
	if got := mustVerify(t, v, tok); got.Subject != "alice" {
		t.Fatalf("subject %q", got.Subject)
	}
}

// TestOIDCAttempted: Attempted closes after the first try at the keys,
// with them loaded when the provider answered, and without waiting for a
// provider that does not.
func TestOIDCAttempted(t *testing.T) {
	attempted := func(t *testing.T, v *auth.OIDCVerifier) {
		t.Helper()
		select {
		case <-v.Attempted():
		case <-time.After(10 * time.Second):
			t.Fatal("no attempt at the provider's keys ended within 10s")
		}
	}
	t.Run("up", func(t *testing.T) {
		p := startProvider(t, oidctest.Options{Algorithm: "ES256"})
		tok := p.Token(t, "alice")
		v := newVerifier(t, p, nil)
		attempted(t, v)
		select {
		case <-v.Ready():
		default:
			t.Fatal("the first attempt ended without the keys of a provider that answers")
		}
		mustVerify(t, v, tok)
	})
	t.Run("down", func(t *testing.T) {
		p := startProvider(t, oidctest.Options{Algorithm: "ES256"})
		p.SetAvailable(false)
		v := newVerifier(t, p, nil)
		attempted(t, v)
		select {
		case <-v.Ready():
			t.Fatal("ready while the provider is down")
		default:
		}
	})
	t.Run("closed", func(t *testing.T) {
		p := startProvider(t, oidctest.Options{Algorithm: "ES256"})
		p.SetAvailable(false)
		v := newVerifier(t, p, nil)
		v.Close()
		attempted(t, v)
	})
}

func TestOIDCKeepsKeysWhileProviderDown(t *testing.T) {
	p := startProvider(t, oidctest.Options{Algorithm: "ES256"})
	v := newVerifier(t, p, func(c *auth.OIDCConfig) { c.Refresh = 50 * time.Millisecond })
	ready(t, v)
	tok := p.Token(t, "alice")
	p.SetAvailable(false)
	before := p.JWKSFetches()
	eventually(t, "two failed refreshes", func() bool { return p.JWKSFetches() >= before+2 })
	mustVerify(t, v, tok)
}

func TestOIDCBackgroundRefreshFollowsRotation(t *testing.T) {
	p := startProvider(t, oidctest.Options{Algorithm: "ES256"})
	v := newVerifier(t, p, func(c *auth.OIDCConfig) {
		c.Refresh = 100 * time.Millisecond
		c.UnknownKIDInterval = time.Hour
	})
	ready(t, v)
	old := p.Token(t, "alice")
	mustVerify(t, v, old)
	// Spend the one fetch an unknown kid may cause per interval, so that
	// only the background refresh can learn the new key.
	forger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	claims := map[string]any{"iss": p.Issuer(), "sub": "s", "aud": "tslm", "exp": time.Now().Add(time.Hour).Unix()}
	if _, err := v.Verify(t.Context(), signWith(t, jwt.SigningMethodES256, "forged", claims, forger), time.Now()); !errors.Is(err, auth.ErrUnknownKID) {
		t.Fatalf("forged kid: %v", err)
	}

	p.RotateKey()
	p.RetireOldKeys()
	tok := p.Token(t, "alice")
	eventually(t, "the rotated key verifies", func() bool {
		_, err := v.Verify(t.Context(), tok, time.Now())
		if err != nil && !errors.Is(err, auth.ErrUnknownKID) {
			t.Fatalf("new key: %v", err)
		}
		return err == nil
	})
	// The old key left the JWKS, and with it the cache.
	if _, err := v.Verify(t.Context(), old, time.Now()); !errors.Is(err, auth.ErrUnknownKID) {
		t.Fatalf("a token of the retired key: %v", err)
	}
}

func TestNewOIDCVerifierConfig(t *testing.T) {
	for _, cfg := range []auth.OIDCConfig{
		{},
		{Issuer: "sso.example.com"},
		{Issuer: "ftp://sso.example.com"},
		{Issuer: "https://sso.example.com?realm=x"},
		{Issuer: "https://sso.example.com", Leeway: auth.MaxLeeway + time.Second},
		{Issuer: "https://sso.example.com", Leeway: -time.Second},
		{Issuer: "https://sso.example.com", GrantsClaim: "realm_access..tslm"},
	} {
		if v, err := auth.NewOIDCVerifier(t.Context(), cfg); err == nil {
			v.Close()
			t.Errorf("accepted %+v", cfg)
		}
	}
	// Nothing listens there: not a configuration error.
	v, err := auth.NewOIDCVerifier(t.Context(), auth.OIDCConfig{
		Issuer: "http://127.0.0.1:1",
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(t.Context(), handMade(`{"alg":"RS256","kid":"k"}`, `{}`, []byte("s")), time.Now())
	if !errors.Is(err, auth.ErrProviderUnavailable) {
		t.Fatalf("unreachable provider: %v", err)
	}
	v.Close() // returns although discovery keeps failing
}

func TestAuthenticatorWithOpenIDProvider(t *testing.T) {
	p := startProvider(t, oidctest.Options{Algorithm: "ES256"})
	v := newVerifier(t, p, nil)
	ready(t, v)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	apiKey := rand.Text()
	pub, err := auth.NewPublisherVerifier(auth.PublisherConfig{
		APIKeys: []auth.APIKey{{SHA256: sha256.Sum256([]byte(apiKey)), Principal: auth.Principal{Subject: "ingest"}}},
		JWTKeys: []auth.JWTKey{{ID: "ci", Ed25519: edPub}},
	})
	if err != nil {
		t.Fatal(err)
	}
	a := auth.NewAuthenticator(pub, v)
	ctx := context.Background()

	if got, err := a.Authenticate(ctx, p.Token(t, "alice")); err != nil || got.Issuer != p.Issuer() || got.Subject != "alice" {
		t.Fatalf("access token: %+v, %v", got, err)
	}
	// A publisher's kid wins over the provider's iss.
	pubTok := signWith(t, jwt.SigningMethodEdDSA, "ci", map[string]any{
		"iss": p.Issuer(), "sub": "ci-bot", "exp": time.Now().Add(time.Hour).Unix(), "tslm": map[string]any{"publish": []string{"x"}},
	}, edPriv)
	if got, err := a.Authenticate(ctx, pubTok); err != nil || got.Issuer != auth.IssuerPublisherToken || got.Subject != "ci-bot" {
		t.Fatalf("publisher token: %+v, %v", got, err)
	}
	if got, err := a.Authenticate(ctx, apiKey); err != nil || got.Issuer != auth.IssuerAPIKey {
		t.Fatalf("API key: %+v, %v", got, err)
	}
	// Another provider's token names neither a publisher key nor this
	// issuer.
	other := startProvider(t, oidctest.Options{Algorithm: "ES256"})
	if _, err := a.Authenticate(ctx, other.Token(t, "alice")); !errors.Is(err, auth.ErrUnknownKID) {
		t.Fatalf("another provider's token: %v", err)
	}
}
