package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/tslm/tslm/auth"
)

const exampleFile = "../deploy/tslm.example.toml"

// TestExampleFileLoads holds deploy/tslm.example.toml to loading, without
// a warning, and to setting what its comments say.
func TestExampleFileLoads(t *testing.T) {
	f, err := Load(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Warnings) != 0 {
		t.Errorf("the example warns: %q", f.Warnings)
	}
	c := f.Config
	if c.PublicAuth != "optional" || c.OIDCIssuer == "" || len(c.Publishers.APIKeys) != 1 || len(c.Publishers.JWTKeys) != 2 || len(c.Channels) != 2 ||
		c.PublicLimits.SendQueue != 1024 || c.PublicLimits.MaxConnections != 10000 || c.PublicOff || len(c.PublicAuthTokens) != 0 {
		t.Errorf("the example set %+v", c)
	}
	if _, err := auth.NewPublisherVerifier(c.Publishers); err != nil {
		t.Errorf("the example's publisher keys: %v", err)
	}
}

// commentedSetting is a commented-out line of the example that would set
// something: "# key = value", "# [table]" or "# [[table]]".
var commentedSetting = regexp.MustCompile(`^#\s?((?:\[\[?[a-z_.]+\]\]?)|(?:[a-z_0-9]+ = .+))$`)

// TestExampleFileCommentedSettingsLoad uncomments every commented-out
// setting of the example and loads the result, so that the alternatives the
// example shows are as valid as the rest.
func TestExampleFileCommentedSettingsLoad(t *testing.T) {
	doc, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(doc), "\n")
	uncommented := 0
	for i, line := range lines {
		m := commentedSetting.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		// Prose that merely looks like a setting does not parse.
		var probe map[string]any
		if !strings.HasPrefix(m[1], "[") && toml.Unmarshal([]byte(m[1]), &probe) != nil {
			continue
		}
		lines[i] = m[1]
		uncommented++
	}
	if uncommented < 5 {
		t.Fatalf("uncommented %d settings; the example comments out TLS and an HMAC key", uncommented)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "tslm.toml")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets", "legacy-hs.key"), []byte(strings.Repeat("k", 48)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatalf("the example with its commented settings:\n%v", err)
	}
	c := f.Config
	if c.PublicTLSCert == "" || c.InternalTLSKey == "" || len(c.Publishers.JWTKeys) != 3 ||
		len(c.PublicAuthTokens) != 1 || len(c.InternalAuthTokens) != 1 || len(c.Listeners) != 1 || c.Listeners[0].Name != "partners" ||
		c.Listeners[0].Limits.MaxConnections != 500 || len(c.Listeners[0].AuthTokens) != 1 ||
		c.RedisURL != "redis://redis:6379/0" || c.RedisPrefix != "tslm:" || c.PollInterval != 2*time.Second {
		t.Errorf("uncommented settings missing: %+v", c)
	}
	if len(f.Warnings) != 0 {
		t.Errorf("the example with its commented settings warns: %q", f.Warnings)
	}
	resolved := c.WithDefaults()
	if err := resolved.Validate(); err != nil {
		t.Errorf("the example with its commented settings is invalid: %v", err)
	}
}
