package integration

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/internal/redistest"
)

// TestBinaryReadsConfigFile starts the real binary on the original TSLM's
// example file, verbatim (config.issue20Example's text), with a further
// listener of the original's kind appended: the environment's addresses
// (startBinary sets them) win over the file's, the public listener's
// token guards it, the further listener opens on its own port with its
// own limit, the file's warnings reach the log, and no token does.
func TestBinaryReadsConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tslm.toml")
	partnersPort := freeTCPPort(t)
	doc := `[listener.public]
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

[listener.partners]
ip = "127.0.0.1"
port = ` + strconv.Itoa(partnersPort) + `
auth_tokens = ["partners-token-0123456789"]
max_connections = 1
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startBinary(t, map[string]string{"TSLM_CONFIG": path})
	public, internal := p.addr(t, "public"), p.addr(t, "internal")
	if !strings.HasPrefix(public, "127.0.0.1:") {
		t.Errorf("public listener at %s: TSLM_PUBLIC_ADDRS should win over the file", public)
	}
	if partners := p.addr(t, "partners"); partners != "127.0.0.1:"+strconv.Itoa(partnersPort) {
		t.Errorf("partners listener at %s, want the file's port %d", partners, partnersPort)
	}

	pub := dialLegacy(t, rootURL(internal), nil)
	pub.send(map[string]any{"CreateChannel": "c"})
	pub.expect(map[string]any{"Success": "Channel c created"})
	if status, _ := refusedLegacy(t, rootURL(public)); status != http.StatusUnauthorized {
		t.Errorf("public / without the file's token: HTTP %d, want 401", status)
	}
	sub := dialLegacy(t, rootURL(public), nil, "s3cret")
	sub.send(map[string]any{"Subscribe": "c"})
	sub.expect(map[string]any{"Success": "Subscribed to c"})
	pub.send(map[string]any{"NotifyChannel": []any{"c", map[string]any{"Text": "hi"}}})
	pub.expect(map[string]any{"Success": "Message sent to c"})
	sub.expect(map[string]any{"ChannelMessage": []any{"c", map[string]any{"Text": "hi"}}})

	partners := rootURL("127.0.0.1:" + strconv.Itoa(partnersPort))
	if status, _ := refusedLegacy(t, partners, "s3cret"); status != http.StatusUnauthorized {
		t.Errorf("partners / with the public listener's token: HTTP %d, want 401", status)
	}
	dialLegacy(t, partners, nil, "partners-token-0123456789")
	if status, _ := refusedLegacy(t, partners, "partners-token-0123456789"); status != http.StatusServiceUnavailable {
		t.Errorf("a second partners connection (max_connections = 1): HTTP %d, want 503", status)
	}

	warned := map[string]bool{}
	for _, l := range p.logLines() {
		msg, _ := l["msg"].(string)
		for _, at := range []string{":5:16: listener.public.auth_tokens[0]", ":14:1: listener.private.default_endpoint_permissions"} {
			warned[at] = warned[at] || l["level"] == "WARN" && strings.HasPrefix(msg, path+at)
		}
	}
	if len(warned) != 2 || !warned[":5:16: listener.public.auth_tokens[0]"] || !warned[":14:1: listener.private.default_endpoint_permissions"] {
		t.Errorf("warnings %v, want the short token's and the internal listener's permissions'; stderr:\n%s", warned, p.output())
	}
	sub.conn.Close()
	eventually(t, 30*time.Second, "the subscriber's access log line", func() bool { return strings.Contains(p.output(), `"msg":"connection closed"`) })
	if out := p.output(); strings.Contains(out, "s3cret") || strings.Contains(out, "partners-token") {
		t.Errorf("stderr shows a token:\n%s", out)
	}
}

// TestBinaryRefusesBadConfigFile: a mistake in the file stops start-up
// with the file, line and key, and never shows a token.
func TestBinaryRefusesBadConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tslm.toml")
	doc := "[listener.public]\nport = 8080\nauth_tokens = [\"s3cret-and-long-enough\", \"s3cret two\"]\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startBinary(t, map[string]string{"TSLM_CONFIG": path})
	err := p.wait(t, 30*time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("exit %v, want a failure", err)
	}
	if want := path + ":3:42: listener.public.auth_tokens[1]: the token has a character"; !strings.Contains(p.output(), want) {
		t.Errorf("stderr does not say %q:\n%s", want, p.output())
	}
	if strings.Contains(p.output(), "s3cret") {
		t.Errorf("stderr shows a token:\n%s", p.output())
	}
}

// TestBinaryReadsRedisFromConfigFile: the file's [redis] table puts the
// real binary on that Redis, under the file's key prefix, with the
// password of its URL; the log warns that the password is in the file
// and never shows it.
func TestBinaryReadsRedisFromConfigFile(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	// A user of its own, so that the URL needs its password while the
	// test's own client stays the default user.
	const password = "file-redis-password-42"
	if err := srv.Client().Do(ctx, "ACL", "SETUSER", "gw", "on", ">"+password, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tslm.toml")
	doc := "[listener.public]\nport = 8080\n\n[redis]\nurl = \"redis://gw:" + password + "@" + srv.Addr() + "/0\"\nprefix = \"fromfile:\"\npoll_interval = \"500ms\"\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startBinary(t, map[string]string{"TSLM_CONFIG": path})
	internal := p.addr(t, "internal")
	req, err := http.NewRequest(http.MethodPut, "http://"+internal+"/v1/channels/filed", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: HTTP %d", resp.StatusCode)
	}
	if n, err := srv.Client().Exists(ctx, "fromfile:meta:{filed}").Result(); err != nil || n != 1 {
		t.Errorf("the channel's meta under the file's prefix: exists %d, %v; keys %v", n, err, srv.Client().Keys(ctx, "*").Val())
	}
	warned := false
	for _, l := range p.logLines() {
		msg, _ := l["msg"].(string)
		warned = warned || l["level"] == "WARN" && strings.HasPrefix(msg, path+":5:1: redis.url: the URL holds a password")
	}
	if !warned {
		t.Errorf("no warning of the password in the file; stderr:\n%s", p.output())
	}
	if strings.Contains(p.output(), password) {
		t.Errorf("stderr shows the password:\n%s", p.output())
	}
}
