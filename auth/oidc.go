package auth

import (
	"net/http"
	"time"
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
	// "tslm". A dotted name reaches into objects ("realm_access.tslm").
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
