package integration

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestBinaryReadsConfigFile starts the real binary on the original TSLM's
// example file, amended: the file's limit applies, the environment's
// addresses (startBinary sets them) win over the file's, and the file's
// warning reaches the log.
func TestBinaryReadsConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tslm.toml")
	doc := `[listener.public]
ip = "0.0.0.0"
port = 8080
default_endpoint_permissions = ["Subscribe"]
max_connections = 1

[listener.private]
ip = "127.0.0.1"
port = 8081
default_endpoint_permissions = ["CreateChannel", "NotifyChannel"]
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startBinary(t, map[string]string{"TSLM_CONFIG": path})
	publicURL := "ws://" + p.addr(t, "public") + "/v1/ws"
	if !strings.HasPrefix(publicURL, "ws://127.0.0.1:") {
		t.Errorf("public listener at %s: TSLM_PUBLIC_ADDRS should win over the file", publicURL)
	}
	dial(t, publicURL)
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial(publicURL, nil)
	if err == nil {
		conn.Close()
		t.Fatal("a second connection was accepted: max_connections = 1 in the file")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("second connection: %v %v, want HTTP 503", resp, err)
	}
	var warned bool
	for _, l := range p.logLines() {
		msg, _ := l["msg"].(string)
		warned = warned || l["level"] == "WARN" && strings.HasPrefix(msg, path+":10:") &&
			strings.Contains(msg, "listener.private.default_endpoint_permissions")
	}
	if !warned {
		t.Errorf("no warning about the internal listener's permissions at %s:10; stderr:\n%s", path, p.output())
	}
}

// TestBinaryRefusesBadConfigFile: a mistake in the file stops start-up
// with the file, line and key.
func TestBinaryRefusesBadConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tslm.toml")
	if err := os.WriteFile(path, []byte("[listener.public]\nport = 8080\nauth_tokens = [\"s3cret\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startBinary(t, map[string]string{"TSLM_CONFIG": path})
	err := p.wait(t, 30*time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("exit %v, want a failure", err)
	}
	if want := path + ":3:1: listener.public.auth_tokens: not supported yet"; !strings.Contains(p.output(), want) {
		t.Errorf("stderr does not say %q:\n%s", want, p.output())
	}
	if strings.Contains(p.output(), "s3cret") {
		t.Errorf("stderr shows the token:\n%s", p.output())
	}
}
