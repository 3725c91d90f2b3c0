package gateway

import (
	"context"
	"time"

	"github.com/tslm/tslm/auth"
)

// openSecurity builds what every listener asks before doing anything: the
// authenticator of the configured credentials (nil when there are none)
// and the channel rules' policy. Validate has checked the configuration.
func (g *Gateway) openSecurity(ctx context.Context) error {
	policy, err := auth.NewPolicy(g.cfg.Channels)
	if err != nil {
		return &ConfigError{Field: "Channels", Err: err}
	}
	g.policy = policy
	var publishers *auth.PublisherVerifier
	if hasPublisherKeys(g.cfg.Publishers) {
		if publishers, err = auth.NewPublisherVerifier(g.cfg.Publishers); err != nil {
			return &ConfigError{Field: "Publishers", Err: err}
		}
	}
	var tokens auth.TokenVerifier
	if g.cfg.OIDCIssuer != "" {
		v, err := auth.NewOIDCVerifier(ctx, g.oidcConfig())
		if err != nil {
			return &ConfigError{Field: "OIDCIssuer", Err: err}
		}
		tokens, g.closeOIDC, g.oidcAttempted = v, v.Close, v.Attempted()
	}
	if publishers != nil || tokens != nil {
		g.authn = auth.NewAuthenticator(publishers, tokens)
	}
	return nil
}

// oidcStartWait bounds how long start-up waits for the OpenID provider: it
// answers in milliseconds when it is up, and one that a firewall drops
// silently would otherwise hold the start for the verifier's whole first
// attempt (discovery, then JWKS, each up to its fetch timeout).
const oidcStartWait = 5 * time.Second

// awaitOIDC waits for the first attempt to load the OpenID provider's
// keys, so that the tokens of the first clients (a replica restarted in a
// rolling deploy gets them at once) are verified rather than refused as
// unverifiable for the few milliseconds the keys take to arrive. A
// provider that is down does not stop start-up: publishers and anonymous
// clients are served meanwhile, and the verifier keeps trying.
func (g *Gateway) awaitOIDC(ctx context.Context) error {
	if g.oidcAttempted == nil {
		return nil
	}
	timer := time.NewTimer(oidcStartWait)
	defer timer.Stop()
	select {
	case <-g.oidcAttempted:
	case <-timer.C:
		g.logger.Warn("the OpenID provider has not answered yet: serving meanwhile, its tokens refused until it does", "waited", oidcStartWait)
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func (g *Gateway) oidcConfig() auth.OIDCConfig {
	return auth.OIDCConfig{Issuer: g.cfg.OIDCIssuer, Audience: g.cfg.OIDCAudience, GrantsClaim: g.cfg.OIDCGrantsClaim, Refresh: g.cfg.OIDCRefresh,
		Logger: g.logger} // the verifier names itself in its lines
}

func hasPublisherKeys(c auth.PublisherConfig) bool {
	return len(c.APIKeys) > 0 || len(c.JWTKeys) > 0
}

// channelDefaults are a new channel's max_len and retention when its
// creator names none: its first matching rule's, zero for the hub's
// defaults.
func (g *Gateway) channelDefaults(channel string) (int64, time.Duration) {
	r, _ := g.policy.Rule(channel)
	return r.MaxLen, r.Retention
}

// validateCredentials checks that a listener that checks credentials has
// some to check: with neither publisher keys nor an OpenID provider,
// nobody could authenticate, and a required listener would refuse
// everyone.
func (c *Config) validateCredentials() error {
	if hasPublisherKeys(c.Publishers) {
		if _, err := auth.NewPublisherVerifier(c.Publishers); err != nil {
			return &ConfigError{Field: "Publishers", Err: err}
		}
	}
	return c.validateListenerCredentials()
}

// validateRules checks the channel rules' defaults against the limits a
// creator is held to.
func (c *Config) validateRules() error {
	for i, r := range c.Channels {
		switch {
		case r.MaxLen > c.ChannelMaxLenLimit:
			return conflict("Channels", "ChannelMaxLenLimit", "rule %d (%s): max_len %d exceeds the channel max_len limit (%d)", i+1, r.Pattern, r.MaxLen, c.ChannelMaxLenLimit)
		case r.Retention > c.ChannelRetentionLimit:
			return conflict("Channels", "ChannelRetentionLimit", "rule %d (%s): retention %s exceeds the channel retention limit (%s)", i+1, r.Pattern, r.Retention, c.ChannelRetentionLimit)
		}
	}
	return nil
}
