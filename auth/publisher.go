package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrUnauthenticated is every credential Verify refuses. The errors it
// returns wrap it with a reason that is safe to show the client: it never
// quotes the credential.
var ErrUnauthenticated = errors.New("unauthenticated")

// reason is one category of refusal; it unwraps to ErrUnauthenticated.
type reason struct{ msg string }

func (r *reason) Error() string { return "unauthenticated: " + r.msg }
func (r *reason) Unwrap() error { return ErrUnauthenticated }

// The categories of refusal. Detail, where there is any, is wrapped around
// them with fmt.Errorf("%w: ...").
var (
	errNoCredential  = &reason{"no credential"}
	errTooLong       = &reason{fmt.Sprintf("credential longer than %d bytes", MaxCredentialLen)}
	errUnknownAPIKey = &reason{"API key not recognized"}
	errNoJWT         = &reason{"tokens are not accepted here"}
	errMalformed     = &reason{"malformed token"}
	errNoKID         = &reason{"token has no key id (kid)"}
	errUnknownKID    = &reason{"token names an unknown key id (kid)"}
	errAlg           = &reason{"token algorithm not accepted for its key"}
	errSignature     = &reason{"token signature invalid"}
	errExpired       = &reason{"credential expired"}
	errNotYetValid   = &reason{"token not valid yet (nbf)"}
	errMissingClaim  = &reason{"token lacks a required claim (exp, and iss and aud where configured)"}
	errIssuer        = &reason{"token issuer not accepted"}
	errAudience      = &reason{"token audience not accepted"}
	errClaims        = &reason{"token claims invalid"}
)

// MaxCredentialLen bounds a credential before any parsing: tokens with a
// few patterns are well under it.
const MaxCredentialLen = 8 << 10

// MaxLeeway bounds PublisherConfig.Leeway: clock skew is seconds, and a
// leeway of hours would keep revoked-by-expiry tokens alive.
const MaxLeeway = 5 * time.Minute

// PublisherConfig lists the credentials publishers may present.
type PublisherConfig struct {
	APIKeys []APIKey
	JWTKeys []JWTKey
	// Issuer and Audience, when set, must be a token's iss and one of its
	// aud; tokens without them are then refused.
	Issuer, Audience string
	// Leeway is the clock skew tolerated on exp and nbf, at most MaxLeeway.
	Leeway time.Duration
}

// APIKey is a static key, listed by its SHA-256 hash: the gateway never
// holds the key itself. API keys should be long random strings; one with
// exactly two dots would be read as a token.
type APIKey struct {
	SHA256    [32]byte
	Principal Principal
}

// JWTKey verifies tokens whose header names it by kid. Exactly one of
// Ed25519 (tokens signed with EdDSA) and HMAC (tokens signed with HS256, a
// secret of at least 32 bytes) is set; each key accepts only its algorithm.
type JWTKey struct {
	ID      string
	Ed25519 ed25519.PublicKey
	HMAC    []byte
}

// minHMACLen is the HS256 secret floor of RFC 7518, section 3.2.
const minHMACLen = 32

// ParseSHA256Hex reads an API key's hash as 64 hexadecimal digits, as
// `sha256sum` prints it.
func ParseSHA256Hex(s string) ([32]byte, error) {
	var h [32]byte
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(h) {
		return h, errors.New("a SHA-256 hash is 64 hexadecimal digits")
	}
	copy(h[:], b)
	return h, nil
}

// PublisherVerifier checks publisher credentials. It is safe for
// concurrent use and does no I/O.
type PublisherVerifier struct {
	apiKeys  []APIKey
	jwtKeys  map[string]jwtKey
	issuer   string
	audience string
	leeway   time.Duration
}

type jwtKey struct {
	alg string // the one algorithm this key verifies
	key any    // ed25519.PublicKey or []byte, as the jwt methods take them
}

// NewPublisherVerifier checks cfg and returns a verifier that accepts the
// credentials it lists.
func NewPublisherVerifier(cfg PublisherConfig) (*PublisherVerifier, error) {
	if len(cfg.APIKeys) == 0 && len(cfg.JWTKeys) == 0 {
		return nil, errors.New("auth: no API keys and no token keys: no publisher could authenticate")
	}
	if cfg.Leeway < 0 || cfg.Leeway > MaxLeeway {
		return nil, fmt.Errorf("auth: leeway %v is outside 0-%v", cfg.Leeway, MaxLeeway)
	}
	v := &PublisherVerifier{
		jwtKeys:  make(map[string]jwtKey, len(cfg.JWTKeys)),
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		leeway:   cfg.Leeway,
	}
	seen := make(map[[32]byte]bool, len(cfg.APIKeys))
	for i, k := range cfg.APIKeys {
		if k.SHA256 == ([32]byte{}) {
			return nil, fmt.Errorf("auth: API key %d: no hash", i)
		}
		if seen[k.SHA256] {
			return nil, fmt.Errorf("auth: API key %d (%s): hash listed twice", i, k.Principal.Subject)
		}
		seen[k.SHA256] = true
		if err := k.Principal.validate(); err != nil {
			return nil, fmt.Errorf("auth: API key %d (%s): %w", i, k.Principal.Subject, err)
		}
		v.apiKeys = append(v.apiKeys, APIKey{SHA256: k.SHA256, Principal: *k.Principal.clone()})
	}
	for i, k := range cfg.JWTKeys {
		if k.ID == "" {
			return nil, fmt.Errorf("auth: token key %d: no key id", i)
		}
		if _, dup := v.jwtKeys[k.ID]; dup {
			return nil, fmt.Errorf("auth: token key %q: key id listed twice", k.ID)
		}
		switch {
		case k.Ed25519 != nil && k.HMAC != nil, k.Ed25519 == nil && k.HMAC == nil:
			return nil, fmt.Errorf("auth: token key %q: set exactly one of an Ed25519 public key and an HMAC secret", k.ID)
		case k.Ed25519 != nil:
			if len(k.Ed25519) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("auth: token key %q: an Ed25519 public key is %d bytes, not %d", k.ID, ed25519.PublicKeySize, len(k.Ed25519))
			}
			v.jwtKeys[k.ID] = jwtKey{alg: jwt.SigningMethodEdDSA.Alg(), key: ed25519.PublicKey(bytes.Clone(k.Ed25519))}
		default:
			if len(k.HMAC) < minHMACLen {
				return nil, fmt.Errorf("auth: token key %q: an HMAC secret needs at least %d bytes, not %d", k.ID, minHMACLen, len(k.HMAC))
			}
			v.jwtKeys[k.ID] = jwtKey{alg: jwt.SigningMethodHS256.Alg(), key: bytes.Clone(k.HMAC)}
		}
	}
	// A public key reused as an HMAC secret would let anyone who knows the
	// public key sign tokens for the HMAC key's id.
	for _, a := range cfg.JWTKeys {
		for _, b := range cfg.JWTKeys {
			if a.Ed25519 != nil && b.HMAC != nil && bytes.Equal(a.Ed25519, b.HMAC) {
				return nil, fmt.Errorf("auth: token key %q: its HMAC secret is the public key of %q", b.ID, a.ID)
			}
		}
	}
	return v, nil
}

// Verify checks credential at now and returns the principal it stands for.
// A credential with exactly two dots is a JSON Web Token; anything else is
// an API key. Every error wraps ErrUnauthenticated.
func (v *PublisherVerifier) Verify(credential string, now time.Time) (*Principal, error) {
	switch {
	case credential == "":
		return nil, errNoCredential
	case len(credential) > MaxCredentialLen:
		return nil, errTooLong
	case strings.Count(credential, ".") == 2:
		return v.verifyJWT(credential, now)
	}
	return v.verifyAPIKey(credential, now)
}

func (v *PublisherVerifier) verifyAPIKey(credential string, now time.Time) (*Principal, error) {
	h := sha256.Sum256([]byte(credential))
	// Every listed hash is compared, so the time taken does not say how
	// many keys were tried before the match.
	found := -1
	for i := range v.apiKeys {
		eq := subtle.ConstantTimeCompare(h[:], v.apiKeys[i].SHA256[:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	if found < 0 {
		return nil, errUnknownAPIKey
	}
	p := v.apiKeys[found].Principal
	if p.Expired(now) {
		return nil, errExpired
	}
	c := p.clone()
	c.Issuer = IssuerAPIKey
	return c, nil
}

// claims are a publisher token's claims. tslm stays raw until the signature
// has been checked, so that nothing an attacker wrote is interpreted first.
type claims struct {
	jwt.RegisteredClaims
	TSLM json.RawMessage `json:"tslm"`
}

func (v *PublisherVerifier) verifyJWT(token string, now time.Time) (*Principal, error) {
	if len(v.jwtKeys) == 0 {
		return nil, errNoJWT
	}
	// The key is chosen by kid before the library parses the token, so that
	// the parser accepts only that key's algorithm: an HS256 token cannot be
	// checked against an Ed25519 key, nor the other way round.
	header, err := readHeader(token)
	if err != nil {
		return nil, err
	}
	key, ok := v.jwtKeys[header.Kid]
	if !ok {
		return nil, errUnknownKID
	}
	if header.Alg != key.alg {
		return nil, errAlg
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{key.alg}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
	}
	if v.issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.issuer))
	}
	if v.audience != "" {
		opts = append(opts, jwt.WithAudience(v.audience))
	}
	var c claims
	_, err = jwt.NewParser(opts...).ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		// The library parsed the same header; check it agrees.
		if kid, _ := t.Header["kid"].(string); kid != header.Kid || t.Method.Alg() != key.alg {
			return nil, errAlg
		}
		return key.key, nil
	})
	if err != nil {
		return nil, jwtReason(err)
	}
	return principalFromClaims(&c, v.leeway)
}

// jwtReason maps the library's error to a category; the first that applies
// wins, signature before claims since the library checks in that order.
func jwtReason(err error) error {
	var ours *reason
	if errors.As(err, &ours) { // from the key function
		return ours
	}
	for _, m := range []struct {
		lib, ours error
	}{
		{jwt.ErrTokenMalformed, errMalformed},
		{jwt.ErrTokenSignatureInvalid, errSignature},
		{jwt.ErrTokenUnverifiable, errSignature},
		{jwt.ErrTokenExpired, errExpired},
		{jwt.ErrTokenNotValidYet, errNotYetValid},
		{jwt.ErrTokenInvalidIssuer, errIssuer},
		{jwt.ErrTokenInvalidAudience, errAudience},
		{jwt.ErrTokenRequiredClaimMissing, errMissingClaim},
	} {
		if errors.Is(err, m.lib) {
			return m.ours
		}
	}
	return errClaims
}

func principalFromClaims(c *claims, leeway time.Duration) (*Principal, error) {
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: no subject (sub)", errClaims)
	}
	if len(c.TSLM) == 0 || string(c.TSLM) == "null" {
		return nil, fmt.Errorf("%w: no tslm claim", errClaims)
	}
	grants, err := decodeGrantObject("tslm", c.TSLM, Ops(OpCreate, OpPublish, OpServe))
	if err != nil {
		return nil, err
	}
	p := &Principal{Subject: c.Subject, Issuer: IssuerPublisherToken, Grants: grants}
	// exp is required, so it is set. The principal lives as long as Verify
	// would accept the token: exp plus the leeway.
	p.Expires = c.ExpiresAt.Add(leeway)
	return p, nil
}

// jwtHeader is what the verifiers read of a token's header before its
// signature is checked: only to choose the key and algorithm, which the
// library then enforces.
type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	// RFC 7515 says a token with extensions the recipient does not
	// understand is refused; the library ignores crit, so check here.
	Crit json.RawMessage `json:"crit"`
}

// readHeader decodes the header of token, which has two dots, and refuses
// critical extensions and a missing kid: every key the gateway trusts is
// named, so that a token is checked against one key with one algorithm.
func readHeader(token string) (jwtHeader, error) {
	var h jwtHeader
	raw, err := base64.RawURLEncoding.DecodeString(token[:strings.IndexByte(token, '.')])
	if err != nil || json.Unmarshal(raw, &h) != nil {
		return h, errMalformed
	}
	if h.Crit != nil {
		return h, fmt.Errorf("%w: critical header extensions are not supported", errMalformed)
	}
	if h.Kid == "" {
		return h, errNoKID
	}
	return h, nil
}

// decodeGrantObject reads grants written as {"op": ["pattern", ...], ...}
// for the ops in allowed; claim names the claim in errors. Any other key
// refuses the token rather than being ignored: a token that grants
// "subscribe" where only publishing is understood was meant to grant
// something this verifier does not. null or an absent list grants nothing.
func decodeGrantObject(claim string, raw json.RawMessage, allowed OpSet) ([]Grant, error) {
	var byOp map[string]json.RawMessage
	if err := json.Unmarshal(raw, &byOp); err != nil || byOp == nil {
		return nil, fmt.Errorf("%w: %s must be an object of %s lists of patterns", errClaims, claim, allowed)
	}
	lists := make(map[Op][]string, len(byOp))
	for name, v := range byOp {
		op, err := ParseOp(name)
		if err != nil || !allowed.Has(op) {
			// The key comes from the token: not quoted.
			return nil, fmt.Errorf("%w: %s holds a key other than %s", errClaims, claim, allowed)
		}
		var pats []string
		if err := json.Unmarshal(v, &pats); err != nil {
			return nil, fmt.Errorf("%w: %s.%s must be a list of patterns", errClaims, claim, op)
		}
		lists[op] = pats
	}
	var grants []Grant
	for op := OpSubscribe; op < opEnd; op++ { // a fixed order, whatever the token's
		g, err := grantOf(claim+"."+op.String(), Ops(op), lists[op])
		if err != nil {
			return nil, err
		}
		if g != nil {
			grants = append(grants, *g)
		}
	}
	return grants, nil
}

// grantOf allows ops on the patterns in pats, nil if there are none; name
// says where they were found, in errors.
func grantOf(name string, ops OpSet, pats []string) (*Grant, error) {
	if len(pats) == 0 {
		return nil, nil
	}
	g := &Grant{Ops: ops, Patterns: make([]Pattern, 0, len(pats))}
	for i, s := range pats {
		pat, err := ParsePattern(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s[%d]: %v", errClaims, name, i, err)
		}
		g.Patterns = append(g.Patterns, pat)
	}
	return g, nil
}
