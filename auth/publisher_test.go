package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// keys are the test's real keys: an Ed25519 pair and an HMAC secret, and
// keys that are not configured, for forgeries.
type keys struct {
	edPub, otherEdPub ed25519.PublicKey
	ed, otherEd       ed25519.PrivateKey
	hmac, otherHMAC   []byte
	apiKey            string
}

func newKeys(t testing.TB) *keys {
	t.Helper()
	var k keys
	var err error
	if k.edPub, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if k.otherEdPub, k.otherEd, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	k.hmac, k.otherHMAC = make([]byte, 32), make([]byte, 32)
	rand.Read(k.hmac)
	rand.Read(k.otherHMAC)
	k.apiKey = rand.Text()
	return &k
}

func (k *keys) config() PublisherConfig {
	return PublisherConfig{
		APIKeys: []APIKey{{
			SHA256:    sha256.Sum256([]byte(k.apiKey)),
			Principal: Principal{Subject: "ingest", Grants: []Grant{{Ops: Ops(OpPublish), Patterns: []Pattern{MustParsePattern("metrics.*")}}}},
		}},
		JWTKeys: []JWTKey{
			{ID: "ed1", Ed25519: k.edPub},
			{ID: "hs1", HMAC: k.hmac},
		},
		Issuer:   "https://issuer.example",
		Audience: "tslm",
		Leeway:   30 * time.Second,
	}
}

func (k *keys) verifier(t testing.TB) *PublisherVerifier {
	t.Helper()
	v, err := NewPublisherVerifier(k.config())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// goodClaims are valid at t0 for the test's configuration.
func goodClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub": "billing-app",
		"iss": "https://issuer.example",
		"aud": "tslm",
		"exp": t0.Add(time.Hour).Unix(),
		"nbf": t0.Add(-time.Minute).Unix(),
		"tslm": map[string]any{
			"create":  []string{"orders.*"},
			"publish": []string{"orders.*", "audit"},
			"serve":   []string{"billing.rpc"},
		},
	}
}

func sign(t testing.TB, method jwt.SigningMethod, kid string, claims jwt.MapClaims, key any) string {
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

func with(c jwt.MapClaims, key string, value any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	if value == nil {
		delete(out, key)
	} else {
		out[key] = value
	}
	return out
}

// unsigned builds a token by hand, for headers the library will not sign.
func unsigned(header string, claims string, sig []byte) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(claims)) + "." + enc(sig)
}

func TestVerifyJWTValid(t *testing.T) {
	k := newKeys(t)
	v := k.verifier(t)
	for name, tok := range map[string]string{
		"EdDSA": sign(t, jwt.SigningMethodEdDSA, "ed1", goodClaims(), k.ed),
		"HS256": sign(t, jwt.SigningMethodHS256, "hs1", goodClaims(), k.hmac),
	} {
		p, err := v.Verify(tok, t0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if p.Subject != "billing-app" {
			t.Errorf("%s: subject %q", name, p.Subject)
		}
		if want := t0.Add(time.Hour + 30*time.Second); !p.Expires.Equal(want) {
			t.Errorf("%s: expires %v, want exp plus leeway %v", name, p.Expires, want)
		}
		for _, c := range []struct {
			op      Op
			channel string
			want    bool
		}{
			{OpCreate, "orders.eu", true},
			{OpPublish, "orders.eu", true},
			{OpPublish, "audit", true},
			{OpServe, "billing.rpc", true},
			{OpCreate, "audit", false},
			{OpServe, "orders.eu", false},
			{OpSubscribe, "orders.eu", false},
			{OpRequest, "billing.rpc", false},
		} {
			if got := p.Allows(c.op, c.channel, t0); got != c.want {
				t.Errorf("%s: Allows(%v, %q) = %v", name, c.op, c.channel, got)
			}
		}
	}
}

func TestVerifyJWTRefused(t *testing.T) {
	k := newKeys(t)
	v := k.verifier(t)
	good := goodClaims()
	goodHeader := `{"alg":"EdDSA","kid":"ed1","typ":"JWT"}`
	claimsJSON := `{"sub":"x","exp":` + strconv.FormatInt(t0.Add(time.Hour).Unix(), 10) + `,"iss":"https://issuer.example","aud":"tslm","tslm":{"publish":["*"]}}`
	edSig := func(header, claims string) string {
		enc := base64.RawURLEncoding.EncodeToString
		signing := enc([]byte(header)) + "." + enc([]byte(claims))
		return signing + "." + enc(ed25519.Sign(k.ed, []byte(signing)))
	}
	for _, tc := range []struct {
		name  string
		token string
		at    time.Time
		want  error
	}{
		{"alg none", unsigned(`{"alg":"none","kid":"ed1"}`, claimsJSON, nil), t0, errAlg},
		{"alg none no kid", sign(t, jwt.SigningMethodNone, "", good, jwt.UnsafeAllowNoneSignatureType), t0, errNoKID},
		{"alg none library", sign(t, jwt.SigningMethodNone, "hs1", good, jwt.UnsafeAllowNoneSignatureType), t0, errAlg},
		{"wrong Ed25519 key", sign(t, jwt.SigningMethodEdDSA, "ed1", good, k.otherEd), t0, errSignature},
		{"wrong HMAC key", sign(t, jwt.SigningMethodHS256, "hs1", good, k.otherHMAC), t0, errSignature},
		{"unknown kid", sign(t, jwt.SigningMethodEdDSA, "ed2", good, k.ed), t0, errUnknownKID},
		{"missing kid", sign(t, jwt.SigningMethodEdDSA, "", good, k.ed), t0, errNoKID},
		{"crit header", edSig(`{"alg":"EdDSA","kid":"ed1","crit":["exp"],"exp":1}`, claimsJSON), t0, errMalformed},
		{"kid in capitals", edSig(`{"alg":"EdDSA","KID":"ed1"}`, claimsJSON), t0, errAlg},
		{"kid not a string", edSig(`{"alg":"EdDSA","kid":1}`, claimsJSON), t0, errMalformed},
		// The classic confusion: the Ed25519 public key, which is public,
		// used as an HMAC secret under the Ed25519 key's id.
		{"HS256 with the public key as secret", sign(t, jwt.SigningMethodHS256, "ed1", good, []byte(k.edPub)), t0, errAlg},
		{"EdDSA under the HMAC kid", sign(t, jwt.SigningMethodEdDSA, "hs1", good, k.ed), t0, errAlg},
		{"HS512 under the HMAC kid", sign(t, jwt.SigningMethodHS512, "hs1", good, k.hmac), t0, errAlg},
		{"expired", sign(t, jwt.SigningMethodEdDSA, "ed1", good, k.ed), t0.Add(2 * time.Hour), errExpired},
		{"no exp", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "exp", nil), k.ed), t0, errMissingClaim},
		{"nbf in the future", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "nbf", t0.Add(time.Minute).Unix()), k.ed), t0, errNotYetValid},
		{"wrong iss", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "iss", "https://evil.example"), k.ed), t0, errIssuer},
		{"no iss", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "iss", nil), k.ed), t0, errMissingClaim},
		{"wrong aud", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "aud", []string{"other", "app"}), k.ed), t0, errAudience},
		{"no aud", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "aud", nil), k.ed), t0, errMissingClaim},
		{"no sub", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "sub", nil), k.ed), t0, errClaims},
		{"no tslm", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "tslm", nil), k.ed), t0, errClaims},
		{"tslm not an object", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "tslm", []string{"*"}), k.ed), t0, errClaims},
		{"tslm invalid pattern", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "tslm", map[string]any{"publish": []string{"ok", "a{b}"}}), k.ed), t0, errClaims},
		{"tslm empty pattern", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "tslm", map[string]any{"create": []string{""}}), k.ed), t0, errClaims},
		{"tslm unknown op", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "tslm", map[string]any{"subscribe": []string{"*"}}), k.ed), t0, errClaims},
		{"tslm patterns not strings", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "tslm", map[string]any{"publish": []int{1}}), k.ed), t0, errClaims},
		{"exp not a number", sign(t, jwt.SigningMethodEdDSA, "ed1", with(good, "exp", "tomorrow"), k.ed), t0, errMalformed},
		{"header not base64", "!!!." + strings.Repeat("a", 10) + ".abc", t0, errMalformed},
		{"header not JSON", unsigned(`alg`, claimsJSON, nil), t0, errMalformed},
		{"claims not JSON", edSig(goodHeader, `{`), t0, errMalformed},
		{"signature tampered", tamper(sign(t, jwt.SigningMethodEdDSA, "ed1", good, k.ed)), t0, errSignature},
		{"claims swapped", swapClaims(sign(t, jwt.SigningMethodEdDSA, "ed1", good, k.ed), claimsJSON), t0, errSignature},
		{"empty parts", "..", t0, errMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := v.Verify(tc.token, tc.at)
			if err == nil {
				t.Fatalf("accepted: %+v", p)
			}
			if p != nil {
				t.Errorf("a principal with the error: %+v", p)
			}
			if !errors.Is(err, ErrUnauthenticated) || !errors.Is(err, tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), tc.token) {
				t.Fatalf("error echoes the token: %q", err)
			}
		})
	}
}

func TestVerifyJWTWithoutIssuerAndAudience(t *testing.T) {
	k := newKeys(t)
	cfg := k.config()
	cfg.Issuer, cfg.Audience = "", ""
	v, err := NewPublisherVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodEdDSA, "ed1", with(with(goodClaims(), "iss", nil), "aud", nil), k.ed)
	if _, err := v.Verify(tok, t0); err != nil {
		t.Fatalf("refused without configured iss/aud: %v", err)
	}
}

func TestVerifyJWTLeeway(t *testing.T) {
	k := newKeys(t)
	v := k.verifier(t) // 30s leeway
	exp := t0.Add(time.Hour)
	tok := sign(t, jwt.SigningMethodHS256, "hs1", goodClaims(), k.hmac)
	for _, tc := range []struct {
		at   time.Time
		want error
	}{
		{exp.Add(29 * time.Second), nil},
		{exp.Add(30*time.Second - time.Nanosecond), nil},
		{exp.Add(30 * time.Second), errExpired},
	} {
		p, err := v.Verify(tok, tc.at)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("at exp%+v: %v, want %v", tc.at.Sub(exp), err, tc.want)
		}
		if err == nil && !p.Allows(OpPublish, "audit", tc.at) {
			t.Errorf("at exp%+v: accepted but allows nothing", tc.at.Sub(exp))
		}
	}
	nbf := t0.Add(time.Minute)
	early := sign(t, jwt.SigningMethodHS256, "hs1", with(goodClaims(), "nbf", nbf.Unix()), k.hmac)
	if _, err := v.Verify(early, nbf.Add(-30*time.Second)); err != nil {
		t.Errorf("nbf minus leeway refused: %v", err)
	}
	if _, err := v.Verify(early, nbf.Add(-31*time.Second)); !errors.Is(err, errNotYetValid) {
		t.Errorf("nbf minus leeway minus 1s: %v", err)
	}
}

func TestVerifyAPIKey(t *testing.T) {
	k := newKeys(t)
	v := k.verifier(t)
	p, err := v.Verify(k.apiKey, t0)
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "ingest" || !p.Allows(OpPublish, "metrics.cpu", t0) || p.Allows(OpPublish, "orders", t0) {
		t.Errorf("principal %+v", p)
	}
	// The principal is a copy: changing it does not change the next one.
	p.Grants[0].Patterns[0] = MustParsePattern("*")
	if p2, _ := v.Verify(k.apiKey, t0); p2.Allows(OpPublish, "orders", t0) {
		t.Error("the configuration changed through a returned principal")
	}
	for _, tc := range []struct {
		name, cred string
		want       error
	}{
		{"unlisted", rand.Text(), errUnknownAPIKey},
		{"empty", "", errNoCredential},
		{"the hash itself", hex.EncodeToString(k.config().APIKeys[0].SHA256[:]), errUnknownAPIKey},
		{"prefix", k.apiKey[:len(k.apiKey)-1], errUnknownAPIKey},
		{"too long", strings.Repeat("k", MaxCredentialLen+1), errTooLong},
	} {
		p, err := v.Verify(tc.cred, t0)
		if p != nil || !errors.Is(err, ErrUnauthenticated) || !errors.Is(err, tc.want) {
			t.Errorf("%s: %+v, %v; want %v", tc.name, p, err, tc.want)
		}
		if tc.cred != "" && strings.Contains(err.Error(), tc.cred) {
			t.Errorf("%s: error echoes the credential", tc.name)
		}
	}

	cfg := k.config()
	cfg.APIKeys[0].Principal.Expires = t0
	v, err = NewPublisherVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(k.apiKey, t0); !errors.Is(err, errExpired) {
		t.Errorf("expired API key: %v", err)
	}
	if _, err := v.Verify(k.apiKey, t0.Add(-time.Second)); err != nil {
		t.Errorf("API key before its expiry: %v", err)
	}
}

func TestJWTNotConfigured(t *testing.T) {
	k := newKeys(t)
	cfg := k.config()
	cfg.JWTKeys = nil
	v, err := NewPublisherVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, "ed1", goodClaims(), k.ed), t0); !errors.Is(err, errNoJWT) {
		t.Errorf("token with no token keys: %v", err)
	}
}

func TestParseSHA256Hex(t *testing.T) {
	want := sha256.Sum256([]byte("key"))
	got, err := ParseSHA256Hex(" " + hex.EncodeToString(want[:]) + "\n")
	if err != nil || got != want {
		t.Fatalf("%x, %v", got, err)
	}
	for _, s := range []string{"", "abc", hex.EncodeToString(want[:31]), hex.EncodeToString(want[:]) + "00", strings.Repeat("g", 64)} {
		if _, err := ParseSHA256Hex(s); err == nil {
			t.Errorf("ParseSHA256Hex(%q) accepted", s)
		}
	}
}

func TestNewPublisherVerifierRefuses(t *testing.T) {
	k := newKeys(t)
	for _, tc := range []struct {
		name   string
		change func(*PublisherConfig)
	}{
		{"nothing configured", func(c *PublisherConfig) { c.APIKeys, c.JWTKeys = nil, nil }},
		{"negative leeway", func(c *PublisherConfig) { c.Leeway = -time.Second }},
		{"huge leeway", func(c *PublisherConfig) { c.Leeway = time.Hour }},
		{"zero hash", func(c *PublisherConfig) { c.APIKeys[0].SHA256 = [32]byte{} }},
		{"duplicate hash", func(c *PublisherConfig) { c.APIKeys = append(c.APIKeys, c.APIKeys[0]) }},
		{"no subject", func(c *PublisherConfig) { c.APIKeys[0].Principal.Subject = "" }},
		{"grant without ops", func(c *PublisherConfig) { c.APIKeys[0].Principal.Grants[0].Ops = 0 }},
		{"grant with unknown ops", func(c *PublisherConfig) { c.APIKeys[0].Principal.Grants[0].Ops = 1 }},
		{"grant without patterns", func(c *PublisherConfig) { c.APIKeys[0].Principal.Grants[0].Patterns = nil }},
		{"zero pattern", func(c *PublisherConfig) { c.APIKeys[0].Principal.Grants[0].Patterns = []Pattern{{}} }},
		{"no key id", func(c *PublisherConfig) { c.JWTKeys[0].ID = "" }},
		{"duplicate key id", func(c *PublisherConfig) { c.JWTKeys[1].ID = c.JWTKeys[0].ID }},
		{"both key kinds", func(c *PublisherConfig) { c.JWTKeys[0].HMAC = k.hmac }},
		{"no key", func(c *PublisherConfig) { c.JWTKeys[0].Ed25519 = nil }},
		{"short Ed25519 key", func(c *PublisherConfig) { c.JWTKeys[0].Ed25519 = c.JWTKeys[0].Ed25519[:31] }},
		{"short HMAC secret", func(c *PublisherConfig) { c.JWTKeys[1].HMAC = k.hmac[:31] }},
		{"public key as HMAC secret", func(c *PublisherConfig) { c.JWTKeys[1].HMAC = []byte(k.edPub) }},
	} {
		cfg := k.config()
		tc.change(&cfg)
		if _, err := NewPublisherVerifier(cfg); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// tamper flips a bit of the signature.
func tamper(tok string) string {
	i := strings.LastIndexByte(tok, '.')
	sig, _ := base64.RawURLEncoding.DecodeString(tok[i+1:])
	sig[0] ^= 1
	return tok[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
}

// swapClaims keeps a valid header and signature but replaces the claims.
func swapClaims(tok, claims string) string {
	parts := strings.Split(tok, ".")
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(claims)) + "." + parts[2]
}

func TestVerifyPicksTheListedKey(t *testing.T) {
	k := newKeys(t)
	cfg := k.config()
	creds := []string{rand.Text(), rand.Text(), k.apiKey, rand.Text()}
	cfg.APIKeys = nil
	for i, c := range creds {
		cfg.APIKeys = append(cfg.APIKeys, APIKey{
			SHA256:    sha256.Sum256([]byte(c)),
			Principal: Principal{Subject: "key" + strconv.Itoa(i)},
		})
	}
	v, err := NewPublisherVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range creds {
		p, err := v.Verify(c, t0)
		if err != nil || p.Subject != "key"+strconv.Itoa(i) {
			t.Errorf("key %d: %+v, %v", i, p, err)
		}
		if p != nil && p.Allows(OpPublish, "anything", t0) {
			t.Errorf("key %d: a principal without grants is allowed", i)
		}
	}
}

func TestVerifyJWTClaimVariants(t *testing.T) {
	k := newKeys(t)
	v := k.verifier(t)
	for name, c := range map[string]jwt.MapClaims{
		"one of several audiences": with(goodClaims(), "aud", []string{"other", "tslm"}),
		"empty tslm":               with(goodClaims(), "tslm", map[string]any{}),
		"no nbf":                   with(goodClaims(), "nbf", nil),
	} {
		if _, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, "ed1", c, k.ed), t0); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	p, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, "ed1", with(goodClaims(), "tslm", map[string]any{}), k.ed), t0)
	if err != nil || len(p.Grants) != 0 || p.Allows(OpPublish, "orders.eu", t0) {
		t.Errorf("empty tslm: %+v, %v", p, err)
	}
}

// Verify is used by every connection at once.
func TestVerifyConcurrently(t *testing.T) {
	k := newKeys(t)
	v := k.verifier(t)
	tok := sign(t, jwt.SigningMethodEdDSA, "ed1", goodClaims(), k.ed)
	errs := make(chan error, 8)
	for i := 0; i < cap(errs); i++ {
		go func() {
			var err error
			for j := 0; j < 50 && err == nil; j++ {
				if _, err = v.Verify(tok, t0); err == nil {
					_, err = v.Verify(k.apiKey, t0)
				}
			}
			errs <- err
		}()
	}
	for i := 0; i < cap(errs); i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
