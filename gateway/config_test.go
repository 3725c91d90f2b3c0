package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"reflect"
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
	if c := g.wsConfig(&g.cfg.specs()[0]); c.CommandRate != 0 {
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

// TestValidateRequestSettings holds the request settings to their
// documented bounds, edges included.
func TestValidateRequestSettings(t *testing.T) {
	tests := []struct {
		name        string
		set         func(*Config)
		wantField   string // "" when valid
		wantRelated string
	}{
		{"defaults", func(*Config) {}, "", ""},
		{"timeout at the maximum", func(c *Config) { c.RequestTimeout = c.MaxRequestTimeout }, "", ""},
		{"timeout over the maximum", func(c *Config) { c.RequestTimeout = c.MaxRequestTimeout + time.Millisecond }, "RequestTimeout", "MaxRequestTimeout"},
		{"maximum under the default timeout", func(c *Config) { c.MaxRequestTimeout = time.Second }, "RequestTimeout", "MaxRequestTimeout"},
		{"session TTL at the maximum timeout", func(c *Config) { c.SessionTTL = c.MaxRequestTimeout }, "", ""},
		{"session TTL under the maximum timeout", func(c *Config) { c.SessionTTL = c.MaxRequestTimeout - time.Millisecond }, "SessionTTL", "MaxRequestTimeout"},
		{"maximum timeout over the session TTL", func(c *Config) { c.MaxRequestTimeout = 10 * time.Minute }, "SessionTTL", "MaxRequestTimeout"},
		{"timeout negative", func(c *Config) { c.RequestTimeout = -time.Second }, "RequestTimeout", ""},
		{"maximum timeout negative", func(c *Config) { c.MaxRequestTimeout = -time.Second }, "MaxRequestTimeout", ""},
		{"in-flight negative", func(c *Config) { c.MaxInflightRequests = -1 }, "MaxInflightRequests", ""},
		{"session TTL negative", func(c *Config) { c.SessionTTL = -time.Second }, "SessionTTL", ""},
		{"session replies negative", func(c *Config) { c.SessionReplies = -1 }, "SessionReplies", ""},
		{"serve in-flight negative", func(c *Config) { c.ServeInflight = -1 }, "ServeInflight", ""},
		{"reclaim negative", func(c *Config) { c.RequestReclaimAfter = -time.Second }, "RequestReclaimAfter", ""},
		{"queued negative", func(c *Config) { c.MaxQueuedRequests = -1 }, "MaxQueuedRequests", ""},
		{"one of each", func(c *Config) {
			c.MaxInflightRequests, c.SessionReplies, c.ServeInflight, c.MaxQueuedRequests = 1, 1, 1, 1
		}, "", ""},
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
			case tt.wantField != "" && (!errors.As(err, &ce) || ce.Field != tt.wantField || ce.Related != tt.wantRelated):
				t.Errorf("Validate: %#v, want a ConfigError for %s related to %q", err, tt.wantField, tt.wantRelated)
			}
		})
	}
}

// TestRequestSettingsReachTheirPackages holds every request setting to
// being passed on: a field Config has but hands to nobody would be
// accepted and silently ignored.
func TestRequestSettingsReachTheirPackages(t *testing.T) {
	g := &Gateway{cfg: Config{
		RequestTimeout:      2 * time.Second,
		MaxRequestTimeout:   20 * time.Second,
		MaxInflightRequests: 7,
		SessionTTL:          time.Minute,
		SessionReplies:      70,
		ServeInflight:       9,
		RequestReclaimAfter: 3 * time.Second,
		MaxQueuedRequests:   123,
	}.WithDefaults()}
	hub := g.hubConfig()
	got := []any{hub.RequestTimeout, hub.MaxRequestTimeout, hub.MaxInflight, hub.SessionTTL, hub.SessionReplies, hub.ServeInflight, hub.ReclaimAfter,
		g.memoryConfig().MaxRequests, g.redisConfig().MaxRequests}
	want := []any{2 * time.Second, 20 * time.Second, 7, time.Minute, int64(70), 9, 3 * time.Second, 123, 123}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("passed on %v, want %v", got, want)
	}
}

// TestMaxChannelsReachesBothBacklogs: TSLM_MAX_CHANNELS bounds the Redis
// backlog too, not only the in-memory one.
func TestMaxChannelsReachesBothBacklogs(t *testing.T) {
	g := &Gateway{cfg: Config{MaxChannels: 42}.WithDefaults()}
	if m, r := g.memoryConfig().MaxChannels, g.redisConfig().MaxChannels; m != 42 || r != 42 {
		t.Errorf("MaxChannels passed on as %d (memory) and %d (Redis), want 42", m, r)
	}
	d := &Gateway{cfg: Config{}.WithDefaults()}
	if m, r := d.memoryConfig().MaxChannels, d.redisConfig().WithDefaults().MaxChannels; m != 100_000 || r != 100_000 {
		t.Errorf("default MaxChannels %d (memory) and %d (Redis), want 100000", m, r)
	}
}

// TestRequestDefaults holds the request defaults to those of design: the
// packages apply them, WithDefaults reports them.
func TestRequestDefaults(t *testing.T) {
	c := Config{}.WithDefaults()
	got := []any{c.RequestTimeout, c.MaxRequestTimeout, c.MaxInflightRequests, c.SessionTTL, c.SessionReplies, c.ServeInflight, c.RequestReclaimAfter, c.MaxQueuedRequests}
	want := []any{5 * time.Second, time.Minute, 100, 5 * time.Minute, int64(1000), 100, 10 * time.Second, 10_000}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults %v, want %v", got, want)
	}
}
