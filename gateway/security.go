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
	oidc, closeOIDC, err := newOIDC(ctx, g.oidcConfig())
	if err != nil {
		return &ConfigError{Field: "OIDCIssuer", Err: err}
	}
	g.closeOIDC = closeOIDC
	if publishers != nil || oidc != nil {
		g.authn = auth.NewAuthenticator(publishers, oidc)
	}
	return nil
}

func (g *Gateway) oidcConfig() auth.OIDCConfig {
	return auth.OIDCConfig{Issuer: g.cfg.OIDCIssuer, Audience: g.cfg.OIDCAudience, GrantsClaim: g.cfg.OIDCGrantsClaim, Refresh: g.cfg.OIDCRefresh,
		Logger: g.logger.With("component", "oidc")}
}

// newOIDC starts the verifier of the OpenID provider's access tokens, or
// returns nil (and a no-op close) when no provider is configured. A
// provider that cannot be reached yet does not stop start-up: publishers
// and anonymous subscribers are served meanwhile, and the verifier keeps
// trying.
func newOIDC(ctx context.Context, cfg auth.OIDCConfig) (auth.TokenVerifier, func(), error) {
	if cfg.Issuer == "" {
		return nil, func() {}, nil
	}
	v, err := auth.NewOIDCVerifier(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return v, v.Close, nil
}

func hasPublisherKeys(c auth.PublisherConfig) bool {
	return len(c.APIKeys) > 0 || len(c.JWTKeys) > 0
}

// mode is a listener's auth mode; Validate has checked its name.
func (g *Gateway) mode(listener string) auth.Mode {
	name := g.cfg.InternalAuth
	if listener == "public" {
		name = g.cfg.PublicAuth
	}
	m, _ := auth.ParseMode(name)
	return m
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
	if hasPublisherKeys(c.Publishers) || c.OIDCIssuer != "" {
		return nil
	}
	for _, l := range []struct{ field, mode string }{{"PublicAuth", c.PublicAuth}, {"InternalAuth", c.InternalAuth}} {
		if m, _ := auth.ParseMode(l.mode); m != auth.ModeOff {
			return conflict(l.field, "OIDCIssuer", "is %q, but no credentials are configured (no API keys, no token keys, no OpenID provider): nobody could authenticate", l.mode)
		}
	}
	return nil
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
