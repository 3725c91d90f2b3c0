package config

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/tslm/tslm/auth"
)

// authTable is [auth] and the tables under it.
type authTable struct {
	Timeout         *string              `toml:"timeout"`
	TrustedProxies  []string             `toml:"trusted_proxies"`
	OIDC            oidcTable            `toml:"oidc"`
	APIKey          []apiKeyTable        `toml:"api_key"`
	TokenKey        []tokenKeyTable      `toml:"token_key"`
	PublisherTokens publisherTokensTable `toml:"publisher_tokens"`
}

type oidcTable struct {
	Issuer      string  `toml:"issuer"`
	Audience    string  `toml:"audience"`
	GrantsClaim *string `toml:"grants_claim"`
	Refresh     *string `toml:"refresh"`
}

type apiKeyTable struct {
	Name    string      `toml:"name"`
	SHA256  string      `toml:"sha256"`
	Expires *time.Time  `toml:"expires"`
	Grants  grantsTable `toml:"grants"`
}

// grantsTable lists channel patterns by operation, as publisher tokens'
// tslm claim does.
type grantsTable struct {
	Subscribe []string `toml:"subscribe"`
	Publish   []string `toml:"publish"`
	Create    []string `toml:"create"`
	Request   []string `toml:"request"`
	Serve     []string `toml:"serve"`
}

type tokenKeyTable struct {
	KID      string `toml:"kid"`
	Ed25519  string `toml:"ed25519"`
	HMACFile string `toml:"hmac_file"`
	HMAC     string `toml:"hmac"`
}

type publisherTokensTable struct {
	Issuer   string  `toml:"issuer"`
	Audience string  `toml:"audience"`
	Leeway   *string `toml:"leeway"`
}

func (l *loader) auth(a authTable) {
	if d, ok := l.duration("auth.timeout", a.Timeout); ok {
		l.cfg.AuthTimeout = d
		l.set("AuthTimeout", "auth.timeout")
	}
	for i, p := range a.TrustedProxies {
		p = strings.TrimSpace(p)
		_, errAddr := netip.ParseAddr(p)
		_, errPrefix := netip.ParsePrefix(p)
		if errAddr != nil && errPrefix != nil {
			l.fail(fmt.Sprintf("auth.trusted_proxies[%d]", i), "%q is neither an IP address nor a CIDR prefix (such as \"10.0.0.0/8\")", p)
			continue
		}
		l.cfg.TrustedProxies = append(l.cfg.TrustedProxies, p)
		l.set("TrustedProxies", "auth.trusted_proxies")
	}
	l.oidc(a.OIDC)
	for i, k := range a.APIKey {
		l.apiKey(fmt.Sprintf("auth.api_key[%d]", i), k)
	}
	for i, k := range a.TokenKey {
		l.tokenKey(fmt.Sprintf("auth.token_key[%d]", i), k)
	}
	l.publisherTokens(a.PublisherTokens)
}

func (l *loader) oidc(o oidcTable) {
	if o.Issuer != "" {
		u, err := url.Parse(o.Issuer)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			l.fail("auth.oidc.issuer", "%q is not an issuer URL: write the provider's, such as \"https://sso.example.com/realms/main\"", o.Issuer)
		} else {
			l.cfg.OIDCIssuer = o.Issuer
			l.set("OIDCIssuer", "auth.oidc.issuer")
		}
	} else if l.present("auth.oidc") {
		l.fail("auth.oidc", "has no issuer: without one no access token can be verified; set issuer or remove the table")
	}
	if o.Audience != "" {
		l.cfg.OIDCAudience = o.Audience
		l.set("OIDCAudience", "auth.oidc.audience")
	}
	if o.GrantsClaim != nil {
		if strings.TrimSpace(*o.GrantsClaim) == "" {
			l.fail("auth.oidc.grants_claim", "is empty: name the claim holding the grants, or leave the key out for \"tslm\"")
		} else {
			l.cfg.OIDCGrantsClaim = *o.GrantsClaim
			l.set("OIDCGrantsClaim", "auth.oidc.grants_claim")
		}
	}
	if d, ok := l.duration("auth.oidc.refresh", o.Refresh); ok {
		l.cfg.OIDCRefresh = d
		l.set("OIDCRefresh", "auth.oidc.refresh")
	}
}

func (l *loader) apiKey(key string, k apiKeyTable) {
	ok := true
	if strings.TrimSpace(k.Name) == "" {
		l.fail(key, "has no name: name the key's holder, which logs show instead of the key")
		ok = false
	}
	sum, err := auth.ParseSHA256Hex(k.SHA256)
	switch {
	case !l.ix.has(key + ".sha256"):
		l.fail(key, "has no sha256: give the key's SHA-256 hash (printf %%s \"$KEY\" | sha256sum), never the key itself")
		ok = false
	case err != nil:
		l.fail(key+".sha256", "%v, as sha256sum prints it (the hash of the key, never the key itself)", err)
		ok = false
	}
	for j, other := range l.cfg.Publishers.APIKeys {
		if other.SHA256 == sum && err == nil {
			l.fail(key+".sha256", "the same hash as auth.api_key[%d]: one key would stand for two principals", j)
			ok = false
		}
	}
	p := auth.Principal{Subject: k.Name, Issuer: auth.IssuerAPIKey}
	if k.Expires != nil {
		ekey := key + ".expires"
		if pl, _ := l.ix.find(ekey); pl.kind != unstable.DateTime {
			l.fail(ekey, "give a date-time with its offset, such as 2027-01-01T00:00:00Z: a local date or time means a different instant on each host")
			ok = false
		}
		p.Expires = *k.Expires
		if ok && !p.Expires.After(time.Now()) {
			l.warnf(ekey, "the API key %q expired at %s: it is refused", k.Name, p.Expires.UTC().Format(time.RFC3339))
		}
	}
	g, gok := l.grants(key+".grants", k.Grants)
	p.Grants = g
	if ok && gok {
		l.cfg.Publishers.APIKeys = append(l.cfg.Publishers.APIKeys, auth.APIKey{SHA256: sum, Principal: p})
		l.set("Publishers", key)
	}
}

// grants reads a grants table, one auth.Grant per operation given.
func (l *loader) grants(key string, g grantsTable) ([]auth.Grant, bool) {
	var out []auth.Grant
	ok := true
	for _, e := range []struct {
		name string
		op   auth.Op
		list []string
	}{
		{"subscribe", auth.OpSubscribe, g.Subscribe},
		{"publish", auth.OpPublish, g.Publish},
		{"create", auth.OpCreate, g.Create},
		{"request", auth.OpRequest, g.Request},
		{"serve", auth.OpServe, g.Serve},
	} {
		pats, pok := l.patterns(key+"."+e.name, e.list)
		ok = ok && pok
		if len(pats) > 0 {
			out = append(out, auth.Grant{Ops: auth.Ops(e.op), Patterns: pats})
		}
	}
	return out, ok
}

func (l *loader) tokenKey(key string, k tokenKeyTable) {
	if strings.TrimSpace(k.KID) == "" {
		l.fail(key, "has no kid: name the key as tokens' kid header does")
		return
	}
	for j, other := range l.cfg.Publishers.JWTKeys {
		if other.ID == k.KID {
			l.fail(key+".kid", "%q is also auth.token_key[%d]'s: a token names its key by kid, so each must be unique", k.KID, j)
			return
		}
	}
	given := 0
	for _, name := range []string{"ed25519", "hmac_file", "hmac"} {
		if l.ix.has(key + "." + name) {
			given++
		}
	}
	if given != 1 {
		l.fail(key, "set exactly one of ed25519 (a public key, for EdDSA tokens) and hmac_file (a secret, for HS256 tokens)")
		return
	}
	jk := auth.JWTKey{ID: k.KID}
	switch {
	case l.ix.has(key + ".ed25519"):
		pub, err := parseEd25519(k.Ed25519)
		if err != nil {
			l.fail(key+".ed25519", "%v", err)
			return
		}
		jk.Ed25519 = pub
	case l.ix.has(key + ".hmac_file"):
		secret, err := readSecret(l.filePath(k.HMACFile))
		if err != nil {
			l.fail(key+".hmac_file", "cannot read the secret: %v", err)
			return
		}
		// Secret files are usually written by echo or an editor, which end
		// them with a newline that is not part of the secret.
		secret = bytes.TrimSuffix(secret, []byte("\n"))
		secret = bytes.TrimSuffix(secret, []byte("\r"))
		if !l.secretLength(key+".hmac_file", secret) {
			return
		}
		jk.HMAC = secret
	default:
		l.warnf(key+".hmac", "the HMAC secret is written in the config file, where whoever reads the file can sign tokens with it: prefer hmac_file, a file only the gateway may read")
		if !l.secretLength(key+".hmac", []byte(k.HMAC)) {
			return
		}
		jk.HMAC = []byte(k.HMAC)
	}
	l.cfg.Publishers.JWTKeys = append(l.cfg.Publishers.JWTKeys, jk)
	l.set("Publishers", key)
}

// maxSecretLen bounds a secret file: a secret is bytes, not a file, and
// a path such as /dev/zero must not hang the start.
const maxSecretLen = 64 << 10

func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretLen+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSecretLen {
		return nil, fmt.Errorf("%s holds more than %d bytes: is it the secret?", path, maxSecretLen)
	}
	return b, nil
}

// minHMACLen is auth's floor for HS256 secrets (RFC 7518, section 3.2),
// checked here to name the line.
const minHMACLen = 32

func (l *loader) secretLength(key string, secret []byte) bool {
	if len(secret) < minHMACLen {
		l.fail(key, "the HMAC secret has %d bytes: HS256 needs at least %d (openssl rand -base64 48)", len(secret), minHMACLen)
		return false
	}
	return true
}

// parseEd25519 reads an Ed25519 public key: the 32 bytes in base64, or a
// PEM "PUBLIC KEY" block as openssl pkey -pubout writes it.
func parseEd25519(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-----BEGIN") {
		block, _ := pem.Decode([]byte(s))
		if block == nil || block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("not a PEM \"PUBLIC KEY\" block")
		}
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("the PEM public key does not parse: %v", err)
		}
		pub, ok := key.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("the PEM public key is a %T, not an Ed25519 key", key)
		}
		return pub, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("an Ed25519 public key is %d bytes, not %d", ed25519.PublicKeySize, len(b))
			}
			return ed25519.PublicKey(b), nil
		}
	}
	return nil, fmt.Errorf("want the public key in base64 (32 bytes) or as a PEM \"PUBLIC KEY\" block")
}

func (l *loader) publisherTokens(p publisherTokensTable) {
	l.cfg.Publishers.Issuer = p.Issuer
	l.cfg.Publishers.Audience = p.Audience
	if d, ok := l.duration("auth.publisher_tokens.leeway", p.Leeway); ok {
		if d > auth.MaxLeeway {
			l.fail("auth.publisher_tokens.leeway", "%s is over %s: clocks drift by seconds, and a long leeway keeps expired tokens alive", d, auth.MaxLeeway)
		}
		l.cfg.Publishers.Leeway = d
	}
	if l.present("auth.publisher_tokens") && len(l.cfg.Publishers.JWTKeys) == 0 {
		l.warnf("auth.publisher_tokens", "no [[auth.token_key]] is configured: no publisher token can be verified")
	}
}
