// Package oidctest runs a real OpenID provider for tests: zitadel/oidc's op
// package, served by httptest on loopback, with a discovery document, a
// JWKS and a token endpoint that issues JWT access tokens to confidential
// clients through the client-credentials grant. Each client's grants ride
// in a custom claim. The signing key can be rotated, and the provider made
// unavailable, to exercise a verifier's key cache. A Provider is safe for
// concurrent use.
package oidctest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Options configure a Provider; zero values mean the defaults named.
type Options struct {
	// Algorithm signs the tokens: RS256 (the default), RS384, RS512,
	// PS256, ES256, ES384 or EdDSA.
	Algorithm string
	// Audience is the aud of the tokens; nil means ["tslm"].
	Audience []string
	// GrantsClaim is where AddClient's grants go; "" means "tslm". A
	// dotted name nests objects ("realm_access.tslm").
	GrantsClaim string
	// TokenTTL is how long tokens are valid; 0 means 5 minutes.
	TokenTTL time.Duration
	// TLS serves https with httptest's certificate, which HTTPClient
	// trusts.
	TLS bool
}

// Provider is a running OpenID provider.
type Provider struct {
	t     testing.TB
	srv   *httptest.Server
	op    *op.Provider
	store *store

	down                   atomic.Bool
	discovery, jwks, token atomic.Int64
}

// Start runs a provider until the test ends.
func Start(t testing.TB, opts Options) *Provider {
	t.Helper()
	if opts.Algorithm == "" {
		opts.Algorithm = "RS256"
	}
	if opts.Audience == nil {
		opts.Audience = []string{"tslm"}
	}
	if opts.GrantsClaim == "" {
		opts.GrantsClaim = "tslm"
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = 5 * time.Minute
	}
	p := &Provider{t: t}
	// The listener is bound before the provider is built, since the
	// issuer URL names its port.
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	issuer := "http://" + p.srv.Listener.Addr().String()
	var opOpts []op.Option
	if opts.TLS {
		issuer = "https://" + p.srv.Listener.Addr().String()
	} else {
		opOpts = append(opOpts, op.WithAllowInsecure())
	}
	p.store = &store{
		// zitadel's example storage answers everything this provider
		// does not use (authorization codes, refresh tokens, users).
		Storage:   storage.NewStorageWithClients(storage.NewUserStore(issuer), map[string]*storage.Client{}),
		alg:       jose.SignatureAlgorithm(opts.Algorithm),
		audience:  opts.Audience,
		claimPath: strings.Split(opts.GrantsClaim, "."),
		ttl:       opts.TokenTTL,
		clients:   make(map[string]*client),
	}
	if err := p.store.rotate(); err != nil {
		t.Fatalf("oidctest: %v", err)
	}
	var cryptoKey [32]byte
	_, _ = rand.Read(cryptoKey[:])
	var err error
	p.op, err = op.NewProvider(&op.Config{CryptoKey: cryptoKey}, p.store, op.StaticIssuer(issuer), opOpts...)
	if err != nil {
		t.Fatalf("oidctest: %v", err)
	}
	if opts.TLS {
		p.srv.StartTLS()
	} else {
		p.srv.Start()
	}
	t.Cleanup(p.Close)
	return p
}

func (p *Provider) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case oidc.DiscoveryEndpoint:
		p.discovery.Add(1)
	case p.op.KeysEndpoint().Relative():
		p.jwks.Add(1)
	case p.op.TokenEndpoint().Relative():
		p.token.Add(1)
	}
	if p.down.Load() {
		http.Error(w, "oidctest: provider down", http.StatusServiceUnavailable)
		return
	}
	p.op.ServeHTTP(w, r)
}

// Close stops the provider; Start arranges it at the end of the test.
func (p *Provider) Close() { p.srv.Close() }

// Issuer is the provider's issuer URL, without a trailing slash.
func (p *Provider) Issuer() string { return p.srv.URL }

// HTTPClient reaches the provider, trusting its certificate when it serves
// https.
func (p *Provider) HTTPClient() *http.Client {
	c := p.srv.Client()
	c.Timeout = 10 * time.Second
	return c
}

// SetAvailable makes every endpoint answer 503 (false) or serve again.
func (p *Provider) SetAvailable(ok bool) { p.down.Store(!ok) }

// DiscoveryFetches and JWKSFetches count requests for the discovery
// document and the JWKS, answered or not.
func (p *Provider) DiscoveryFetches() int { return int(p.discovery.Load()) }
func (p *Provider) JWKSFetches() int      { return int(p.jwks.Load()) }

// AddClient registers a confidential client that may use the
// client-credentials grant. Its tokens have sub = id and carry grants
// (marshalled to JSON) in the grants claim; nil leaves the claim out.
// Adding an id again replaces the client.
func (p *Provider) AddClient(id, secret string, grants any) {
	p.store.mu.Lock()
	defer p.store.mu.Unlock()
	p.store.clients[id] = &client{id: id, secret: secret, grants: grants}
}

// Token asks the token endpoint for an access token for clientID, as a
// client would, and returns it.
func (p *Provider) Token(t testing.TB, clientID string) string {
	t.Helper()
	p.store.mu.Lock()
	c := p.store.clients[clientID]
	p.store.mu.Unlock()
	if c == nil {
		t.Fatalf("oidctest: no client %q", clientID)
	}
	form := url.Values{"grant_type": {string(oidc.GrantTypeClientCredentials)}}
	req, err := http.NewRequest(http.MethodPost, p.op.TokenEndpoint().Absolute(p.Issuer()), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// RFC 6749, section 2.3.1: id and secret are form-encoded first.
	req.SetBasicAuth(url.QueryEscape(c.id), url.QueryEscape(c.secret))
	resp, err := p.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("oidctest: token request: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &tok) != nil || tok.AccessToken == "" {
		t.Fatalf("oidctest: token request: %s: %s", resp.Status, body)
	}
	return tok.AccessToken
}

// RotateKey makes a new key sign the tokens. The previous keys stay in the
// JWKS, as a provider keeps them while tokens they signed are alive, until
// RetireOldKeys.
func (p *Provider) RotateKey() {
	if err := p.store.rotate(); err != nil {
		p.t.Fatalf("oidctest: %v", err)
	}
}

// RetireOldKeys removes every key but the current one from the JWKS.
func (p *Provider) RetireOldKeys() {
	p.store.mu.Lock()
	defer p.store.mu.Unlock()
	p.store.keys = p.store.keys[len(p.store.keys)-1:]
}

// KeyID is the kid of the current signing key.
func (p *Provider) KeyID() string { return p.store.current().id }

// PublicKey is the current signing key's public key.
func (p *Provider) PublicKey() crypto.PublicKey { return p.store.current().priv.Public() }

// Sign signs claims with the current key, as the provider signs its tokens
// (same header: alg, kid, typ), for tokens the token endpoint would not
// issue: expired, for another issuer, without sub.
func (p *Provider) Sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	signer, err := op.SignerFromKey(p.store.current())
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// store is the provider's storage: the example's, with this package's
// clients, keys and claims over it.
type store struct {
	*storage.Storage

	alg       jose.SignatureAlgorithm
	audience  []string
	claimPath []string
	ttl       time.Duration

	mu      sync.Mutex
	clients map[string]*client
	keys    []*signingKey // the last signs; all are published
	serial  int
}

var (
	_ op.Storage                        = (*store)(nil)
	_ op.ClientCredentialsStorage       = (*store)(nil)
	_ op.CanGetPrivateClaimsFromRequest = (*store)(nil)
)

func (s *store) rotate() error {
	k, err := newKey(s.alg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serial++
	k.id = fmt.Sprintf("key-%d-%s", s.serial, rand.Text()[:8])
	s.keys = append(s.keys, k)
	return nil
}

func (s *store) current() *signingKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[len(s.keys)-1]
}

func newKey(alg jose.SignatureAlgorithm) (*signingKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.RS256, jose.RS384, jose.RS512, jose.PS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.ES384:
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case jose.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("algorithm %q not supported", alg)
	}
	if err != nil {
		return nil, err
	}
	return &signingKey{alg: alg, priv: priv}, nil
}

// signingKey is an op.SigningKey; its public half, publicKey, an op.Key.
type signingKey struct {
	id   string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return k.alg }
func (k *signingKey) Key() any                                    { return k.priv }
func (k *signingKey) ID() string                                  { return k.id }

type publicKey struct{ k *signingKey }

func (p publicKey) ID() string                         { return p.k.id }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return p.k.alg }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return p.k.priv.Public() }

func (s *store) SigningKey(context.Context) (op.SigningKey, error) { return s.current(), nil }

func (s *store) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{s.alg}, nil
}

func (s *store) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]op.Key, len(s.keys))
	for i, k := range s.keys {
		keys[i] = publicKey{k}
	}
	return keys, nil
}

var errClient = errors.New("unknown client or wrong secret")

func (s *store) lookup(id, secret string) (*client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clients[id]
	if c == nil || subtle.ConstantTimeCompare([]byte(c.secret), []byte(secret)) != 1 {
		return nil, errClient
	}
	return c, nil
}

func (s *store) ClientCredentials(_ context.Context, id, secret string) (op.Client, error) {
	return s.lookup(id, secret)
}

func (s *store) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	_, err := s.lookup(id, secret)
	return err
}

func (s *store) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.clients[id]; c != nil {
		return c, nil
	}
	return nil, errClient
}

// tokenRequest is a client-credentials grant: the client is the subject.
type tokenRequest struct {
	clientID string
	audience []string
	scopes   []string
}

func (r *tokenRequest) GetSubject() string    { return r.clientID }
func (r *tokenRequest) GetAudience() []string { return r.audience }
func (r *tokenRequest) GetScopes() []string   { return r.scopes }

func (s *store) ClientCredentialsTokenRequest(_ context.Context, id string, scopes []string) (op.TokenRequest, error) {
	return &tokenRequest{clientID: id, audience: s.audience, scopes: scopes}, nil
}

func (s *store) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	return rand.Text(), time.Now().Add(s.ttl), nil
}

func (s *store) GetPrivateClaimsFromRequest(_ context.Context, r op.TokenRequest, _ []string) (map[string]any, error) {
	s.mu.Lock()
	c := s.clients[r.GetSubject()]
	s.mu.Unlock()
	if c == nil || c.grants == nil {
		return nil, nil
	}
	// The grants go at the end of the claim path, objects around them.
	var v any = c.grants
	for i := len(s.claimPath) - 1; i >= 0; i-- {
		v = map[string]any{s.claimPath[i]: v}
	}
	return v.(map[string]any), nil
}

// client is a confidential client allowed the client-credentials grant,
// whose access tokens are JWTs.
type client struct {
	id, secret string
	grants     any
}

var _ op.Client = (*client)(nil)

func (c *client) GetID() string                        { return c.id }
func (c *client) RedirectURIs() []string               { return nil }
func (c *client) PostLogoutRedirectURIs() []string     { return nil }
func (c *client) ApplicationType() op.ApplicationType  { return op.ApplicationTypeWeb }
func (c *client) AuthMethod() oidc.AuthMethod          { return oidc.AuthMethodBasic }
func (c *client) ResponseTypes() []oidc.ResponseType   { return nil }
func (c *client) LoginURL(string) string               { return "" }
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (c *client) IDTokenLifetime() time.Duration       { return time.Hour }
func (c *client) DevMode() bool                        { return false }
func (c *client) IsScopeAllowed(string) bool           { return false }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeClientCredentials}
}
