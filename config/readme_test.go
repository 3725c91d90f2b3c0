package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tslm/tslm/auth"
)

// readmeTOML returns the ```toml blocks of README.md's section, their
// indentation (they sit in list items) taken off.
func readmeTOML(t *testing.T, section string) []string {
	t.Helper()
	doc, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, text, ok := strings.Cut(string(doc), "\n## "+section+"\n")
	if !ok {
		t.Fatalf("README.md has no section %q", section)
	}
	text, _, _ = strings.Cut(text, "\n## ")
	var blocks []string
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		fence := strings.TrimLeft(lines[i], " ")
		if fence != "```toml" {
			continue
		}
		indent := len(lines[i]) - len(fence)
		var b strings.Builder
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			line := lines[i]
			if strings.TrimSpace(line) != "" && !strings.HasPrefix(line, strings.Repeat(" ", indent)) {
				t.Fatalf("README.md, %s: line %q is less indented than its block's fence", section, line)
			}
			b.WriteString(strings.TrimPrefix(line, strings.Repeat(" ", indent)) + "\n")
		}
		blocks = append(blocks, b.String())
	}
	return blocks
}

var (
	hashPlaceholder = regexp.MustCompile(`(?m)^(sha256\s*=\s*)"<[^">]*>"`)
	pemPlaceholder  = regexp.MustCompile(`(?m)^(-----BEGIN PUBLIC KEY-----\n)\.\.\.\n(-----END PUBLIC KEY-----)$`)
)

// TestReadmeSecurityModelSnippets loads the TOML the README's "Security
// model" tells operators to write, its placeholders filled as the README's
// commands would fill them, and checks that the credentials it describes
// then work: the API key as the publisher's secret, and a token signed as
// the README says.
func TestReadmeSecurityModelSnippets(t *testing.T) {
	blocks := readmeTOML(t, "Security model")
	if len(blocks) < 2 {
		t.Fatalf("%d toml blocks in the Security model section, want the API key's and the token key's", len(blocks))
	}
	doc := strings.Join(blocks, "\n")

	// KEY=$(openssl rand -base64 32); printf %s "$KEY" | sha256sum
	raw := make([]byte, 32)
	rand.Read(raw)
	key := base64.StdEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(key))
	// openssl genpkey -algorithm ed25519; openssl pkey -pubout
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	for name, re := range map[string]*regexp.Regexp{"the hash": hashPlaceholder, "the PEM": pemPlaceholder} {
		if !re.MatchString(doc) {
			t.Fatalf("no placeholder for %s (%s) in the README's TOML:\n%s", name, re, doc)
		}
	}
	doc = hashPlaceholder.ReplaceAllString(doc, `${1}"`+hex.EncodeToString(sum[:])+`"`)
	doc = pemPlaceholder.ReplaceAllString(doc, "${1}"+base64.StdEncoding.EncodeToString(spki)+"\n${2}")
	path := filepath.Join(t.TempDir(), "tslm.toml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatalf("the README's TOML, filled in, does not load: %v\n%s", err, doc)
	}
	if len(f.Warnings) != 0 {
		t.Errorf("the README's TOML warns: %q", f.Warnings)
	}
	v, err := auth.NewPublisherVerifier(f.Config.Publishers)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()

	p, err := v.Verify(key, now)
	if err != nil {
		t.Fatalf("the API key: %v", err)
	}
	for _, c := range []struct {
		op      auth.Op
		channel string
		want    bool
	}{
		{auth.OpCreate, "billing.eu", true}, {auth.OpPublish, "billing.eu", true}, {auth.OpServe, "billing.rpc", true},
		{auth.OpServe, "billing.eu", false}, {auth.OpPublish, "prices.eu", false}, {auth.OpSubscribe, "billing.eu", false},
	} {
		if got := p.Allows(c.op, c.channel, now); got != c.want {
			t.Errorf("API key %q: %s on %s allowed %v, want %v", p.Subject, c.op, c.channel, got, c.want)
		}
	}
	if p.Subject != "billing" {
		t.Errorf("API key's subject %q, want billing", p.Subject)
	}

	// "The publisher signs tokens with alg: EdDSA, kid: billing-2026, an
	// exp, and its grants as "tslm": {"publish": ["billing.*"]}."
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"sub": "billing-job", "exp": now.Add(time.Minute).Unix(), "tslm": map[string]any{"publish": []string{"billing.*"}},
	})
	tok.Header["kid"] = "billing-2026"
	signed, err := tok.SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	p, err = v.Verify(signed, now)
	if err != nil {
		t.Fatalf("a token signed as the README says: %v", err)
	}
	if !p.Allows(auth.OpPublish, "billing.eu", now) || p.Allows(auth.OpCreate, "billing.eu", now) {
		t.Errorf("the token's principal %+v, want publish on billing.* only", p)
	}
}

// TestReadmeMigratingSnippet holds the README's "Migrating from the
// original TSLM" to showing the original's example file verbatim, which
// TestOriginalExampleLoads loads.
func TestReadmeMigratingSnippet(t *testing.T) {
	blocks := readmeTOML(t, "Migrating from the original TSLM")
	if len(blocks) != 1 || blocks[0] != issue20Example {
		t.Fatalf("the README's TOML:\n%q\nwant the original's example:\n%q", blocks, issue20Example)
	}
	if _, err := Load(write(t, blocks[0])); err != nil {
		t.Fatal(err)
	}
}
