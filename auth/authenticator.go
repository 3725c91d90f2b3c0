package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"
)

// TokenVerifier verifies tokens of one issuer, such as an OpenID provider.
type TokenVerifier interface {
	// Issuer is the iss its tokens carry.
	Issuer() string
	Verify(ctx context.Context, token string, now time.Time) (*Principal, error)
}

// Authenticator turns any credential the gateway accepts into a principal:
// publisher API keys and tokens (PublisherVerifier) and access tokens of
// an OpenID provider (a TokenVerifier). It is safe for concurrent use.
//
// Publisher credentials it accepted are remembered, by their SHA-256 hash,
// for at most CacheTTL and never past the principal's expiry, so that a
// publisher sending thousands of HTTP requests a second pays one
// verification: their keys are fixed by configuration, so a remembered
// answer stays right. An OpenID provider's tokens are checked every time,
// so that a key the provider withdrew is refused as soon as the gateway
// has the new JWKS. Refusals are never remembered.
type Authenticator struct {
	publishers *PublisherVerifier // nil: none configured
	oidc       TokenVerifier      // nil: none configured
	now        func() time.Time

	mu        sync.Mutex
	cache     map[[sha256.Size]byte]cached
	cacheMax  int
	cacheable func(*Principal) bool
}

// configured reports whether p stands for a credential the gateway's own
// configuration vouches for, which cannot be withdrawn while it runs.
func configured(p *Principal) bool {
	return p.Issuer == IssuerAPIKey || p.Issuer == IssuerPublisherToken
}

type cached struct {
	p     *Principal
	until time.Time
}

// Bounds of the verified-credential cache.
const (
	CacheTTL     = time.Minute
	CacheEntries = 10_000
)

var (
	errNoVerifier  = &reason{"no credentials of this kind are configured"}
	errUnavailable = &reason{"the identity provider's keys are unavailable: try again later"}
)

// NewAuthenticator combines the verifiers; either may be nil.
func NewAuthenticator(publishers *PublisherVerifier, oidc TokenVerifier) *Authenticator {
	return &Authenticator{
		publishers: publishers,
		oidc:       oidc,
		now:        time.Now,
		cache:      make(map[[sha256.Size]byte]cached),
		cacheMax:   CacheEntries,
		cacheable:  configured,
	}
}

// Authenticate checks credential and returns the principal it stands for.
// A token is routed by its header's kid (a publisher key) or, failing
// that, its iss (the OpenID provider); the routing reads the token before
// its signature is checked, so it only picks the verifier, which then
// checks everything. Every refusal wraps ErrUnauthenticated.
func (a *Authenticator) Authenticate(ctx context.Context, credential string) (*Principal, error) {
	now := a.now()
	switch {
	case credential == "":
		return nil, errNoCredential
	case len(credential) > MaxCredentialLen:
		return nil, errTooLong
	}
	key := sha256.Sum256([]byte(credential))
	if p := a.cached(key, now); p != nil {
		return p, nil
	}
	p, err := a.verify(ctx, credential, now)
	if err != nil {
		return nil, err
	}
	if p == nil { // a TokenVerifier's bug, not a pass
		return nil, errClaims
	}
	if a.cacheable(p) {
		a.remember(key, p, now)
	}
	return p.clone(), nil
}

func (a *Authenticator) verify(ctx context.Context, credential string, now time.Time) (*Principal, error) {
	switch {
	case strings.Count(credential, ".") != 2:
		if a.publishers == nil {
			return nil, errNoVerifier
		}
		return a.publishers.Verify(credential, now)
	}
	if a.publishers != nil && a.publishers.knowsKID(peekKID(credential)) {
		return a.publishers.Verify(credential, now)
	}
	if a.oidc != nil && peekIssuer(credential) == a.oidc.Issuer() {
		p, err := a.oidc.Verify(ctx, credential, now)
		if err != nil && !errors.Is(err, ErrUnauthenticated) {
			// A failure to reach the provider is not the client's fault,
			// but the client is refused all the same: say so plainly, and
			// without the details (addresses, status lines), which are
			// the operator's business and logged by the verifier.
			return nil, errUnavailable
		}
		return p, err
	}
	if a.publishers != nil {
		return a.publishers.Verify(credential, now) // says why: unknown kid
	}
	return nil, errUnknownKID
}

// cached returns a copy of the principal remembered for key, if it is
// still valid at now.
func (a *Authenticator) cached(key [sha256.Size]byte, now time.Time) *Principal {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.cache[key]
	switch {
	case !ok:
		return nil
	case !now.Before(c.until):
		delete(a.cache, key)
		return nil
	}
	return c.p.clone() // callers may change what they get; the cache stays
}

// remember keeps p for key until CacheTTL from now or p's expiry, whichever
// is sooner. A full cache first drops what has expired and, if that is not
// enough, a tenth of its entries, whichever they are: a sweep per tenth of
// the bound keeps the cost per insertion constant.
func (a *Authenticator) remember(key [sha256.Size]byte, p *Principal, now time.Time) {
	until := now.Add(CacheTTL)
	if !p.Expires.IsZero() && p.Expires.Before(until) {
		until = p.Expires
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= a.cacheMax {
		for k, c := range a.cache {
			if !now.Before(c.until) {
				delete(a.cache, k)
			}
		}
		for k := range a.cache { // map order is unspecified: any entries
			if len(a.cache) < a.cacheMax-a.cacheMax/10 {
				break
			}
			delete(a.cache, k)
		}
	}
	a.cache[key] = cached{p: p, until: until}
}

// knowsKID reports whether kid names a configured token key.
func (v *PublisherVerifier) knowsKID(kid string) bool {
	_, ok := v.jwtKeys[kid]
	return kid != "" && ok
}

// peekKID returns the kid of a token's header without verifying anything.
func peekKID(token string) string {
	var h struct {
		Kid string `json:"kid"`
	}
	peekPart(token, 0, &h)
	return h.Kid
}

// peekIssuer returns the iss of a token's payload without verifying
// anything.
func peekIssuer(token string) string {
	var c struct {
		Iss string `json:"iss"`
	}
	peekPart(token, 1, &c)
	return c.Iss
}

func peekPart(token string, i int, v any) {
	parts := strings.SplitN(token, ".", 3)
	if len(parts) != 3 {
		return
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		return
	}
	_ = json.Unmarshal(raw, v) // a malformed part leaves v zero: no match
}
