package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const stubIssuer = "https://sso.example"

// stubOIDC stands for an OpenID provider's verifier: it accepts tokens
// whose signature part is "good", for the sub they name, and counts its
// calls, so the tests see which credentials reach it.
type stubOIDC struct {
	calls   atomic.Int64
	expires time.Time
}

func (s *stubOIDC) Issuer() string { return stubIssuer }

func (s *stubOIDC) Verify(_ context.Context, token string, now time.Time) (*Principal, error) {
	s.calls.Add(1)
	var c struct {
		Sub string `json:"sub"`
	}
	peekPart(token, 1, &c)
	switch sig := token[strings.LastIndexByte(token, '.')+1:]; {
	case sig == "down":
		return nil, fmt.Errorf("%w: dial tcp 10.1.2.3:443: connection refused", ErrProviderUnavailable)
	case sig != "good" || c.Sub == "":
		return nil, errSignature
	case !s.expires.IsZero() && !now.Before(s.expires):
		return nil, errExpired
	}
	return &Principal{
		Subject: c.Sub,
		Issuer:  stubIssuer,
		Expires: s.expires,
		Grants:  []Grant{{Ops: Ops(OpSubscribe), Patterns: []Pattern{MustParsePattern("news.*")}}},
	}, nil
}

// ssoToken is a token the stub accepts (sig "good") or refuses.
func ssoToken(sub, sig string) string {
	return unsigned(`{"alg":"RS256","kid":"sso-1"}`, `{"iss":"`+stubIssuer+`","sub":"`+sub+`"}`, nil) + sig
}

// clock is a settable time for the Authenticator.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestAuthenticateRouting(t *testing.T) {
	k := newKeys(t)
	pub := k.verifier(t)
	stub := &stubOIDC{}
	a := NewAuthenticator(pub, stub)
	a.now = func() time.Time { return t0 }
	ctx := context.Background()
	pubClaims := goodClaims()

	for _, tc := range []struct {
		name       string
		credential string
		issuer     string // of the principal; "" when refused
		want       error
		toStub     bool
	}{
		{"access token by iss", ssoToken("alice", "good"), stubIssuer, nil, true},
		{"access token refused", ssoToken("alice", "bad"), "", errSignature, true},
		{"publisher kid", sign(t, jwt.SigningMethodEdDSA, "ed1", pubClaims, k.ed), IssuerPublisherToken, nil, false},
		// The kid of a publisher key wins over the provider's iss: the
		// publisher verifier then checks its own iss.
		{"publisher kid with the provider's iss", sign(t, jwt.SigningMethodEdDSA, "ed1", with(pubClaims, "iss", stubIssuer), k.ed), "", errIssuer, false},
		{"neither kid nor iss", sign(t, jwt.SigningMethodEdDSA, "other", with(pubClaims, "iss", "https://elsewhere.example"), k.otherEd), "", errUnknownKID, false},
		{"API key", k.apiKey, IssuerAPIKey, nil, false},
		{"unknown API key", "not-a-key", "", errUnknownAPIKey, false},
		{"empty", "", "", errNoCredential, false},
		{"too long", strings.Repeat("a", MaxCredentialLen+1), "", errTooLong, false},
		{"provider unavailable", ssoToken("alice", "down"), "", errUnavailable, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := stub.calls.Load()
			p, err := a.Authenticate(ctx, tc.credential)
			if toStub := stub.calls.Load() > before; toStub != tc.toStub {
				t.Errorf("reached the OpenID verifier: %v, want %v", toStub, tc.toStub)
			}
			if tc.want != nil {
				if p != nil || !errors.Is(err, ErrUnauthenticated) || !errors.Is(err, tc.want) {
					t.Fatalf("%+v, %v; want refused with %v", p, err, tc.want)
				}
				return
			}
			if err != nil || p.Issuer != tc.issuer {
				t.Fatalf("%+v, %v; want a principal of %s", p, err, tc.issuer)
			}
		})
	}
	// The provider's failure is not shown to the client.
	_, err := a.Authenticate(ctx, ssoToken("bob", "down"))
	if strings.Contains(err.Error(), "10.1.2.3") {
		t.Errorf("error shows the provider's address: %v", err)
	}

	// Without the verifiers, their credentials are refused.
	none := NewAuthenticator(nil, nil)
	for _, c := range []struct {
		cred string
		want error
	}{{k.apiKey, errNoVerifier}, {ssoToken("alice", "good"), errUnknownKID}} {
		if _, err := none.Authenticate(ctx, c.cred); !errors.Is(err, c.want) {
			t.Errorf("no verifiers: %v, want %v", err, c.want)
		}
	}
	onlyPub := NewAuthenticator(pub, nil)
	onlyPub.now = a.now
	if _, err := onlyPub.Authenticate(ctx, ssoToken("alice", "good")); !errors.Is(err, errUnknownKID) {
		t.Errorf("access token without an OpenID verifier: %v", err)
	}
}

func TestAuthenticateCache(t *testing.T) {
	stub := &stubOIDC{expires: t0.Add(10 * time.Minute)}
	clk := &clock{t0}
	a := NewAuthenticator(nil, stub)
	a.now = clk.now
	ctx := context.Background()
	tok := ssoToken("alice", "good")

	// A provider's tokens are checked every time: its keys may be
	// withdrawn while the gateway runs.
	for range 2 {
		if _, err := a.Authenticate(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := stub.calls.Load(); n != 2 {
		t.Fatalf("%d verifications of an access token presented twice, want 2", n)
	}
	// The cache's workings, shown with the stub's principals as if they
	// were publishers'.
	stub.calls.Store(0)
	a.cacheable = func(*Principal) bool { return true }
	auth := func() *Principal {
		t.Helper()
		p, err := a.Authenticate(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	first := auth()
	second := auth()
	if n := stub.calls.Load(); n != 1 {
		t.Fatalf("%d verifications for the same token twice, want 1", n)
	}
	if second.Subject != "alice" || !second.Expires.Equal(first.Expires) || !second.Allows(OpSubscribe, "news.eu", t0) {
		t.Fatalf("cached principal %+v", second)
	}
	// What callers get is theirs: changing it changes nothing cached.
	second.Grants[0].Patterns[0] = MustParsePattern("*")
	second.Subject = "mallory"
	if third := auth(); third.Subject != "alice" || third.Allows(OpSubscribe, "other", t0) {
		t.Fatalf("the cache took a caller's change: %+v", third)
	}

	clk.t = t0.Add(CacheTTL - time.Second)
	auth()
	if n := stub.calls.Load(); n != 1 {
		t.Fatalf("%d verifications within CacheTTL, want 1", n)
	}
	clk.t = t0.Add(CacheTTL)
	auth()
	if n := stub.calls.Load(); n != 2 {
		t.Fatalf("%d verifications once CacheTTL passed, want 2", n)
	}

	// An entry never outlives the principal: the token is checked again
	// at its expiry, and refused.
	stub.expires = clk.t.Add(10 * time.Second)
	short := ssoToken("bob", "good")
	if _, err := a.Authenticate(ctx, short); err != nil {
		t.Fatal(err)
	}
	clk.t = stub.expires
	before := stub.calls.Load()
	if _, err := a.Authenticate(ctx, short); !errors.Is(err, errExpired) {
		t.Fatalf("a cached principal past its expiry: %v", err)
	}
	if stub.calls.Load() != before+1 {
		t.Fatal("an expired entry answered without the verifier")
	}

	// Refusals are never remembered.
	bad := ssoToken("alice", "bad")
	before = stub.calls.Load()
	for range 3 {
		if _, err := a.Authenticate(ctx, bad); !errors.Is(err, errSignature) {
			t.Fatal(err)
		}
	}
	if n := stub.calls.Load() - before; n != 3 {
		t.Fatalf("%d verifications for a refused token thrice, want 3", n)
	}
}

func TestAuthenticateCacheBound(t *testing.T) {
	stub := &stubOIDC{expires: t0.Add(time.Hour)}
	clk := &clock{t0}
	a := NewAuthenticator(nil, stub)
	a.now = clk.now
	a.cacheMax = 50
	a.cacheable = func(*Principal) bool { return true }
	ctx := context.Background()
	for i := range 500 {
		if _, err := a.Authenticate(ctx, ssoToken(fmt.Sprint("user", i), "good")); err != nil {
			t.Fatal(err)
		}
		if n := len(a.cache); n > a.cacheMax {
			t.Fatalf("%d entries, over the bound of %d", n, a.cacheMax)
		}
	}
	// The newest entry is kept.
	before := stub.calls.Load()
	if _, err := a.Authenticate(ctx, ssoToken("user499", "good")); err != nil || stub.calls.Load() != before {
		t.Fatalf("the newest entry was not kept: %v", err)
	}

	// A full cache drops expired entries, and only those when that is
	// enough.
	a = NewAuthenticator(nil, stub)
	a.now = clk.now
	a.cacheMax = 50
	a.cacheable = func(*Principal) bool { return true }
	clk.t = t0
	stub.expires = t0.Add(10 * time.Second)
	for i := range a.cacheMax - 1 {
		if _, err := a.Authenticate(ctx, ssoToken(fmt.Sprint("brief", i), "good")); err != nil {
			t.Fatal(err)
		}
	}
	stub.expires = t0.Add(time.Hour)
	if _, err := a.Authenticate(ctx, ssoToken("live", "good")); err != nil {
		t.Fatal(err)
	}
	if n := len(a.cache); n != a.cacheMax {
		t.Fatalf("%d entries, want a full cache of %d", n, a.cacheMax)
	}
	clk.t = t0.Add(20 * time.Second)
	if _, err := a.Authenticate(ctx, ssoToken("new", "good")); err != nil {
		t.Fatal(err)
	}
	if n := len(a.cache); n != 2 {
		t.Fatalf("%d entries after dropping the expired, want 2", n)
	}
	before = stub.calls.Load()
	if _, err := a.Authenticate(ctx, ssoToken("live", "good")); err != nil || stub.calls.Load() != before {
		t.Fatalf("the live entry was dropped: %v", err)
	}
}

// TestAuthenticateRemembersPublishers: a publisher's API key is verified
// once and then answered from the cache; an access token never is.
func TestAuthenticateRemembersPublishers(t *testing.T) {
	k := newKeys(t)
	a := NewAuthenticator(k.verifier(t), &stubOIDC{expires: t0.Add(time.Hour)})
	a.now = func() time.Time { return t0 }
	ctx := context.Background()
	for _, cred := range []string{k.apiKey, k.apiKey, ssoToken("alice", "good")} {
		if _, err := a.Authenticate(ctx, cred); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(a.cache); n != 1 {
		t.Fatalf("%d cache entries after an API key twice and an access token, want 1 (the key)", n)
	}
}
