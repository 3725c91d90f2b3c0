package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/config"
	"github.com/tslm/tslm/internal/envconfig"
)

// TestEnvironmentOverridesFile reads a file and the variables the way
// cmd/tslm does: a variable that is set wins, the file's other values
// stand, and settings in neither keep their defaults.
func TestEnvironmentOverridesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tslm.toml")
	doc := `[listener.public]
ip = "0.0.0.0"
port = 8080
max_connections = 1000
rate_limit_per_second = 10
auth = "optional"
auth_tokens = ["file-token-0123456789"]

[listener.feed]
port = 9090
max_connections = 20
auth_tokens = ["feed-token-0123456789"]

[auth]
timeout = "3s"

[auth.oidc]
issuer = "https://sso.example"

[[channel]]
pattern = "prices.*"
anonymous = ["subscribe"]

[redis]
url = "redis://file-redis:6379/0"
prefix = "file:"
poll_interval = "5s"
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	environ := map[string]string{
		envconfig.ConfigVar:       path,
		"TSLM_PUBLIC_ADDRS":       "127.0.0.1:9999",
		"TSLM_MAX_CONNECTIONS":    "5",
		"TSLM_PUBLIC_AUTH":        "required",
		"TSLM_PUBLIC_AUTH_TOKENS": "env-token-0123456789,env-token-abcdefghij",
		"TSLM_REDIS_URL":          "redis://env-redis:6379/0",
		"TSLM_POLL_INTERVAL":      "1s",
	}
	f, err := config.Load(environ[envconfig.ConfigVar])
	if err != nil {
		t.Fatal(err)
	}
	st, err := envconfig.LoadOver(f.Config, environ)
	if err != nil {
		t.Fatal(err)
	}
	c := st.Gateway.WithDefaults()
	got := []any{c.PublicAddrs, c.MaxConnections, c.PublicAuth, c.PublicRate, c.AuthTimeout, len(c.Channels), c.InternalAddrs, c.MaxFrameBytes,
		c.RedisURL, c.RedisPrefix, c.PollInterval}
	want := []any{[]string{"127.0.0.1:9999"}, 5, "required", 10.0, 3 * time.Second, 1, []string{"127.0.0.1:8081"}, int64(131072),
		"redis://env-redis:6379/0", "file:", time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merged %v, want %v", got, want)
	}
	// The variables win over each listener's own values too.
	if c.PublicLimits.MaxConnections != 0 || c.Listeners[0].Limits.MaxConnections != 0 {
		t.Errorf("per-listener max_connections %d and %d survived TSLM_MAX_CONNECTIONS", c.PublicLimits.MaxConnections, c.Listeners[0].Limits.MaxConnections)
	}
	if !reflect.DeepEqual(c.PublicAuthTokens, []auth.Secret{"env-token-0123456789", "env-token-abcdefghij"}) ||
		!reflect.DeepEqual(c.Listeners[0].AuthTokens, []auth.Secret{"feed-token-0123456789"}) {
		t.Error("TSLM_PUBLIC_AUTH_TOKENS should replace the public listener's tokens, and only those")
	}
	if st.ConfigFile != path {
		t.Errorf("ConfigFile %q, want %q", st.ConfigFile, path)
	}
}

// TestFileLeavesCredentialsToEnvironment: a file that turns checking on
// while the issuer comes from a variable, as deployments keep the file
// alike and the provider per environment, loads; without the variable the
// merged settings are refused, naming the file's value.
func TestFileLeavesCredentialsToEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tslm.toml")
	doc := "[listener.public]\nauth = \"optional\"\n\n[[channel]]\npattern = \"prices.*\"\nanonymous = [\"subscribe\"]\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := config.Load(path)
	if err != nil {
		t.Fatalf("the file alone: %v", err)
	}
	st, err := envconfig.LoadOver(f.Config, map[string]string{envconfig.ConfigVar: path, "TSLM_OIDC_ISSUER": "https://sso.example"})
	if err != nil {
		t.Fatalf("with TSLM_OIDC_ISSUER: %v", err)
	}
	if c := st.Gateway; c.PublicAuth != "optional" || c.OIDCIssuer != "https://sso.example" || len(c.Channels) != 1 {
		t.Errorf("merged %+v", c)
	}
	_, err = envconfig.LoadOver(f.Config, map[string]string{envconfig.ConfigVar: path})
	if err == nil || !strings.Contains(err.Error(), "TSLM_PUBLIC_AUTH") || !strings.Contains(err.Error(), "file's") {
		t.Fatalf("without an issuer: %v, want TSLM_PUBLIC_AUTH refused as the file's value", err)
	}
}
