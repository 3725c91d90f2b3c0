package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// OIDCConfig configures the verification of subscribers' access tokens
// issued by an OpenID provider.
type OIDCConfig struct {
	// Issuer is the provider's issuer URL: its discovery document is at
	// Issuer + "/.well-known/openid-configuration", and tokens must carry
	// it as iss.
	Issuer string
	// Audience, when set, must be one of a token's aud.
	Audience string
	// GrantsClaim names the claim holding the subject's grants; "" means
	// "tslm". A dotted name reaches into objects ("realm_access.tslm")
	// unless a top-level claim has the whole name, as namespaced claims
	// ("https://tslm.example/grants") do.
	GrantsClaim string
	// Refresh is how often the JWKS is fetched again in the background; 0
	// means 15m. A token naming an unknown kid also triggers a fetch, at
	// most one per UnknownKIDInterval (0 means 10s).
	Refresh            time.Duration
	UnknownKIDInterval time.Duration
	// Leeway is the clock skew tolerated on exp and nbf, at most MaxLeeway.
	Leeway time.Duration
	// HTTPClient fetches discovery and JWKS; nil means one with a 10s
	// timeout.
	HTTPClient *http.Client
	// Logger receives the provider's unavailability and recovery; nil
	// means slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with every zero field set to its default.
func (c OIDCConfig) WithDefaults() OIDCConfig {
	if c.GrantsClaim == "" {
		c.GrantsClaim = "tslm"
	}
	if c.Refresh <= 0 {
		c.Refresh = 15 * time.Minute
	}
	if c.UnknownKIDInterval <= 0 {
		c.UnknownKIDInterval = 10 * time.Second
	}
	return c
}

// oidcAlgorithms are the signature algorithms an OpenID provider's tokens
// may use. HMAC algorithms are not among them: their key would be a secret
// shared with the provider, and a verifier that accepted them could be fed
// a token "signed" with a public key. Neither is none.
var oidcAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"}

// ErrProviderUnavailable is Verify's error while the provider's keys have
// not been loaded yet. It does not wrap ErrUnauthenticated: the token may be
// fine, and the failure is not the client's.
var ErrProviderUnavailable = errors.New("identity provider keys unavailable")

// The provider's documents are small; a bound keeps a misbehaving or
// hostile endpoint from filling memory.
const (
	maxProviderDocument = 1 << 20
	fetchTimeout        = 10 * time.Second
	// Discovery is retried from minBackoff, doubling up to maxBackoff.
	minBackoff = 250 * time.Millisecond
	maxBackoff = time.Minute
)

// OIDCVerifier verifies the access tokens of one OpenID provider offline,
// against the provider's signing keys (its JWKS), which it fetches in the
// background. It is safe for concurrent use.
type OIDCVerifier struct {
	cfg        OIDCConfig
	log        *slog.Logger
	client     *http.Client
	claimPath  []string
	parserOpts []jwt.ParserOption

	keys      atomic.Pointer[providerKeys] // nil until discovery and a first JWKS succeed
	ready     chan struct{}
	attempted chan struct{}

	// An unknown kid fetches the JWKS again at most once per
	// UnknownKIDInterval; tokens arriving meanwhile wait for that fetch
	// rather than start another.
	mu         sync.Mutex
	unknownKID *rate.Limiter
	fetching   chan struct{} // closed when the current fetch ends; nil: none

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// providerKeys are the provider's keys once known: cache holds them (and is
// replaced every Refresh), refetch fetches them again when asked for a key
// cache lacks, and keyfunc hands the library the key a token names. stop
// ends the cache's refreshing.
type providerKeys struct {
	cache   jwkset.Storage
	refetch jwkset.Storage
	keyfunc keyfunc.Keyfunc
	stop    context.CancelFunc
}

var _ TokenVerifier = (*OIDCVerifier)(nil)

// NewOIDCVerifier checks cfg and starts fetching the provider's discovery
// document and keys in the background. It fails only on invalid
// configuration: a provider that is down at start is retried with backoff,
// and Verify returns ErrProviderUnavailable until it answers. ctx bounds the
// background work, as Close does.
func NewOIDCVerifier(ctx context.Context, cfg OIDCConfig) (*OIDCVerifier, error) {
	cfg = cfg.WithDefaults()
	if err := validIssuer(cfg.Issuer); err != nil {
		return nil, fmt.Errorf("auth: OIDC issuer: %w", err)
	}
	if cfg.Leeway < 0 || cfg.Leeway > MaxLeeway {
		return nil, fmt.Errorf("auth: OIDC leeway %v is outside 0-%v", cfg.Leeway, MaxLeeway)
	}
	path := strings.Split(cfg.GrantsClaim, ".")
	if slices.Contains(path, "") {
		return nil, fmt.Errorf("auth: OIDC grants claim %q: empty name between dots", cfg.GrantsClaim)
	}
	v := &OIDCVerifier{
		cfg:        cfg,
		log:        cfg.Logger,
		client:     boundedClient(cfg.HTTPClient),
		claimPath:  path,
		ready:      make(chan struct{}),
		attempted:  make(chan struct{}),
		unknownKID: rate.NewLimiter(rate.Every(cfg.UnknownKIDInterval), 1),
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	v.log = v.log.With("component", "oidc", "issuer", cfg.Issuer)
	if u, _ := url.Parse(cfg.Issuer); u.Scheme == "http" && !loopback(u.Hostname()) {
		v.log.Warn("the OpenID provider is reached over plain http: whoever sits between can replace its keys and sign tokens")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(oidcAlgorithms),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithIssuer(cfg.Issuer),
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parserOpts = opts
	v.ctx, v.cancel = context.WithCancel(ctx)
	v.wg.Go(v.connect)
	return v, nil
}

func validIssuer(issuer string) error {
	u, err := url.Parse(issuer)
	switch {
	case issuer == "":
		return errors.New("not set")
	case err != nil:
		return err
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		return fmt.Errorf("%q is not an absolute http(s) URL", issuer)
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%q has a query or fragment, which an issuer never has", issuer)
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// boundedClient is c (or a client with fetchTimeout) whose responses are
// cut at maxProviderDocument.
func boundedClient(c *http.Client) *http.Client {
	if c == nil {
		c = &http.Client{Timeout: fetchTimeout}
	}
	bounded := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	bounded.Transport = boundedTransport{base}
	return &bounded
}

type boundedTransport struct{ base http.RoundTripper }

func (t boundedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err == nil {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(resp.Body, maxProviderDocument), resp.Body}
	}
	return resp, err
}

// Issuer is the iss the provider's tokens carry.
func (v *OIDCVerifier) Issuer() string { return v.cfg.Issuer }

// Ready is closed once the provider's keys have been loaded.
func (v *OIDCVerifier) Ready() <-chan struct{} { return v.ready }

// Attempted is closed once the first attempt to load the provider's keys
// has ended, whether it succeeded (Ready is then closed already) or not,
// or the verifier was closed first. A server that waits for it before
// accepting clients checks their first tokens against the keys of a
// provider that answers, rather than refusing them as unverifiable, and
// is not held up by one that does not.
func (v *OIDCVerifier) Attempted() <-chan struct{} { return v.attempted }

// Close stops the background fetching. Verify refuses nothing it accepted
// before, but keys are no longer refreshed.
func (v *OIDCVerifier) Close() {
	v.cancel() // ends the cache's refreshing too: its context is a child
	v.wg.Wait()
}

// connect reads the discovery document and a first JWKS, retrying with
// backoff until both succeed or the verifier is closed.
func (v *OIDCVerifier) connect() {
	attempted := sync.OnceFunc(func() { close(v.attempted) })
	defer attempted()
	backoff := minBackoff
	for {
		keys, err := v.load()
		if err == nil {
			v.keys.Store(keys)
			close(v.ready)
			attempted()
			v.log.Info("OpenID provider keys loaded: its tokens are verified from now on")
			return
		}
		attempted()
		if v.ctx.Err() != nil {
			return
		}
		// Jitter spreads the retries of replicas that lost the provider
		// together.
		wait := backoff/2 + rand.N(backoff/2+1)
		v.log.Warn("OpenID provider unreachable: its tokens are refused until it answers", "err", err, "retry_in", wait)
		select {
		case <-v.ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, maxBackoff, max(v.cfg.Refresh, minBackoff))
	}
}

func (v *OIDCVerifier) load() (*providerKeys, error) {
	ctx, cancel := context.WithTimeout(v.ctx, fetchTimeout)
	defer cancel()
	// go-oidc checks that the document names the configured issuer, so a
	// mistyped or redirected issuer fails here rather than every token.
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, v.client), v.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := provider.Claims(&doc); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	if u, err := url.Parse(doc.JWKSURI); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("discovery: jwks_uri is not an absolute http(s) URL")
	}

	// The cache lives until the verifier closes, unless this attempt
	// fails: then its refresh goroutine must end with it.
	keys := &providerKeys{}
	cacheCtx, cacheCancel := context.WithCancel(v.ctx)
	keys.stop = cacheCancel
	cache, err := jwkset.NewStorageFromHTTP(doc.JWKSURI, jwkset.HTTPClientStorageOptions{
		Client:          v.client,
		Ctx:             cacheCtx,
		HTTPTimeout:     fetchTimeout,
		RefreshInterval: v.cfg.Refresh,
		RefreshErrorHandler: func(_ context.Context, err error) {
			v.log.Warn("JWKS fetch failed: keeping the keys already known", "err", err)
		},
	})
	if err == nil {
		var all []jwkset.JWK
		if all, err = cache.KeyReadAll(ctx); err == nil && len(all) == 0 {
			err = errors.New("the JWKS holds no key this gateway can use")
		}
	}
	if err != nil {
		keys.stop()
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	// The limit is ours (see refetch); jwkset's own limiter would make
	// callers wait for it.
	refetch, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{doc.JWKSURI: cache},
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
		RateLimitWaitMax:  fetchTimeout,
	})
	if err != nil {
		keys.stop()
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	kf, err := keyfunc.New(keyfunc.Options{
		Ctx:     cacheCtx,
		Storage: cache,
		// A key published for encryption never verifies; most providers
		// mark signing keys "sig", some leave use out.
		UseWhitelist: []jwkset.USE{jwkset.UseSig, ""},
	})
	if err != nil {
		keys.stop()
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	keys.cache, keys.refetch, keys.keyfunc = cache, refetch, kf
	return keys, nil
}

// oidcClaims are the registered claims the library checks, and every claim
// raw, for the grants, which are read once the signature has been checked.
type oidcClaims struct {
	jwt.RegisteredClaims
	all map[string]json.RawMessage
}

func (c *oidcClaims) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &c.RegisteredClaims); err != nil {
		return err
	}
	return json.Unmarshal(b, &c.all)
}

var (
	errAlgNotAllowed = fmt.Errorf("%w: accepted: %s", errAlg, strings.Join(oidcAlgorithms, ", "))
	errKeyUse        = fmt.Errorf("%w: the key it names is not for this algorithm or not for signatures", errAlg)
)

// Verify checks token at now and returns the principal it stands for.
// Refusals wrap ErrUnauthenticated; ErrProviderUnavailable says the keys
// are not known yet.
func (v *OIDCVerifier) Verify(ctx context.Context, token string, now time.Time) (*Principal, error) {
	switch {
	case token == "":
		return nil, errNoCredential
	case len(token) > MaxCredentialLen:
		return nil, errTooLong
	case strings.Count(token, ".") != 2:
		return nil, errMalformed
	}
	header, err := readHeader(token)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(oidcAlgorithms, header.Alg) {
		return nil, errAlgNotAllowed
	}
	keys := v.keys.Load()
	if keys == nil {
		return nil, ErrProviderUnavailable
	}
	if !v.knows(ctx, keys, header.Kid) {
		v.refetch(ctx, keys, header.Kid)
		if !v.knows(ctx, keys, header.Kid) {
			if all, err := keys.cache.KeyReadAll(ctx); err == nil && len(all) == 0 {
				return nil, ErrProviderUnavailable // the provider published no keys
			}
			return nil, errUnknownKID
		}
	}
	var c oidcClaims
	parser := jwt.NewParser(append(slices.Clip(v.parserOpts), jwt.WithTimeFunc(func() time.Time { return now }))...)
	_, err = parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		// The library parsed the same header; check it agrees.
		if kid, _ := t.Header["kid"].(string); kid != header.Kid || t.Method.Alg() != header.Alg {
			return nil, errAlg
		}
		key, err := keys.keyfunc.KeyfuncCtx(ctx)(t)
		switch {
		case errors.Is(err, jwkset.ErrKeyNotFound): // replaced meanwhile
			return nil, errUnknownKID
		case err != nil:
			return nil, errKeyUse
		}
		return key, nil
	})
	if err != nil {
		return nil, jwtReason(err)
	}
	return v.principal(&c)
}

func (v *OIDCVerifier) knows(ctx context.Context, keys *providerKeys, kid string) bool {
	_, err := keys.cache.KeyRead(ctx, kid)
	return err == nil
}

// refetch fetches the JWKS again for a kid the cache lacks, as after the
// provider rotated its keys, unless a fetch was made less than
// UnknownKIDInterval ago: tokens with made-up kids then cost nothing but
// this check. A fetch in progress is waited for rather than repeated.
func (v *OIDCVerifier) refetch(ctx context.Context, keys *providerKeys, kid string) {
	v.mu.Lock()
	done := v.fetching
	if done == nil {
		if !v.unknownKID.Allow() {
			v.mu.Unlock()
			return
		}
		done = make(chan struct{})
		v.fetching = done
		// The fetch belongs to the verifier, not to this caller: one
		// client going away does not cancel it for the others waiting.
		v.wg.Go(func() {
			fctx, cancel := context.WithTimeout(v.ctx, fetchTimeout)
			_, _ = keys.refetch.KeyRead(fctx, kid) // misses the cache, so fetches; failures are logged
			cancel()
			v.mu.Lock()
			v.fetching = nil
			v.mu.Unlock()
			close(done)
		})
	}
	v.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func (v *OIDCVerifier) principal(c *oidcClaims) (*Principal, error) {
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: no subject (sub)", errClaims)
	}
	grants, err := oidcGrants(v.cfg.GrantsClaim, v.grantsClaim(c.all))
	if err != nil {
		return nil, err
	}
	// exp is required, so it is set. As for publisher tokens, the
	// principal lives as long as Verify would accept the token.
	return &Principal{
		Subject: c.Subject,
		Issuer:  c.Issuer,
		Grants:  grants,
		Expires: c.ExpiresAt.Add(v.cfg.Leeway),
	}, nil
}

// grantsClaim finds the configured claim: a top-level claim of that exact
// name, else the dotted path into objects; nil when absent.
func (v *OIDCVerifier) grantsClaim(all map[string]json.RawMessage) json.RawMessage {
	if raw, ok := all[v.cfg.GrantsClaim]; ok {
		return raw
	}
	var raw json.RawMessage
	for i, name := range v.claimPath {
		if i > 0 {
			all = nil
			if json.Unmarshal(raw, &all) != nil {
				return nil // not an object: the claim is not there
			}
		}
		if raw = all[name]; raw == nil {
			return nil
		}
	}
	return raw
}

// oidcGrants reads an OpenID token's grants: a list of patterns, which may
// be subscribed to and requested, or an object of lists by operation.
func oidcGrants(claim string, raw json.RawMessage) ([]Grant, error) {
	raw = json.RawMessage(strings.TrimSpace(string(raw)))
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return nil, nil // authenticated, allowed what anonymous rules allow
	case raw[0] == '[':
		var pats []string
		if err := json.Unmarshal(raw, &pats); err != nil {
			return nil, fmt.Errorf("%w: %s must be a list of patterns", errClaims, claim)
		}
		g, err := grantOf(claim, Ops(OpSubscribe, OpRequest), pats)
		if g == nil || err != nil {
			return nil, err
		}
		return []Grant{*g}, nil
	case raw[0] == '{':
		return decodeGrantObject(claim, raw, allOps)
	}
	return nil, fmt.Errorf("%w: %s must be a list of patterns or an object of lists by operation", errClaims, claim)
}
