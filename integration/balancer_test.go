package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tslm/tslm/internal/dnstest"
	"github.com/tslm/tslm/internal/redistest"
	"github.com/tslm/tslm/internal/syncbuf"
)

// The load balancer of docker-compose.yml, in the tests: the real haproxy
// binary with the very file compose mounts, deploy/haproxy.cfg, finding
// the replicas by DNS as it does there. Like Docker's DNS, dnstest answers
// the service name with one address per running replica, and every
// replica listens on the same two ports, each on its own loopback address.

// haproxyConfig is the file compose mounts, relative to this package.
const haproxyConfig = "../deploy/haproxy.cfg"

// needHAProxy returns the haproxy binary. Without one the test fails under
// CI=true (.ci/run installs it), and is skipped elsewhere, saying why.
func needHAProxy(t testing.TB) string {
	t.Helper()
	if path, err := exec.LookPath("haproxy"); err == nil {
		return path
	}
	// Debian installs it in /usr/sbin, which is not on every user's PATH.
	for _, path := range []string{"/usr/sbin/haproxy", "/usr/local/sbin/haproxy"} {
		if _, err := os.Stat(path); err == nil {
			return path
		}
	}
	msg := "haproxy not found: the tests through the real load balancer need it (Debian: apt-get install haproxy)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true: failing instead of skipping")
	}
	t.Skip(msg + "; skipped")
	return ""
}

// freeTCPPort returns a port no socket listens on, on any address: the
// replicas all bind it, each on its own loopback address.
func freeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// haproxy is the balancer, running in the foreground.
type haproxy struct {
	cmd  *exec.Cmd
	out  *syncbuf.Buffer // its log lines (log stdout) and alerts
	gone chan struct{}   // closed once it exited

	publicURL  string // ws://…/v1/ws of the public frontend
	publicHTTP string // http://… of the public frontend
	apiURL     string // http://… of the internal frontend
	healthURL  string // its monitor URI
}

// haproxyEdits turns deploy/haproxy.cfg into the test's configuration:
// each edit must match exactly once, so that a change of the file that
// the test would silently no longer follow fails it instead.
func haproxyEdits(t testing.TB, cfg string, edits [][2]string) string {
	t.Helper()
	for _, e := range edits {
		if n := strings.Count(cfg, e[0]); n != 1 {
			t.Fatalf("%s holds %q %d times, want once: the test rewrites exactly that text", haproxyConfig, e[0], n)
		}
	}
	for _, e := range edits {
		cfg = strings.Replace(cfg, e[0], e[1], 1)
	}
	return cfg
}

// startHAProxy runs deploy/haproxy.cfg asking dnsAddr for the replicas,
// which listen on replicaPublic and replicaInternal, and waits until its
// monitor URI answers. It is stopped at cleanup.
func startHAProxy(t testing.TB, dnsAddr string, replicaPublic, replicaInternal int) *haproxy {
	t.Helper()
	bin := needHAProxy(t)
	src, err := os.ReadFile(haproxyConfig)
	if err != nil {
		t.Fatal(err)
	}
	public, internal, health := freeTCPPort(t), freeTCPPort(t), freeTCPPort(t)
	cfg := haproxyEdits(t, string(src), [][2]string{
		{"nameserver dns 127.0.0.11:53", "nameserver dns " + dnsAddr},
		{"bind :8080", fmt.Sprintf("bind 127.0.0.1:%d", public)},
		{"bind :8081", fmt.Sprintf("bind 127.0.0.1:%d", internal)},
		{"bind 127.0.0.1:8404", fmt.Sprintf("bind 127.0.0.1:%d", health)},
		{"tslm:8080", fmt.Sprintf("tslm:%d", replicaPublic)},
		{"tslm:8081", fmt.Sprintf("tslm:%d", replicaInternal)},
		{"check port 8081", fmt.Sprintf("check port %d", replicaInternal)},
	})
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &haproxy{
		out:        new(syncbuf.Buffer),
		gone:       make(chan struct{}),
		publicURL:  fmt.Sprintf("ws://127.0.0.1:%d/v1/ws", public),
		publicHTTP: fmt.Sprintf("http://127.0.0.1:%d", public),
		apiURL:     fmt.Sprintf("http://127.0.0.1:%d", internal),
		healthURL:  fmt.Sprintf("http://127.0.0.1:%d/health", health),
	}
	// -db: in the foreground, not daemonized, as in its container.
	h.cmd = exec.Command(bin, "-db", "-f", path)
	h.cmd.Stdout, h.cmd.Stderr = h.out, h.out
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("starting haproxy: %v", err)
	}
	go func() { h.cmd.Wait(); close(h.gone) }()
	t.Cleanup(func() {
		h.cmd.Process.Signal(syscall.SIGTERM) // a hard stop: no draining
		select {
		case <-h.gone:
		case <-time.After(10 * time.Second):
			h.cmd.Process.Kill()
			<-h.gone
		}
		if t.Failed() {
			t.Logf("haproxy's log:\n%s", h.tail(200))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for httpStatus(http.MethodGet, h.healthURL, "") != http.StatusOK {
		select {
		case <-h.gone:
			t.Fatalf("haproxy exited: %v\n%s", h.cmd.ProcessState, h.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy's monitor URI did not answer 200 within 20s:\n%s", h.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return h
}

// tail returns the last n lines haproxy printed.
func (h *haproxy) tail(n int) string {
	lines := strings.Split(strings.TrimRight(h.out.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// serverUp matches the lines in which haproxy reports a server up or
// down; serverAddr those in which the resolvers give a server-template
// slot its address (or take it away).
var (
	serverState = regexp.MustCompile(`Server (tslm_\w+)/(tslm\d+) (?:\('[^']*'\) )?is (?:going )?(UP|DOWN)`)
	serverAddr  = regexp.MustCompile(`(tslm_\w+)/(tslm\d+) changed its IP from (\S*) to (\S+)`)
)

// upServers returns, per backend, the addresses of the servers that
// haproxy's log last reported up: where the health checks of
// deploy/haproxy.cfg let it send new connections.
func (h *haproxy) upServers() map[string]map[string]bool {
	addr := map[string]string{} // backend/server → IP
	up := map[string]bool{}     // backend/server → up
	for line := range strings.Lines(h.out.String()) {
		if m := serverAddr.FindStringSubmatch(line); m != nil {
			addr[m[1]+"/"+m[2]] = m[4]
		}
		if m := serverState.FindStringSubmatch(line); m != nil {
			up[m[1]+"/"+m[2]] = m[3] == "UP"
		}
	}
	out := map[string]map[string]bool{}
	for srv, isUp := range up {
		backend, _, _ := strings.Cut(srv, "/")
		if isUp && addr[srv] != "" {
			if out[backend] == nil {
				out[backend] = map[string]bool{}
			}
			out[backend][addr[srv]] = true
		}
	}
	return out
}

// cluster is the topology of docker-compose.yml as processes: one
// redis-server with AOF, replicas of the real binary on it, each on its
// own loopback address with the same two ports, dnstest answering "tslm"
// with the running ones, and haproxy in front.
type cluster struct {
	t     *testing.T
	redis *redistest.Server
	dns   *dnstest.Server
	lb    *haproxy
	env   map[string]string
	// The ports every replica listens on.
	publicPort, internalPort int
	nodes                    []*node
}

// node is one replica slot: its address stays, its process comes and
// goes, as a compose container's under its restart policy.
type node struct {
	ip   netip.Addr
	proc *process // nil while stopped
	// idleGoroutines is go_goroutines of its process once listening.
	idleGoroutines float64
}

func (n *node) apiURL(c *cluster) string {
	return fmt.Sprintf("http://%s", net.JoinHostPort(n.ip.String(), strconv.Itoa(c.internalPort)))
}

// startCluster starts Redis, dnstest, haproxy and n replicas with env,
// and waits until haproxy sends to each of them.
func startCluster(t *testing.T, n int, env map[string]string) *cluster {
	t.Helper()
	needHAProxy(t)
	c := &cluster{
		t:            t,
		redis:        redistest.Start(t, redistest.Options{AOF: true}),
		dns:          dnstest.Start(t),
		env:          env,
		publicPort:   freeTCPPort(t),
		internalPort: freeTCPPort(t),
	}
	for range n {
		c.add()
	}
	c.lb = startHAProxy(t, c.dns.Addr(), c.publicPort, c.internalPort)
	c.waitRouted()
	return c
}

// add starts a replica on the next loopback address (127.0.0.2, .3, …).
func (c *cluster) add() *node {
	c.t.Helper()
	n := &node{ip: netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + len(c.nodes))})}
	c.nodes = append(c.nodes, n)
	c.start(n)
	return n
}

// start starts n's process, waits until it listens and tells DNS.
func (c *cluster) start(n *node) {
	c.t.Helper()
	env := map[string]string{
		"TSLM_REDIS_URL":      c.redis.URL(),
		"TSLM_PUBLIC_ADDRS":   net.JoinHostPort(n.ip.String(), strconv.Itoa(c.publicPort)),
		"TSLM_INTERNAL_ADDRS": net.JoinHostPort(n.ip.String(), strconv.Itoa(c.internalPort)),
	}
	for k, v := range c.env {
		env[k] = v
	}
	n.proc = startBinary(c.t, env)
	n.proc.addr(c.t, "public")
	n.proc.addr(c.t, "internal")
	g, err := scrape(n.apiURL(c), "go_goroutines")
	if err != nil {
		c.t.Fatalf("metrics of %s: %v", n.ip, err)
	}
	n.idleGoroutines = g
	c.publishDNS()
}

// stopped records that n's process has exited, and tells DNS.
func (c *cluster) stopped(n *node) {
	n.proc = nil
	c.publishDNS()
}

// running returns the nodes whose process runs.
func (c *cluster) running() []*node {
	var out []*node
	for _, n := range c.nodes {
		if n.proc != nil {
			out = append(out, n)
		}
	}
	return out
}

// publishDNS answers "tslm" with the running replicas, as Docker's DNS
// answers a service's name with its running containers.
func (c *cluster) publishDNS() {
	var ips []netip.Addr
	for _, n := range c.running() {
		ips = append(ips, n.ip)
	}
	c.dns.Set("tslm", ips...)
}

// waitRouted waits until haproxy's health checks have marked every running
// replica up in both backends, and no other: from then on, new clients
// and publishes reach exactly the running replicas.
func (c *cluster) waitRouted() {
	c.t.Helper()
	want := map[string]bool{}
	for _, n := range c.running() {
		want[n.ip.String()] = true
	}
	var got map[string]map[string]bool
	deadline := time.Now().Add(30 * time.Second)
	for {
		got = c.lb.upServers()
		if sameSet(got["tslm_public"], want) && sameSet(got["tslm_internal"], want) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("haproxy did not route to exactly the running replicas %v within 30s: up %v; %d DNS queries answered", want, got, c.dns.Queries())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// connections returns n's open public WebSocket connections, from its
// /metrics.
func (c *cluster) connections(n *node) (float64, error) {
	return scrape(n.apiURL(c), `tslm_connections{listener="public"}`)
}

// scrape returns the value of the sample named series (name and labels,
// as /metrics prints them) from the internal listener at apiURL, 0 when
// absent; it may be called from any goroutine.
func scrape(apiURL, series string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s/metrics: %s", apiURL, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, nil
}

// signal sends sig to n's process.
func (c *cluster) signal(n *node, sig syscall.Signal) {
	c.t.Helper()
	if err := n.proc.cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("signal %v to %s: %v", sig, n.ip, err)
	}
}

// TestBalancerServesTheProtocol runs deploy/haproxy.cfg as shipped in
// front of two replicas it finds by DNS: WebSocket upgrades and event
// streams pass its public frontend, spread by leastconn; the HTTP API
// passes its internal frontend, not the public one, and a publish retried
// with its idempotency key, whichever replica each attempt reaches, is
// stored once.
func TestBalancerServesTheProtocol(t *testing.T) {
	c := startCluster(t, 2, nil)
	api := &replica{apiURL: c.lb.apiURL}
	api.create(t, "lb", nil)
	var subs []*client
	for range 4 {
		cl := dial(t, c.lb.publicURL)
		cl.subscribe("lb", nil)
		subs = append(subs, cl)
	}
	for _, n := range c.nodes {
		eventually(t, 10*time.Second, fmt.Sprintf("replica %s does not hold 2 of the 4 subscribers", n.ip), func() bool {
			k, err := c.connections(n)
			return err == nil && k == 2
		})
	}
	sse := openSSE(t, c.lb.publicHTTP+"/v1/sse?channel=lb", "")

	status, first := api.publishKeyed(t, "lb", map[string]any{"n": 1}, "lb-1")
	if status != http.StatusCreated {
		t.Fatalf("publish through the internal frontend: %d %v", status, first)
	}
	status, again := api.publishKeyed(t, "lb", map[string]any{"n": 1}, "lb-1")
	if status != http.StatusOK || again["duplicate"] != true || again["id"] != first["id"] {
		t.Fatalf("the retry: %d %v, want 200, a duplicate of %v", status, again, first["id"])
	}
	id := first["id"].(string)
	for _, cl := range subs {
		cl.expect(map[string]any{"type": "message", "channel": "lb", "id": id})
	}
	for {
		ev, ok := sse.next(t)
		if !ok {
			t.Fatal("the event stream ended")
		}
		if ev.event == "" {
			if !strings.Contains(ev.data, `"id":"`+id+`"`) {
				t.Fatalf("event stream message %s, want id %s", ev.data, id)
			}
			break
		}
	}
	if s := httpStatus(http.MethodPost, c.lb.publicHTTP+"/v1/channels/lb/messages", `{"n":2}`); s != http.StatusNotFound && s != http.StatusMethodNotAllowed {
		t.Errorf("the HTTP API through the public frontend: %d, want 404 or 405", s)
	}
	sameIDs(t, "the stream", streamIDs(t, c.redis.Client(), "lb"), []string{id})
}
