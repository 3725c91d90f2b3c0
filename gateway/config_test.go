package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
)

func defaults(t *testing.T) Config {
	t.Helper()
	cfg, err := env.ParseAsWithOptions[Config](env.Options{Prefix: Prefix, Environment: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestValidatePublishSettings holds the settings of idempotent publishing
// and the Redis key prefix to their documented bounds, edges included.
func TestValidatePublishSettings(t *testing.T) {
	tests := []struct {
		name    string
		set     func(*Config)
		wantErr string // "" when valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"window at its bound", func(c *Config) { c.IdempotencyWindow = MaxIdempotencyWindow }, ""},
		{"window over its bound", func(c *Config) { c.IdempotencyWindow = MaxIdempotencyWindow + time.Millisecond }, "TSLM_IDEMPOTENCY_WINDOW"},
		{"window zero", func(c *Config) { c.IdempotencyWindow = 0 }, "TSLM_IDEMPOTENCY_WINDOW"},
		{"one key", func(c *Config) { c.MaxIdempotencyKeys = 1 }, ""},
		{"no keys", func(c *Config) { c.MaxIdempotencyKeys = 0 }, "TSLM_MAX_IDEMPOTENCY_KEYS"},
		{"prefix", func(c *Config) { c.RedisPrefix = "app1:" }, ""},
		{"prefix 64 bytes", func(c *Config) { c.RedisPrefix = strings.Repeat("p", 64) }, ""},
		{"prefix 65 bytes", func(c *Config) { c.RedisPrefix = strings.Repeat("p", 65) }, "TSLM_REDIS_PREFIX"},
		{"prefix empty", func(c *Config) { c.RedisPrefix = "" }, "TSLM_REDIS_PREFIX"},
		{"prefix with a brace", func(c *Config) { c.RedisPrefix = "app{1}:" }, "TSLM_REDIS_PREFIX"},
		{"prefix with a space", func(c *Config) { c.RedisPrefix = "my app:" }, "TSLM_REDIS_PREFIX"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaults(t)
			tt.set(&cfg)
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate: %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}
