package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The fuzz targets use fixed keys, so that the committed corpus holds
// tokens they accept and the fuzzer mutates from there.
var (
	fuzzEd     = ed25519.NewKeyFromSeed([]byte("tslm-fuzz-ed25519-seed-32-bytes!"))
	fuzzHMAC   = []byte("tslm-fuzz-hmac-secret-of-32-byte")
	fuzzAPIKey = "tslm-fuzz-api-key"
)

func fuzzVerifier(tb testing.TB) *PublisherVerifier {
	v, err := NewPublisherVerifier(PublisherConfig{
		APIKeys: []APIKey{{
			SHA256:    sha256.Sum256([]byte(fuzzAPIKey)),
			Principal: Principal{Subject: "fuzz", Grants: []Grant{{Ops: Ops(OpPublish), Patterns: []Pattern{MustParsePattern("*")}}}},
		}},
		JWTKeys: []JWTKey{
			{ID: "ed", Ed25519: fuzzEd.Public().(ed25519.PublicKey)},
			{ID: "hs", HMAC: fuzzHMAC},
		},
		Issuer:   "iss",
		Audience: "aud",
		Leeway:   time.Second,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// fuzzSeeds are credentials the fuzz verifier accepts at t0, and some it
// refuses.
func fuzzSeeds(tb testing.TB) []string {
	claims := jwt.MapClaims{
		"sub": "s", "iss": "iss", "aud": "aud", "exp": t0.Add(time.Hour).Unix(),
		"tslm": map[string]any{"publish": []string{"a.*"}, "create": []string{"b"}, "serve": []string{"*c*"}},
	}
	return []string{
		fuzzAPIKey,
		sign(tb, jwt.SigningMethodEdDSA, "ed", claims, fuzzEd),
		sign(tb, jwt.SigningMethodHS256, "hs", claims, fuzzHMAC),
		sign(tb, jwt.SigningMethodHS256, "ed", claims, []byte(fuzzEd.Public().(ed25519.PublicKey))),
		sign(tb, jwt.SigningMethodNone, "ed", claims, jwt.UnsafeAllowNoneSignatureType),
		"",
		"a.b.c",
	}
}

func FuzzVerify(f *testing.F) {
	v := fuzzVerifier(f)
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cred string) {
		p, err := v.Verify(cred, t0)
		if err != nil {
			if p != nil {
				t.Fatalf("a principal with error %v", err)
			}
			if strings.Contains(err.Error(), cred) && len(cred) > 8 {
				t.Fatalf("error %q echoes the credential", err)
			}
			return
		}
		if p == nil || p.Subject == "" || p.Expired(t0) {
			t.Fatalf("accepted with principal %+v", p)
		}
		for _, g := range p.Grants {
			for _, pat := range g.Patterns {
				if _, err := ParsePattern(pat.String()); err != nil {
					t.Fatalf("accepted with an invalid pattern: %v", err)
				}
			}
		}
		if cred == fuzzAPIKey {
			return
		}
		// Anything else accepted must carry a signature a configured key
		// made over its first two parts, with that key's algorithm.
		parts := strings.Split(cred, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted a credential that is neither the API key nor a token")
		}
		header, err1 := base64.RawURLEncoding.DecodeString(parts[0])
		sig, err2 := base64.RawURLEncoding.DecodeString(parts[2])
		var h map[string]any
		if err1 != nil || err2 != nil || json.Unmarshal(header, &h) != nil {
			t.Fatalf("accepted a token that does not decode")
		}
		signed := []byte(parts[0] + "." + parts[1])
		switch {
		case h["kid"] == "ed" && h["alg"] == "EdDSA":
			if !ed25519.Verify(fuzzEd.Public().(ed25519.PublicKey), signed, sig) {
				t.Fatalf("accepted an EdDSA token the key did not sign")
			}
		case h["kid"] == "hs" && h["alg"] == "HS256":
			m := hmac.New(sha256.New, fuzzHMAC)
			m.Write(signed)
			if !hmac.Equal(m.Sum(nil), sig) {
				t.Fatalf("accepted an HS256 token the secret did not sign")
			}
		default:
			t.Fatalf("accepted a token with kid %v and alg %v", h["kid"], h["alg"])
		}
	})
}

func FuzzPattern(f *testing.F) {
	for _, s := range [][2]string{
		{"orders.*", "orders.eu"}, {"*", "x"}, {"a*b*c", "aXbYc"}, {"*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaa"},
		{"_inbox.*", "_inbox.1"}, {"a{b}", "a{b}"}, {"", ""}, {"**", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		// The reference: the pattern as an anchored regular expression,
		// which Go runs in linear time too.
		segs := strings.Split(pattern, "*")
		for i := range segs {
			segs[i] = regexp.QuoteMeta(segs[i])
		}
		re := regexp.MustCompile(`(?s)^` + strings.Join(segs, `.*`) + `$`)
		want := re.MatchString(name) && validName(name) && !strings.HasPrefix(name, ReservedPrefix)
		if got := p.Match(name); got != want {
			t.Fatalf("%q.Match(%q) = %v, want %v", pattern, name, got, want)
		}
		ok, steps := wildMatch(pattern, name)
		if ok != re.MatchString(name) {
			t.Fatalf("wildMatch(%q, %q) = %v", pattern, name, ok)
		}
		if bound := (len(pattern) + 1) * (len(name) + 1); steps > bound {
			t.Fatalf("wildMatch(%q, %q): %d steps, over %d", pattern, name, steps, bound)
		}
	})
}

// The fuzz seeds reach both sides of FuzzVerify's checks: the first three
// are accepted, the rest refused.
func TestFuzzSeeds(t *testing.T) {
	v := fuzzVerifier(t)
	for i, s := range fuzzSeeds(t) {
		_, err := v.Verify(s, t0)
		if (err == nil) != (i < 3) {
			t.Errorf("seed %d: %v", i, err)
		}
	}
}

// authSeeds are credentials for FuzzAuthenticate: the publisher seeds, and
// access tokens the stub OpenID verifier accepts, refuses or cannot check.
func authSeeds(tb testing.TB) []string {
	claims := jwt.MapClaims{
		"sub": "s", "iss": stubIssuer, "aud": "aud", "exp": t0.Add(time.Hour).Unix(),
		"tslm": map[string]any{"publish": []string{"a.*"}},
	}
	return append(fuzzSeeds(tb),
		ssoToken("alice", "good"),
		ssoToken("alice", "bad"),
		ssoToken("alice", "down"),
		ssoToken("", "good"),
		// A publisher's kid with the provider's iss: the kid wins, and
		// the publisher verifier refuses the iss.
		sign(tb, jwt.SigningMethodEdDSA, "ed", claims, fuzzEd),
	)
}

func FuzzAuthenticate(f *testing.F) {
	pub := fuzzVerifier(f)
	stub := &stubOIDC{expires: t0.Add(time.Hour)}
	a := NewAuthenticator(pub, stub)
	a.now = func() time.Time { return t0 }
	for _, s := range authSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cred string) {
		ctx := context.Background()
		p, err := a.Authenticate(ctx, cred)
		// The answer does not depend on the cache: a fresh Authenticator
		// gives the same, and so does asking again.
		fresh := NewAuthenticator(pub, stub)
		fresh.now = a.now
		for _, other := range []*Authenticator{fresh, a} {
			p2, err2 := other.Authenticate(ctx, cred)
			if !reflect.DeepEqual(p, p2) || (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
				t.Fatalf("%+v, %v then %+v, %v", p, err, p2, err2)
			}
		}
		if err != nil {
			if p != nil {
				t.Fatalf("a principal with error %v", err)
			}
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("error %v does not wrap ErrUnauthenticated", err)
			}
			if strings.Contains(err.Error(), cred) && len(cred) > 8 {
				t.Fatalf("error %q echoes the credential", err)
			}
			return
		}
		if p == nil || p.Subject == "" || p.Expired(t0) {
			t.Fatalf("accepted with principal %+v", p)
		}
		switch p.Issuer {
		case IssuerAPIKey, IssuerPublisherToken:
			// Only what the publisher verifier accepts by itself.
			if q, err := pub.Verify(cred, t0); err != nil || q.Subject != p.Subject {
				t.Fatalf("accepted as a publisher: %+v; the verifier says %+v, %v", p, q, err)
			}
		case stubIssuer:
			// Only tokens naming the provider, and no publisher key.
			if peekIssuer(cred) != stubIssuer || pub.knowsKID(peekKID(cred)) {
				t.Fatalf("routed to the OpenID verifier: %q", cred)
			}
		default:
			t.Fatalf("principal of issuer %q", p.Issuer)
		}
	})
}

// The seeds reach both sides of FuzzAuthenticate's checks.
func TestAuthSeeds(t *testing.T) {
	a := NewAuthenticator(fuzzVerifier(t), &stubOIDC{expires: t0.Add(time.Hour)})
	a.now = func() time.Time { return t0 }
	accepted := 0
	for _, s := range authSeeds(t) {
		if _, err := a.Authenticate(context.Background(), s); err == nil {
			accepted++
		}
	}
	if want := 4; accepted != want { // three publisher seeds and alice
		t.Errorf("%d seeds accepted, want %d", accepted, want)
	}
}
