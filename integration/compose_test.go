package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// TestComposeTopology parses docker-compose.yml with the compose-spec loader
// (no Docker engine runs in CI) and checks the topology the README promises:
// Redis with AOF, several gateway replicas on it, and a load balancer over
// all of them without stickiness.
func TestComposeTopology(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithName("tslm"))
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}

	redis, err := project.GetService("redis")
	if err != nil {
		t.Fatal(err)
	}
	if cmd := strings.Join(redis.Command, " "); !strings.Contains(cmd, "--appendonly yes") {
		t.Errorf("redis command %q does not enable AOF", cmd)
	}

	var replicas []types.ServiceConfig
	for _, s := range project.Services {
		if strings.HasPrefix(s.Name, "tslm-") {
			replicas = append(replicas, s)
		}
	}
	if len(replicas) < 2 {
		t.Fatalf("%d gateway replicas, want several", len(replicas))
	}
	for _, r := range replicas {
		env := r.Environment
		if url := env["TSLM_REDIS_URL"]; url == nil || !strings.HasPrefix(*url, "redis://redis:") {
			t.Errorf("%s: TSLM_REDIS_URL = %v, want the redis service", r.Name, url)
		}
		if r.Build == nil {
			t.Errorf("%s is not built from this repository", r.Name)
		}
		if _, ok := r.DependsOn["redis"]; !ok {
			t.Errorf("%s does not depend on redis", r.Name)
		}
		if demo := env["TSLM_DEMO"]; demo == nil || *demo != "true" {
			t.Errorf("%s: TSLM_DEMO = %v, want true: the first start shows the demo page", r.Name, demo)
		}
		for _, p := range r.Ports {
			if p.Target == 8081 && p.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes the internal listener on %q, want loopback only", r.Name, p.HostIP)
			}
		}
	}

	lb, err := project.GetService("lb")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range replicas {
		if _, ok := lb.DependsOn[r.Name]; !ok {
			t.Errorf("lb does not depend on %s", r.Name)
		}
	}
	if len(lb.Volumes) == 0 {
		t.Fatal("lb mounts no configuration")
	}
	conf, err := os.ReadFile(lb.Volumes[0].Source)
	if err != nil {
		t.Fatalf("lb configuration: %v", err)
	}
	checkNginx(t, string(conf), replicas)
	checkDemoPublisher(t, project, replicas)
}

// checkDemoPublisher checks that the demo publisher waits for a replica's
// internal API, then runs its script (as compose hands it to the
// container's shell) against a real gateway: messages must flow to
// channel demo, the one the demo page shows by default.
func checkDemoPublisher(t *testing.T, project *types.Project, replicas []types.ServiceConfig) {
	t.Helper()
	pub, err := project.GetService("demo-publisher")
	if err != nil {
		t.Fatal(err)
	}
	if len(pub.Entrypoint) != 2 || pub.Entrypoint[0] != "/bin/sh" || len(pub.Command) != 1 {
		t.Fatalf("demo-publisher runs %q %q, want a /bin/sh -c script", pub.Entrypoint, pub.Command)
	}
	script := pub.Command[0]
	target := ""
	for _, r := range replicas {
		if _, ok := pub.DependsOn[r.Name]; ok && strings.Contains(script, "http://"+r.Name+":8081/") {
			target = r.Name
		}
	}
	if target == "" {
		t.Fatalf("demo-publisher does not depend on the replica whose internal API it uses:\n%s", script)
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl missing: the demo publisher's script is not run")
	}
	r := startReplica(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", strings.ReplaceAll(script, "http://"+target+":8081", r.apiURL))
	cmd.WaitDelay = time.Second // the loop's curl and sleep hold its pipes
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	c := dial(t, r.publicURL)
	eventually(t, 10*time.Second, "the demo publisher created channel demo", func() bool {
		c.send(map[string]any{"type": "subscribe", "ref": "s", "channel": "demo", "since": "0-0"})
		return c.read()["type"] == "ack"
	})
	for want := 1.0; want <= 2; want++ {
		m := c.read()
		data, _ := m["data"].(map[string]any)
		if m["type"] != "message" || data["n"] != want || data["at"] == nil {
			t.Fatalf("demo publisher sent %v, want message n=%v with its time", m, want)
		}
	}
}

// checkNginx checks that the balancer proxies WebSocket upgrades and event
// streams to every replica's public port, round-robin (no ip_hash, no
// sticky cookie).
func checkNginx(t *testing.T, conf string, replicas []types.ServiceConfig) {
	t.Helper()
	for _, r := range replicas {
		if !regexp.MustCompile(`server\s+` + regexp.QuoteMeta(r.Name) + `:8080\b`).MatchString(conf) {
			t.Errorf("nginx upstream lacks %s:8080", r.Name)
		}
	}
	for _, want := range []string{"proxy_set_header Upgrade $http_upgrade", "proxy_set_header Connection $connection_upgrade", "proxy_http_version 1.1"} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx configuration lacks %q", want)
		}
	}
	// Event streams pass unbuffered and outlive the gateway's pings.
	sse := regexp.MustCompile(`(?s)location /v1/sse \{(.*?)\n        \}`).FindStringSubmatch(conf)
	if sse == nil {
		t.Error("nginx configuration has no location /v1/sse")
	} else {
		for _, want := range []string{"proxy_pass http://tslm_public", "proxy_buffering off", "proxy_http_version 1.1", "proxy_read_timeout 1h"} {
			if !strings.Contains(sse[1], want) {
				t.Errorf("nginx location /v1/sse lacks %q", want)
			}
		}
	}
	for _, sticky := range []string{"ip_hash", "sticky", "hash "} {
		if strings.Contains(conf, sticky) {
			t.Errorf("nginx configuration is sticky (%s)", sticky)
		}
	}
}
