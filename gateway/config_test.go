package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestZeroConfigStarts holds Config{} to meaning the documented defaults,
// for code that embeds the gateway: only the addresses are set, to stay
// off ports that may be taken.
func TestZeroConfigStarts(t *testing.T) {
	g, err := Start(t.Context(), Config{PublicAddrs: []string{"127.0.0.1:0"}, InternalAddrs: []string{"127.0.0.1:0"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	}()
	resp, err := http.Get("http://" + g.InternalAddrs()[0].String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz = %d %s", resp.StatusCode, body)
	}
	if g.cfg.PublicRate != defaultPublicRate || g.cfg.MaxFrameBytes == 0 || g.cfg.ReplayPage == 0 {
		t.Errorf("defaults not applied: %+v", g.cfg)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	cases := map[string]Config{
		"SendQueue":        {SendQueue: -1},
		"MaxDataBytes":     {MaxDataBytes: 1 << 20},
		"PublicAllow":      {PublicAllow: []string{"subscribe", "delete"}},
		"PublicAddrs":      {PublicAddrs: []string{" "}},
		"DefaultRetention": {DefaultRetention: 48 * time.Hour, ChannelRetentionLimit: time.Hour},
	}
	for field, cfg := range cases {
		t.Run(field, func(t *testing.T) {
			cfg = cfg.WithDefaults()
			err := cfg.Validate()
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != field {
				t.Errorf("Validate() = %v, want a ConfigError for %s", err, field)
			}
		})
	}
}

func TestNegativeRateMeansUnlimited(t *testing.T) {
	g := &Gateway{cfg: Config{PublicRate: Unlimited}.WithDefaults()}
	if c := g.wsConfig("public", 0, g.cfg.PublicRate, g.cfg.PublicBurst); c.CommandRate != 0 {
		t.Errorf("ws rate = %v, want 0 (unlimited)", c.CommandRate)
	}
}

// TestValidatePublishSettings holds the settings of idempotent publishing
// and the Redis key prefix to their documented bounds, edges included.
func TestValidatePublishSettings(t *testing.T) {
	tests := []struct {
		name      string
		set       func(*Config)
		wantField string // "" when valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"window at its bound", func(c *Config) { c.IdempotencyWindow = MaxIdempotencyWindow }, ""},
		{"window over its bound", func(c *Config) { c.IdempotencyWindow = MaxIdempotencyWindow + time.Millisecond }, "IdempotencyWindow"},
		{"window negative", func(c *Config) { c.IdempotencyWindow = -time.Second }, "IdempotencyWindow"},
		{"one key", func(c *Config) { c.MaxIdempotencyKeys = 1 }, ""},
		{"keys negative", func(c *Config) { c.MaxIdempotencyKeys = -1 }, "MaxIdempotencyKeys"},
		{"prefix", func(c *Config) { c.RedisPrefix = "app1:" }, ""},
		{"prefix 64 bytes", func(c *Config) { c.RedisPrefix = strings.Repeat("p", 64) }, ""},
		{"prefix 65 bytes", func(c *Config) { c.RedisPrefix = strings.Repeat("p", 65) }, "RedisPrefix"},
		{"prefix with a brace", func(c *Config) { c.RedisPrefix = "app{1}:" }, "RedisPrefix"},
		{"prefix with a space", func(c *Config) { c.RedisPrefix = "my app:" }, "RedisPrefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{}.WithDefaults()
			tt.set(&cfg)
			err := cfg.Validate()
			var ce *ConfigError
			switch {
			case tt.wantField == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tt.wantField != "" && (!errors.As(err, &ce) || ce.Field != tt.wantField):
				t.Errorf("Validate: %v, want a ConfigError for %s", err, tt.wantField)
			}
		})
	}
}
