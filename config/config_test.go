package config

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/gateway"
)

// write puts doc in a file of a fresh directory and returns its path.
func write(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tslm.toml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func load(t *testing.T, doc string) File {
	t.Helper()
	f, err := Load(write(t, doc))
	if err != nil {
		t.Fatalf("loading:\n%s\nerror: %v", doc, err)
	}
	return f
}

// fileErrors lists the *Error in err, which may join several.
func fileErrors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		var e *Error
		if multi, ok := err.(interface{ Unwrap() []error }); ok {
			for _, m := range multi.Unwrap() {
				walk(m)
			}
		} else if errors.As(err, &e) {
			out = append(out, e)
		}
	}
	walk(err)
	return out
}

func TestLoadFullFile(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	secret := strings.Repeat("s", 40)
	billing := sha256.Sum256([]byte("billing-key"))
	reports := sha256.Sum256([]byte("reports-key"))

	path := write(t, `
[listener.public]
ip = "0.0.0.0"
port = 9080
default_endpoint_permissions = ["Subscribe", "request"]
max_message_size = 1000
max_frame_size = 5000
max_connections = 300
rate_limit_per_second = 12.5
auth = "required"
tls_cert = "tls/pub.crt"
tls_key = "/etc/tslm/pub.key"
max_connections_per_ip = 7
auth_tokens = ["public-token-0123456789", "public-token-abcdefghij"]
channel_buffer_size = 64

[listener.private]
ip = "::1"
port = 9081
default_endpoint_permissions = ["subscribe", "publish", "create", "request", "serve"]
max_connections = 200
rate_limit_per_second = 0
auth = "optional"
auth_tokens = ["internal-token-0123456"]

[listener.feed]
ip = "10.0.0.5"
port = 9090
default_endpoint_permissions = ["Subscribe", "CreateChannel"]
auth_tokens = ["feed-token-0123456789"]
max_message_size = 2000
max_frame_size = 4000
max_connections = 50
rate_limit_per_second = 5
channel_buffer_size = 16
auth = "optional"
tls_cert = "feed.crt"
tls_key = "feed.key"
max_connections_per_ip = 3

[listener.bare]
port = 9091

[auth]
timeout = "3s"
trusted_proxies = ["10.0.0.0/8", "192.0.2.1"]

[auth.oidc]
issuer = "https://sso.example.com/realms/x"
audience = "tslm-aud"
grants_claim = "realm_access.tslm"
refresh = "5m"

[[auth.api_key]]
name = "billing"
sha256 = "`+hex.EncodeToString(billing[:])+`"
expires = 2030-01-02T03:04:05+01:00
grants = { publish = ["billing.*"], create = ["billing.*", "audit"], serve = ["billing.rpc"] }

[[auth.api_key]]
name = "reports"
sha256 = "`+strings.ToUpper(hex.EncodeToString(reports[:]))+`"
[auth.api_key.grants]
subscribe = ["reports.*"]
request = ["reports.rpc"]

[[auth.token_key]]
kid = "ed-b64"
ed25519 = "`+base64.StdEncoding.EncodeToString(pub)+`"

[[auth.token_key]]
kid = "ed-pem"
ed25519 = """
`+pemKey+`"""

[[auth.token_key]]
kid = "hs"
hmac_file = "secret.key"

[auth.publisher_tokens]
issuer = "https://ci.example.com"
audience = "tslm"
leeway = "45s"

[[channel]]
pattern = "prices.*"
max_len = 100
retention = "90m"
anonymous = ["subscribe", "Subscribe"]
public = ["subscribe", "request"]

[[channel]]
pattern = "private.*"
public = []

[[channel]]
pattern = "*"
anonymous = ["subscribe"]

[redis]
url = "redis://redis.internal:6380/2?pool_size=50"
prefix = "edge:"
poll_interval = "750ms"
`)
	dir := filepath.Dir(path)
	if err := os.WriteFile(filepath.Join(dir, "secret.key"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := gateway.Config{
		PublicAddrs:        []string{"0.0.0.0:9080"},
		InternalAddrs:      []string{"[::1]:9081"},
		PublicAllow:        []string{"subscribe", "request"},
		PublicLimits:       gateway.ListenerLimits{MaxDataBytes: 1000, MaxFrameBytes: 5000, MaxConnections: 300, SendQueue: 64},
		InternalLimits:     gateway.ListenerLimits{MaxConnections: 200},
		PublicAuthTokens:   []auth.Secret{"public-token-0123456789", "public-token-abcdefghij"},
		InternalAuthTokens: []auth.Secret{"internal-token-0123456"},
		Listeners: []gateway.Listener{
			{Name: "bare", Addrs: []string{":9091"}},
			{Name: "feed", Addrs: []string{"10.0.0.5:9090"}, Allow: []string{"subscribe", "create"}, AuthTokens: []auth.Secret{"feed-token-0123456789"},
				Limits: gateway.ListenerLimits{MaxDataBytes: 2000, MaxFrameBytes: 4000, MaxConnections: 50, SendQueue: 16},
				Rate:   5, Auth: "optional", TLSCert: filepath.Join(dir, "feed.crt"), TLSKey: filepath.Join(dir, "feed.key"), MaxConnectionsPerIP: 3},
		},
		PublicRate:          12.5,
		InternalRate:        gateway.Unlimited,
		PublicAuth:          "required",
		InternalAuth:        "optional",
		PublicTLSCert:       filepath.Join(dir, "tls/pub.crt"),
		PublicTLSKey:        "/etc/tslm/pub.key",
		MaxConnectionsPerIP: 7,
		AuthTimeout:         3 * time.Second,
		TrustedProxies:      []string{"10.0.0.0/8", "192.0.2.1"},
		OIDCIssuer:          "https://sso.example.com/realms/x",
		OIDCAudience:        "tslm-aud",
		OIDCGrantsClaim:     "realm_access.tslm",
		OIDCRefresh:         5 * time.Minute,
		Publishers: auth.PublisherConfig{
			APIKeys: []auth.APIKey{
				{SHA256: billing, Principal: auth.Principal{
					Subject: "billing", Issuer: auth.IssuerAPIKey,
					Expires: time.Date(2030, 1, 2, 2, 4, 5, 0, time.UTC),
					Grants: []auth.Grant{
						{Ops: auth.Ops(auth.OpPublish), Patterns: []auth.Pattern{auth.MustParsePattern("billing.*")}},
						{Ops: auth.Ops(auth.OpCreate), Patterns: []auth.Pattern{auth.MustParsePattern("billing.*"), auth.MustParsePattern("audit")}},
						{Ops: auth.Ops(auth.OpServe), Patterns: []auth.Pattern{auth.MustParsePattern("billing.rpc")}},
					},
				}},
				{SHA256: reports, Principal: auth.Principal{
					Subject: "reports", Issuer: auth.IssuerAPIKey,
					Grants: []auth.Grant{
						{Ops: auth.Ops(auth.OpSubscribe), Patterns: []auth.Pattern{auth.MustParsePattern("reports.*")}},
						{Ops: auth.Ops(auth.OpRequest), Patterns: []auth.Pattern{auth.MustParsePattern("reports.rpc")}},
					},
				}},
			},
			JWTKeys: []auth.JWTKey{
				{ID: "ed-b64", Ed25519: pub},
				{ID: "ed-pem", Ed25519: pub},
				{ID: "hs", HMAC: []byte(secret)},
			},
			Issuer:   "https://ci.example.com",
			Audience: "tslm",
			Leeway:   45 * time.Second,
		},
		Channels: []auth.ChannelRule{
			{Pattern: auth.MustParsePattern("prices.*"), MaxLen: 100, Retention: 90 * time.Minute,
				Anonymous: auth.Ops(auth.OpSubscribe), Public: auth.Ops(auth.OpSubscribe, auth.OpRequest), PublicSet: true},
			{Pattern: auth.MustParsePattern("private.*"), PublicSet: true},
			{Pattern: auth.MustParsePattern("*"), Anonymous: auth.Ops(auth.OpSubscribe)},
		},
		RedisURL:     "redis://redis.internal:6380/2?pool_size=50",
		RedisPrefix:  "edge:",
		PollInterval: 750 * time.Millisecond,
	}
	// Expires compares by instant, not by location.
	got := f.Config
	for i := range got.Publishers.APIKeys {
		if e := &got.Publishers.APIKeys[i].Principal.Expires; !e.IsZero() {
			*e = e.UTC()
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loaded\n%+v\nwant\n%+v", got, want)
	}
	if len(f.Warnings) != 0 {
		t.Errorf("warnings %q, want none", f.Warnings)
	}
	if _, err := auth.NewPublisherVerifier(got.Publishers); err != nil {
		t.Errorf("the loaded publisher config is refused by auth: %v", err)
	}
	resolved := got.WithDefaults()
	if err := resolved.Validate(); err != nil {
		t.Errorf("the loaded config is invalid: %v", err)
	}
}

// issue20Example is the original TSLM's example tslm.toml, as issue 20
// quotes it.
const issue20Example = `[listener.public]
ip = "0.0.0.0"
port = 8080
default_endpoint_permissions = ["Subscribe"]
auth_tokens = ["s3cret"]          # optional
max_message_size = 65536          # optional, bytes
max_frame_size = 16777216         # optional, bytes
max_connections = 1000            # optional
rate_limit_per_second = 10        # optional, per connection

[listener.private]
ip = "127.0.0.1"
port = 8081
default_endpoint_permissions = ["CreateChannel", "NotifyChannel"]
`

// TestOriginalExampleLoads holds the original TSLM's example tslm.toml to
// loading unchanged, each of its keys applied to its own listener.
func TestOriginalExampleLoads(t *testing.T) {
	f := load(t, issue20Example)
	c := f.Config
	got := []any{c.PublicAddrs, c.InternalAddrs, c.PublicAllow, c.PublicAuthTokens, c.PublicLimits, c.InternalLimits, c.PublicRate, c.InternalRate,
		c.InternalAuthTokens, c.PublicOff, c.Listeners}
	want := []any{[]string{"0.0.0.0:8080"}, []string{"127.0.0.1:8081"}, []string{"subscribe"}, []auth.Secret{"s3cret"},
		gateway.ListenerLimits{MaxDataBytes: 65536, MaxFrameBytes: 16777216, MaxConnections: 1000}, gateway.ListenerLimits{}, 10.0, 0.0,
		[]auth.Secret(nil), false, []gateway.Listener(nil)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("original example gave %v, want %v", got, want)
	}
	if tokens := c.PublicAuthTokens; len(tokens) != 1 || string(tokens[0]) != "s3cret" {
		t.Errorf("tokens %d, want the example's", len(tokens))
	}
	// A configuration dumped, by mistake or for debugging, shows no token.
	if dump := fmt.Sprintf("%v %+v %#v", c, c, c); strings.Contains(dump, "s3cret") {
		t.Errorf("the Config prints its token: %s", dump)
	}
	// A six-byte token can be guessed, and the internal listener allows
	// everything, not only create and publish: the operator should hear
	// both, and never the token.
	want2 := []string{":5:16: listener.public.auth_tokens[0]: the token is 6 bytes long", ":14:1: listener.private.default_endpoint_permissions"}
	if len(f.Warnings) != len(want2) {
		t.Fatalf("warnings %q, want %d", f.Warnings, len(want2))
	}
	for i, w := range want2 {
		if !strings.Contains(f.Warnings[i], w) || strings.Contains(f.Warnings[i], "s3cret") {
			t.Errorf("warning %q, want one containing %q and not the token", f.Warnings[i], w)
		}
	}
	resolved := c.WithDefaults()
	if err := resolved.Validate(); err != nil {
		t.Errorf("the example is invalid: %v", err)
	}
}

// TestErrorsNameTheLine holds every class of mistake to an error that
// starts with the file, the line (and column) and names the key.
func TestErrorsNameTheLine(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	cases := []struct {
		name string
		doc  string
		line int
		key  string
		says string
	}{
		{"malformed TOML", "[listener.public]\nip = \"0.0.0.0\nport = 1\n", 2, "", "new lines"},
		{"unknown key", "[listener.public]\nport = 8080\nprot = 8081\n", 3, "listener.public.prot", "unknown key"},
		{"unknown table", "[listener.public]\nport = 8080\n\n[cache]\nurl = \"x\"\n", 4, "cache", "unknown table"},
		{"unknown key of [redis]", "[redis]\nurl = \"redis://r:6379\"\nmaster = \"m\"\n", 3, "redis.master", "unknown key"},
		{"redis url not a URL", "[redis]\nurl = \"r:6379\"\n", 2, "redis.url", "redis"},
		{"redis url of a Cluster with a database", "[redis]\nurl = \"redis://a:1,b:2/3\"\n", 2, "redis.url", "database"},
		{"redis prefix with a brace", "[redis]\nprefix = \"a{b\"\n", 2, "redis.prefix", "key prefix"},
		{"redis prefix empty", "[redis]\nprefix = \"\"\n", 2, "redis.prefix", "1-"},
		{"redis poll interval not a duration", "[redis]\npoll_interval = \"2\"\n", 2, "redis.poll_interval", "not a duration"},
		{"redis poll interval too short", "[redis]\npoll_interval = \"1ms\"\n", 2, "redis.poll_interval", "at least 10ms"},
		{"unknown grant operation", "[[auth.api_key]]\nname = \"a\"\nsha256 = \"" + hash + "\"\ngrants = { delete = [\"x\"] }\n", 4, "auth.api_key[0].grants.delete", "unknown key"},
		{"wrong type", "[listener.public]\nport = \"8080\"\n", 2, "listener.public.port", "want an integer, not a TOML string"},
		{"wrong type in an array of tables", "[[channel]]\npattern = \"a\"\n[[channel]]\npattern = \"b\"\nmax_len = \"many\"\n", 5, "channel[1].max_len", "want an integer"},
		{"wrong type of an element", "[auth]\ntrusted_proxies = [\"10.0.0.1\", 10]\n", 2, "auth.trusted_proxies[1]", "want a string, not a TOML integer"},
		{"wrong type in a list", "[listener.public]\ndefault_endpoint_permissions = \"Subscribe\"\n", 2, "listener.public.default_endpoint_permissions", "want an array of strings"},
		{"port out of range", "[listener.public]\nip = \"0.0.0.0\"\nport = 70000\n", 3, "listener.public.port", "1-65535"},
		{"bad ip", "[listener.internal]\nip = \"localhost\"\n", 2, "listener.internal.ip", "not an IP address"},
		{"further listener without port", "[listener.public]\nport = 8080\n\n[listener.admin]\nip = \"10.0.0.1\"\n", 4, "listener.admin", "has no port"},
		{"further listener without port, by dotted keys", "listener.admin.ip = \"10.0.0.1\"\n", 1, "listener.admin", "has no port"},
		{"listener without a name", "[listener.\" \"]\nport = 9000\n", 1, "listener. ", "needs a name"},
		{"internal and private", "[listener.internal]\nport = 1\n[listener.private]\nport = 2\n", 3, "listener.private", "same listener"},
		{"port clash", "[listener.public]\nport = 9000\n[listener.internal]\nip = \"127.0.0.1\"\nport = 9000\n", 5, "listener.internal.port", "clashes with listener.public's :9000"},
		{"port clash, later by name", "[listener.zeta]\nport = 9000\n[listener.alpha]\nip = \"127.0.0.1\"\nport = 9000\n", 5, "listener.alpha.port", "clashes with listener.zeta's"},
		{"port clash with the default", "[listener.public]\n[listener.other]\nport = 8080\n", 3, "listener.other.port", "clashes"},
		{"no clash on other hosts", "[listener.a]\nip = \"127.0.0.1\"\nport = 9000\n[listener.b]\nip = \"127.0.0.2\"\nport = 9000\nauth = \"strict\"\n", 7, "listener.b.auth", "unknown auth mode"},
		{"no auth_tokens", "[listener.public]\nport = 8080\nauth_tokens = []\n", 3, "listener.public.auth_tokens", "names no token"},
		{"bad token", "[listener.public]\nauth_tokens = [\n  \"good-token-0123456789\",\n  \"two words\",\n]\n", 4, "listener.public.auth_tokens[1]", "has a character a WebSocket subprotocol may not hold at byte 3"},
		{"empty token", "[listener.feed]\nport = 9000\nauth_tokens = [\"\"]\n", 3, "listener.feed.auth_tokens[0]", "is empty"},
		{"token not a string", "[listener.public]\nauth_tokens = [1]\n", 2, "listener.public.auth_tokens[0]", "want a string"},
		{"negative channel buffer", "[listener.public]\nchannel_buffer_size = -1\n", 2, "listener.public.channel_buffer_size", "must be positive"},
		{"bad permission", "[listener.public]\ndefault_endpoint_permissions = [\n  \"Subscribe\",\n  \"Delete\",\n]\n", 4, "listener.public.default_endpoint_permissions[1]", "unknown operation \"Delete\""},
		{"no permission", "[listener.public]\ndefault_endpoint_permissions = []\n", 2, "listener.public.default_endpoint_permissions", "names no operation"},
		{"bad auth mode", "[listener.public]\nauth = \"strict\"\n", 2, "listener.public.auth", "unknown auth mode"},
		{"cert without key", "[listener.public]\ntls_cert = \"a.crt\"\n", 2, "listener.public.tls_cert", "set tls_key too"},
		{"per-IP limit on internal", "[listener.internal]\nmax_connections_per_ip = 5\n", 2, "listener.internal.max_connections_per_ip", "no per-address limit"},
		{"message not below frame, further listener", "[listener.feed]\nport = 9000\nmax_message_size = 2000\nmax_frame_size = 1000\n", 3, "listener.feed.max_message_size", "less than the frame limit"},
		{"zero limit", "[listener.public]\nmax_connections = 0\n", 2, "listener.public.max_connections", "must be positive"},
		{"negative rate", "[listener.public]\nrate_limit_per_second = -1\n", 2, "listener.public.rate_limit_per_second", "not negative"},
		{"infinite rate", "[listener.public]\nrate_limit_per_second = inf\n", 2, "listener.public.rate_limit_per_second", "finite"},
		{"message not below frame", "[listener.public]\nmax_message_size = 2000\nmax_frame_size = 1000\n", 2, "listener.public.max_message_size", "less than the frame limit"},
		{"bad duration", "[auth]\ntimeout = \"10 seconds\"\n", 2, "auth.timeout", "not a duration"},
		{"bad trusted proxy", "[auth]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy.local\"]\n", 2, "auth.trusted_proxies[1]", "neither an IP address nor a CIDR"},
		{"oidc without issuer", "[auth.oidc]\naudience = \"x\"\n", 1, "auth.oidc", "no issuer"},
		{"bad issuer", "[auth.oidc]\nissuer = \"sso.example.com\"\n", 2, "auth.oidc.issuer", "not an issuer URL"},
		{"bad hash", "[[auth.api_key]]\nname = \"a\"\nsha256 = \"abc\"\n", 3, "auth.api_key[0].sha256", "64 hexadecimal digits"},
		{"no hash", "[[auth.api_key]]\nname = \"a\"\n", 1, "auth.api_key[0]", "has no sha256"},
		{"no name", "\n[[auth.api_key]]\nsha256 = \"" + hash + "\"\n", 2, "auth.api_key[0]", "has no name"},
		{"same hash twice", "[[auth.api_key]]\nname = \"a\"\nsha256 = \"" + hash + "\"\n[[auth.api_key]]\nname = \"b\"\nsha256 = \"" + hash + "\"\n", 6, "auth.api_key[1].sha256", "same hash as auth.api_key[0]"},
		{"bad pattern in a grant", "[[auth.api_key]]\nname = \"a\"\nsha256 = \"" + hash + "\"\n[auth.api_key.grants]\npublish = [\n  \"ok.*\",\n  \"no spaces\",\n]\n", 7, "auth.api_key[0].grants.publish[1]", "pattern \"no spaces\""},
		{"local expiry", "[[auth.api_key]]\nname = \"a\"\nsha256 = \"" + hash + "\"\nexpires = 2030-01-01T00:00:00\n", 4, "auth.api_key[0].expires", "with its offset"},
		{"ed25519 and hmac", "[[auth.token_key]]\nkid = \"k\"\ned25519 = \"x\"\nhmac_file = \"y\"\n", 1, "auth.token_key[0]", "exactly one of ed25519"},
		{"neither ed25519 nor hmac", "[[auth.token_key]]\nkid = \"k\"\n", 1, "auth.token_key[0]", "exactly one of ed25519"},
		{"bad ed25519", "[[auth.token_key]]\nkid = \"k\"\ned25519 = \"AAAA\"\n", 3, "auth.token_key[0].ed25519", "is 32 bytes, not 3"},
		{"short hmac", "[[auth.token_key]]\nkid = \"k\"\nhmac = \"short\"\n", 3, "auth.token_key[0].hmac", "at least 32"},
		{"missing hmac file", "[[auth.token_key]]\nkid = \"k\"\nhmac_file = \"nowhere.key\"\n", 3, "auth.token_key[0].hmac_file", "cannot read the secret"},
		{"endless hmac file", "[[auth.token_key]]\nkid = \"k\"\nhmac_file = \"/dev/zero\"\n", 3, "auth.token_key[0].hmac_file", "is it the secret?"},
		{"duplicate kid", "[[auth.token_key]]\nkid = \"k\"\nhmac = \"" + strings.Repeat("x", 32) + "\"\n[[auth.token_key]]\nkid = \"k\"\nhmac = \"" + strings.Repeat("y", 32) + "\"\n", 5, "auth.token_key[1].kid", "unique"},
		{"long leeway", "[auth.publisher_tokens]\nleeway = \"1h\"\n", 2, "auth.publisher_tokens.leeway", "over 5m0s"},
		{"bad channel pattern", "[[channel]]\npattern = \"a\"\n\n[[channel]]\npattern = \"b/c\"\n", 5, "channel[1].pattern", "pattern \"b/c\""},
		{"no channel pattern", "[[channel]]\nmax_len = 5\n", 1, "channel[0]", "has no pattern"},
		{"bad channel op", "[[channel]]\npattern = \"a\"\npublic = [\"subscribe\", \"delete\"]\n", 3, "channel[0].public[1]", "unknown operation \"delete\""},
		{"bad retention", "[[channel]]\npattern = \"a\"\nretention = \"1 day\"\n", 3, "channel[0].retention", "not a duration"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := write(t, c.doc)
			_, err := Load(path)
			if err == nil {
				t.Fatalf("accepted:\n%s", c.doc)
			}
			errs := fileErrors(err)
			if len(errs) != 1 {
				t.Fatalf("%d file errors, want 1: %v", len(errs), err)
			}
			e := errs[0]
			if e.Line != c.line || e.Key != c.key || !strings.Contains(e.Msg, c.says) {
				t.Errorf("error at line %d key %q: %q\nwant line %d key %q saying %q", e.Line, e.Key, e.Msg, c.line, c.key, c.says)
			}
			if prefix := path + ":" + strconv.Itoa(c.line) + ":"; !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("message %q does not start with %q", err, prefix)
			}
		})
	}
}

// TestEveryMistakeIsReported holds Load to reporting all it found, in the
// file's order, so that an operator fixes a file in one round.
func TestEveryMistakeIsReported(t *testing.T) {
	path := write(t, `[listener.public]
port = 0
auth = "maybe"
[listener.admin]
[[channel]]
pattern = "a b"
`)
	_, err := Load(path)
	var lines []int
	for _, e := range fileErrors(err) {
		lines = append(lines, e.Line)
	}
	if !reflect.DeepEqual(lines, []int{2, 3, 4, 6}) {
		t.Errorf("errors at lines %v, want 2, 3, 4 and 6, in that order: %v", lines, err)
	}
	var unknown error
	_, unknown = Load(write(t, "a = 1\n[b]\nc = 2\n"))
	if n := len(fileErrors(unknown)); n != 2 {
		t.Errorf("%d errors for two unknown keys: %v", n, unknown)
	}
}

func TestWarnings(t *testing.T) {
	f := load(t, `[listener.public]
max_frame_size = 200000
channel_buffer_size = 0

[listener.internal]
max_frame_size = 100000
auth_tokens = ["short"]

[[auth.api_key]]
name = "old"
sha256 = "`+strings.Repeat("cd", 32)+`"
expires = 2001-01-01T00:00:00Z

[[auth.token_key]]
kid = "inline"
hmac = "`+strings.Repeat("z", 32)+`"

[[channel]]
pattern = "a.*"
[[channel]]
pattern = "a.*"

[redis]
url = "redis://:hunter2@redis:6379/0"
`)
	want := []string{":3:1: listener.public.channel_buffer_size: 0 meant unbounded", ":7:16: listener.internal.auth_tokens[0]: the token is 5 bytes long",
		":12:1: auth.api_key[0].expires: the API key \"old\" expired",
		":16:1: auth.token_key[0].hmac: the HMAC secret is written in the config file", ":21:1: channel[1].pattern: channel[0] has the same pattern",
		":24:1: redis.url: the URL holds a password"}
	if len(f.Warnings) != len(want) {
		t.Fatalf("warnings %q, want %d", f.Warnings, len(want))
	}
	for i, w := range want {
		if !strings.Contains(f.Warnings[i], w) || strings.Contains(f.Warnings[i], "hunter2") {
			t.Errorf("warning %q, want one containing %q, and no password", f.Warnings[i], w)
		}
	}
	// Each listener keeps its own frame limit.
	if c := f.Config; c.PublicLimits.MaxFrameBytes != 200000 || c.InternalLimits.MaxFrameBytes != 100000 || c.PublicLimits.SendQueue != 0 {
		t.Errorf("limits %+v %+v, want each listener's own", c.PublicLimits, c.InternalLimits)
	}
}

// TestListenersTheFileNames: the file's listeners are the ones that open.
// Without [listener.public] no public listener opens, and a file that
// then names no public-role listener at all is warned.
func TestListenersTheFileNames(t *testing.T) {
	f := load(t, "[listener.main]\nport = 8080\n\n[listener.private]\nport = 8081\n")
	if c := f.Config; !c.PublicOff || len(c.Listeners) != 1 || c.Listeners[0].Name != "main" || len(f.Warnings) != 0 {
		t.Errorf("got %+v, warnings %q; want the public listener off and main open", c, f.Warnings)
	}
	f = load(t, "[listener.private]\nport = 8081\n")
	if !f.Config.PublicOff || len(f.Warnings) != 1 || !strings.Contains(f.Warnings[0], ":1:2: listener.private: the file names no listener but this one") {
		t.Errorf("got PublicOff %v, warnings %q; want it off, and said", f.Config.PublicOff, f.Warnings)
	}
	if f := load(t, "[auth]\ntimeout = \"3s\"\n"); f.Config.PublicOff {
		t.Error("a file without listener tables turned the public listener off")
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "absent.toml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "absent.toml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestEmptyFileSetsNothing(t *testing.T) {
	f := load(t, "# nothing yet\n")
	if !reflect.DeepEqual(f.Config, gateway.Config{}) || len(f.Warnings) != 0 {
		t.Errorf("empty file gave %+v, %q", f.Config, f.Warnings)
	}
}
