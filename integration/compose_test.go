package integration

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/tslm/tslm/internal/clientip"
)

// haproxyConfigPath is where the haproxy image reads its configuration.
const haproxyConfigPath = "/usr/local/etc/haproxy/haproxy.cfg"

// TestComposeTopology parses docker-compose.yml with the compose-spec loader
// (no Docker engine runs in CI) and checks the topology docs/deploy.md
// promises: Redis with AOF on a named volume; the gateway as one service
// scaled to several replicas; HAProxy finding them by DNS, without
// stickiness; health checks everywhere and start-up in their order; the
// drain not cut short; the balancer, and it alone, trusted for client
// addresses.
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
	service := func(name string) types.ServiceConfig {
		t.Helper()
		s, err := project.GetService(name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	redis, tslm, lb := service("redis"), service("tslm"), service("lb")

	for _, s := range project.Services {
		if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) < 2 {
			t.Errorf("service %s has no health check", s.Name)
		}
		for _, p := range s.Ports {
			// Everything but the public port stays on this host.
			if p.Target != 8080 && p.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes port %d on %q, want 127.0.0.1 only", s.Name, p.Target, p.HostIP)
			}
		}
	}
	for _, dep := range []struct{ from, to string }{{"tslm", "redis"}, {"lb", "tslm"}, {"demo-publisher", "tslm"}} {
		s := service(dep.from)
		if d, ok := s.DependsOn[dep.to]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s depends on %s with %+v, want condition service_healthy", dep.from, dep.to, s.DependsOn[dep.to])
		}
	}

	// Redis: AOF, on a named volume.
	cmd := strings.Join(redis.Command, " ")
	for _, want := range []string{"--appendonly yes", "--appendfsync everysec"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("redis command %q lacks %s", cmd, want)
		}
	}
	if !slices.ContainsFunc(redis.Volumes, func(v types.ServiceVolumeConfig) bool {
		_, named := project.Volumes[v.Source]
		return v.Type == types.VolumeTypeVolume && named && v.Target == "/data"
	}) {
		t.Errorf("redis volumes %+v: want a named volume on /data, where the AOF lives", redis.Volumes)
	}

	checkGatewayService(t, root, tslm)
	checkBalancer(t, project, lb, tslm)
	checkDemoPublisher(t, service("demo-publisher"))
}

// checkGatewayService checks the gateway's one service, which "docker
// compose up --scale tslm=N" scales.
func checkGatewayService(t *testing.T, root string, tslm types.ServiceConfig) {
	t.Helper()
	if tslm.Build == nil || tslm.Build.Context != root {
		t.Errorf("tslm build %+v, want this repository's Dockerfile", tslm.Build)
	}
	if tslm.Deploy == nil || tslm.Deploy.Replicas == nil || *tslm.Deploy.Replicas < 2 {
		t.Errorf("tslm deploy %+v, want replicas: 2 or more", tslm.Deploy)
	}
	if tslm.ContainerName != "" || len(tslm.Ports) > 0 {
		t.Errorf("tslm has container_name %q and ports %+v: a scaled service can have neither", tslm.ContainerName, tslm.Ports)
	}
	env := func(name string) string {
		if v := tslm.Environment[name]; v != nil {
			return *v
		}
		return ""
	}
	if !strings.HasPrefix(env("TSLM_REDIS_URL"), "redis://redis:") {
		t.Errorf("TSLM_REDIS_URL = %q, want the redis service", env("TSLM_REDIS_URL"))
	}
	// The ports haproxy.cfg names, on every interface of the container.
	if env("TSLM_PUBLIC_ADDRS") != ":8080" || env("TSLM_INTERNAL_ADDRS") != ":8081" {
		t.Errorf("TSLM_PUBLIC_ADDRS = %q, TSLM_INTERNAL_ADDRS = %q; want :8080 and :8081", env("TSLM_PUBLIC_ADDRS"), env("TSLM_INTERNAL_ADDRS"))
	}
	if env("TSLM_DEMO") != "true" {
		t.Errorf("TSLM_DEMO = %q, want true: the first start shows the demo page", env("TSLM_DEMO"))
	}
	if hc := tslm.HealthCheck; hc == nil || len(hc.Test) < 3 || hc.Test[0] != "CMD" || hc.Test[1] != "/tslm" || hc.Test[2] != "healthcheck" {
		t.Errorf("tslm health check %+v, want CMD /tslm healthcheck (the image has no shell)", hc)
	}

	// Docker's SIGKILL must not come before the drain is over.
	drain, err1 := time.ParseDuration(env("TSLM_DRAIN_DELAY"))
	grace, err2 := time.ParseDuration(env("TSLM_SHUTDOWN_GRACE"))
	if err1 != nil || err2 != nil || drain <= 0 {
		t.Fatalf("TSLM_DRAIN_DELAY = %q, TSLM_SHUTDOWN_GRACE = %q: want both set (%v, %v)", env("TSLM_DRAIN_DELAY"), env("TSLM_SHUTDOWN_GRACE"), err1, err2)
	}
	if tslm.StopGracePeriod == nil || time.Duration(*tslm.StopGracePeriod) <= drain+grace {
		t.Errorf("tslm stop_grace_period %v, want more than the drain delay and grace (%v)", tslm.StopGracePeriod, drain+grace)
	}
}

// checkBalancer checks lb: the haproxy image with deploy/haproxy.cfg, the
// internal frontend on loopback only, and a fixed address that the
// gateways trust, alone, for X-Forwarded-For.
func checkBalancer(t *testing.T, project *types.Project, lb, tslm types.ServiceConfig) {
	t.Helper()
	if !strings.HasPrefix(lb.Image, "haproxy:2.6") {
		t.Errorf("lb image %q, want haproxy:2.6 (the version integration/balancer_test.go runs)", lb.Image)
	}
	mounted := slices.ContainsFunc(lb.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeBind && v.Target == haproxyConfigPath && v.ReadOnly &&
			v.Source == filepath.Join(project.WorkingDir, "deploy", "haproxy.cfg")
	})
	if !mounted {
		t.Fatalf("lb volumes %+v: want deploy/haproxy.cfg on %s, read-only", lb.Volumes, haproxyConfigPath)
	}
	published := map[uint32]string{}
	for _, p := range lb.Ports {
		published[p.Target] = p.HostIP
	}
	if ip, ok := published[8080]; !ok || ip != "" {
		t.Errorf("lb publishes 8080 on %q (published: %v), want every interface: the public frontend", ip, ok)
	}
	if ip, ok := published[8081]; !ok || ip != "127.0.0.1" {
		t.Errorf("lb publishes 8081 on %q (published: %v), want 127.0.0.1 only: the internal frontend", ip, ok)
	}
	conf, err := os.ReadFile(filepath.Join(project.WorkingDir, "deploy", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	checkHAProxyConfig(t, string(conf))

	// Trusted proxies: lb's fixed address, in the network's subnet but
	// outside the range Docker hands out, and nothing else of the subnet.
	var netName string
	var lbAddr netip.Addr
	for name, n := range lb.Networks {
		if n != nil && n.Ipv4Address != "" {
			netName = name
			lbAddr, err = netip.ParseAddr(n.Ipv4Address)
			if err != nil {
				t.Fatalf("lb ipv4_address: %v", err)
			}
		}
	}
	if netName == "" {
		t.Fatal("lb has no fixed ipv4_address: the gateways cannot trust it alone")
	}
	if _, ok := tslm.Networks[netName]; !ok {
		t.Errorf("tslm is not on lb's network %s", netName)
	}
	pools := project.Networks[netName].Ipam.Config
	if len(pools) != 1 {
		t.Fatalf("network %s has ipam pools %+v, want one subnet", netName, pools)
	}
	subnet, err1 := netip.ParsePrefix(pools[0].Subnet)
	dynamic, err2 := netip.ParsePrefix(pools[0].IPRange)
	if err1 != nil || err2 != nil {
		t.Fatalf("network %s: subnet %q, ip_range %q: %v, %v", netName, pools[0].Subnet, pools[0].IPRange, err1, err2)
	}
	if !subnet.Contains(lbAddr) || dynamic.Contains(lbAddr) {
		t.Errorf("lb's address %s: want it in subnet %s and outside ip_range %s, which other containers take from", lbAddr, subnet, dynamic)
	}
	trusted := ""
	if v := tslm.Environment["TSLM_TRUSTED_PROXIES"]; v != nil {
		trusted = *v
	}
	proxies, err := clientip.Parse(strings.Split(trusted, ","))
	if err != nil {
		t.Fatalf("TSLM_TRUSTED_PROXIES = %q: %v", trusted, err)
	}
	var wrong []string
	for a := subnet.Masked().Addr(); subnet.Contains(a); a = a.Next() {
		if proxies.Trusted(a) != (a == lbAddr) {
			wrong = append(wrong, a.String())
		}
	}
	if len(wrong) > 0 {
		t.Errorf("TSLM_TRUSTED_PROXIES = %q is wrong about %d addresses of %s (%s first): want lb's address %s alone trusted", trusted, len(wrong), subnet, wrong[0], lbAddr)
	}
}

// checkHAProxyConfig checks what compose relies on in deploy/haproxy.cfg:
// replicas found by DNS, checked on /readyz, and no stickiness. HAProxy
// itself runs it in integration/balancer_test.go.
func checkHAProxyConfig(t *testing.T, conf string) {
	t.Helper()
	var lines []string // without comments
	for _, l := range strings.Split(conf, "\n") {
		if l, _, _ = strings.Cut(l, "#"); strings.TrimSpace(l) != "" {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	code := strings.Join(lines, "\n")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^resolvers docker\n(.+\n)*?nameserver \S+ \S+:53$`),
		regexp.MustCompile(`(?m)^server-template \S+ \d+ tslm:8080$`),
		regexp.MustCompile(`(?m)^server-template \S+ \d+ tslm:8081$`),
		regexp.MustCompile(`(?m)^default-server .*\bresolvers docker\b`),
		regexp.MustCompile(`(?m)^default-server .*\bcheck port 8081\b`),
		regexp.MustCompile(`(?m)^option httpchk GET /readyz$`),
		regexp.MustCompile(`(?m)^option forwardfor$`),
	} {
		if !want.MatchString(code) {
			t.Errorf("deploy/haproxy.cfg lacks %s", want)
		}
	}
	for _, sticky := range []string{"stick", "cookie", "balance source", "hash"} {
		if strings.Contains(code, sticky) {
			t.Errorf("deploy/haproxy.cfg is sticky (%s)", sticky)
		}
	}
	// Event streams carry browsers' tokens in the query string.
	if m := regexp.MustCompile(`(?m)^log-format .*%(\{[^}]*\})?(r|HU)\b`).FindString(code); m != "" {
		t.Errorf("deploy/haproxy.cfg logs query strings, and so tokens: %s", m)
	}
}

// checkDemoPublisher runs the demo publisher's script (as compose hands it
// to the container's shell) against a real gateway: messages must flow to
// channel demo, the one the demo page shows by default, and its health
// check must pass while they do and fail once they stop.
func checkDemoPublisher(t *testing.T, pub types.ServiceConfig) {
	t.Helper()
	if len(pub.Entrypoint) != 2 || pub.Entrypoint[0] != "/bin/sh" || len(pub.Command) != 1 {
		t.Fatalf("demo-publisher runs %q %q, want a /bin/sh -c script", pub.Entrypoint, pub.Command)
	}
	if to := pub.Environment["PUBLISH_TO"]; to == nil || *to != "http://tslm:8081" {
		t.Errorf("demo-publisher PUBLISH_TO = %v, want http://tslm:8081: any replica's internal API", to)
	}
	if stamp := pub.Environment["STAMP_FILE"]; stamp == nil || *stamp == "" {
		t.Fatal("demo-publisher has no STAMP_FILE for its health check")
	}
	hc := pub.HealthCheck
	if hc == nil || len(hc.Test) != 2 || hc.Test[0] != "CMD-SHELL" {
		t.Fatalf("demo-publisher health check %+v, want a CMD-SHELL", hc)
	}
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl missing: the demo publisher's script cannot run")
		}
		t.Skip("curl missing: the demo publisher's script is not run")
	}
	r := startReplica(t, nil)
	stamp := filepath.Join(t.TempDir(), "last-publish")
	env := append(os.Environ(), "PUBLISH_TO="+r.apiURL, "STAMP_FILE="+stamp)
	healthy := func() bool {
		cmd := exec.Command("/bin/sh", "-c", hc.Test[1])
		cmd.Env = env
		return cmd.Run() == nil
	}
	if healthy() {
		t.Error("demo-publisher is healthy before it published anything")
	}

	ctx, cancel := context.WithCancel(t.Context())
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", pub.Command[0])
	cmd.Env = env
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
	if !healthy() {
		t.Error("demo-publisher is unhealthy while it publishes")
	}
	cancel()
	cmd.Wait()
	// A publisher whose last success is a minute old is unhealthy.
	if err := os.WriteFile(stamp, []byte(strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if healthy() {
		t.Error("demo-publisher is healthy a minute after its last publish")
	}
}
