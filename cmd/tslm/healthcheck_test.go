package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/gateway"
	"github.com/tslm/tslm/internal/gobuild"
	"github.com/tslm/tslm/internal/redistest"
	"github.com/tslm/tslm/internal/tlsreload/tlstest"
)

// tslm is built static with the Dockerfile's flags, so that
// integration/docker_test.go's build of the same packages comes from the
// build cache.
var tslm = gobuild.New(".", []string{"CGO_ENABLED=0"}, "-trimpath")

func TestMain(m *testing.M) { gobuild.Main(m, tslm) }

func tslmBinary(t *testing.T) string { return tslm.Path(t) }

// runHealthcheck runs "tslm healthcheck args..." with env as its only TSLM_*
// variables, as the image's HEALTHCHECK runs it in the gateway's container.
func runHealthcheck(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(tslmBinary(t), append([]string{"healthcheck"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TSLM_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		t.Fatalf("tslm healthcheck %q still running after 30s", args)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// startGateway runs a gateway in-process; edit sets its configuration.
// It returns the internal listener's port.
func startGateway(t *testing.T, edit func(*gateway.Config)) string {
	t.Helper()
	cfg := gateway.Config{PublicAddrs: []string{"127.0.0.1:0"}, InternalAddrs: []string{"127.0.0.1:0"}}
	if edit != nil {
		edit(&cfg)
	}
	g, err := gateway.Start(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	_, port, err := net.SplitHostPort(g.InternalAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func TestHealthcheckHealthy(t *testing.T) {
	port := startGateway(t, nil)
	for _, tc := range []struct {
		addr string
		args []string
		want string
	}{
		{"127.0.0.1:" + port, nil, "http://127.0.0.1:" + port + "/healthz: ok"},
		{"127.0.0.1:" + port, []string{"-ready"}, "http://127.0.0.1:" + port + "/readyz: ready"},
		// A listener on every interface, as in the compose file, is
		// reached on loopback.
		{":" + port, []string{"-ready", "-timeout", "5s"}, "http://127.0.0.1:" + port + "/readyz: ready"},
		{"0.0.0.0:" + port, nil, "http://127.0.0.1:" + port + "/healthz: ok"},
		// Only the first address is asked.
		{"127.0.0.1:" + port + ",127.0.0.1:1", nil, "/healthz: ok"},
	} {
		code, stdout, stderr := runHealthcheck(t, map[string]string{"TSLM_INTERNAL_ADDRS": tc.addr}, tc.args...)
		if code != 0 || !strings.Contains(stdout, tc.want) {
			t.Errorf("TSLM_INTERNAL_ADDRS=%s healthcheck %q: exit %d, stdout %q, stderr %q; want 0 and %q", tc.addr, tc.args, code, stdout, stderr, tc.want)
		}
	}
}

func TestHealthcheckNothingListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, args := range [][]string{nil, {"-ready"}} {
		code, stdout, stderr := runHealthcheck(t, map[string]string{"TSLM_INTERNAL_ADDRS": addr}, args...)
		if code != 1 || stdout != "" || !strings.Contains(stderr, "tslm healthcheck: GET http://"+addr) || !strings.Contains(stderr, "nothing listens there") {
			t.Errorf("healthcheck %q of a closed port: exit %d, stdout %q, stderr %q; want 1 and why", args, code, stdout, stderr)
		}
	}
}

// A replica whose Redis is down is alive (healthz) but not ready (readyz):
// Docker keeps it, the balancer sends it no one.
func TestHealthcheckReadyWithoutRedis(t *testing.T) {
	redis := redistest.Start(t, redistest.Options{})
	port := startGateway(t, func(c *gateway.Config) {
		c.RedisURL = redis.URL()
		c.OperationTimeout = 500 * time.Millisecond
	})
	env := map[string]string{"TSLM_INTERNAL_ADDRS": "127.0.0.1:" + port}
	if code, _, stderr := runHealthcheck(t, env, "-ready"); code != 0 {
		t.Fatalf("-ready with Redis up: exit %d, stderr %q", code, stderr)
	}
	redis.Stop()
	code, stdout, stderr := runHealthcheck(t, env, "-ready", "-timeout", "10s")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "/readyz: 503 Service Unavailable: backlog unavailable") {
		t.Errorf("-ready with Redis down: exit %d, stdout %q, stderr %q; want 1 and the 503's reason", code, stdout, stderr)
	}
	if code, _, stderr := runHealthcheck(t, env); code != 0 {
		t.Errorf("healthz with Redis down: exit %d, stderr %q; a replica without its backlog is still alive", code, stderr)
	}
}

func TestHealthcheckTLS(t *testing.T) {
	pair := tlstest.New(t, "tslm internal")
	cert, key := tlstest.Write(t, t.TempDir(), pair)
	port := startGateway(t, func(c *gateway.Config) {
		c.InternalTLSCert, c.InternalTLSKey = cert, key
	})
	env := map[string]string{
		"TSLM_INTERNAL_ADDRS":    ":" + port,
		"TSLM_INTERNAL_TLS_CERT": cert,
		"TSLM_INTERNAL_TLS_KEY":  key,
	}
	code, stdout, stderr := runHealthcheck(t, env, "-ready")
	if code != 0 || !strings.Contains(stdout, "https://127.0.0.1:"+port+"/readyz: ready") {
		t.Errorf("healthcheck of a TLS internal listener: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// Without the TLS settings the check speaks plain HTTP to a TLS
	// listener, and says what it got.
	delete(env, "TSLM_INTERNAL_TLS_CERT")
	delete(env, "TSLM_INTERNAL_TLS_KEY")
	code, _, stderr = runHealthcheck(t, env)
	if code != 1 || !strings.Contains(stderr, "400 Bad Request") {
		t.Errorf("plain HTTP to a TLS listener: exit %d, stderr %q; want 1 and the 400", code, stderr)
	}
}

// Away from loopback the certificate is verified, against the replica's own
// certificate file.
func TestHealthcheckTLSVerifiesAwayFromLoopback(t *testing.T) {
	pair := tlstest.New(t, "tslm internal")
	dir := t.TempDir()
	cert, key := tlstest.Write(t, dir, pair)
	other, _ := tlstest.Write(t, t.TempDir(), tlstest.New(t, "someone else"))
	port := startGateway(t, func(c *gateway.Config) {
		c.InternalTLSCert, c.InternalTLSKey = cert, key
	})
	// 127.0.0.1 is in the certificate; the target is marked as not
	// loopback to take the verifying path on this machine.
	tgt := target{base: "https://127.0.0.1:" + port, host: "127.0.0.1"}
	for _, tc := range []struct {
		certFile string
		ok       bool
	}{{cert, true}, {other, false}} {
		cfg, err := tgt.tlsConfig(tc.certFile)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.InsecureSkipVerify {
			t.Fatal("verification skipped away from loopback")
		}
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := client.Get(tgt.base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("trusting %s: err = %v, want success %v", filepath.Base(filepath.Dir(tc.certFile)), err, tc.ok)
		}
	}
	if _, err := tgt.tlsConfig(filepath.Join(dir, "missing.pem")); err == nil || !strings.Contains(err.Error(), "TSLM_INTERNAL_TLS_CERT") {
		t.Errorf("missing certificate file: err = %v, want one naming TSLM_INTERNAL_TLS_CERT", err)
	}
}

func TestHealthcheckRefusals(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"TSLM_INTERNAL_ADDRS": "127.0.0.1:0"}, nil, `TSLM_INTERNAL_ADDRS entry "127.0.0.1:0": the port is chosen at start`},
		{map[string]string{"TSLM_INTERNAL_ADDRS": "8081"}, nil, `TSLM_INTERNAL_ADDRS entry "8081": address 8081: missing port`},
		{map[string]string{"TSLM_PUBLIC_RATE": "fast"}, nil, "configuration: "},
		{map[string]string{"TSLM_CONFIG": "/nonexistent/tslm.toml"}, nil, "configuration: "},
		{nil, []string{"now"}, `unexpected argument "now"`},
		{nil, []string{"-timeout", "0s"}, "-timeout must be positive"},
		{nil, []string{"-wait"}, "flag provided but not defined: -wait"},
	} {
		code, stdout, stderr := runHealthcheck(t, tc.env, tc.args...)
		if code != 1 || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("env %v, healthcheck %q: exit %d, stdout %q, stderr %q; want 1 and %q", tc.env, tc.args, code, stdout, stderr, tc.want)
		}
	}
}

func TestSelfTarget(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		tls      bool
		base     string
		loopback bool
	}{
		{":8081", false, "http://127.0.0.1:8081", true},
		{"0.0.0.0:8081", true, "https://127.0.0.1:8081", true},
		{"[::]:8081", false, "http://[::1]:8081", true},
		{"[::1]:8081", false, "http://[::1]:8081", true},
		{"127.0.0.1:8081", false, "http://127.0.0.1:8081", true},
		{"localhost:8081", true, "https://localhost:8081", true},
		{"10.0.0.5:8081", true, "https://10.0.0.5:8081", false},
		{"tslm.internal:8081", true, "https://tslm.internal:8081", false},
	} {
		got, err := selfTarget(tc.addr, tc.tls)
		if err != nil || got.base != tc.base || got.loopback != tc.loopback {
			t.Errorf("selfTarget(%q, %v) = %+v, %v; want %s, loopback %v", tc.addr, tc.tls, got, err, tc.base, tc.loopback)
		}
	}
}
