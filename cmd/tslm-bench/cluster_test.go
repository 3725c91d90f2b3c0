package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/internal/redistest"
)

// needRedisBinaries fails the test when redis-server or redis-cli is not
// on PATH, or skips it under -short outside CI, as redistest does.
func needRedisBinaries(t *testing.T) {
	t.Helper()
	for _, name := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("CI") == "true" || !testing.Short() {
				t.Fatalf("%s is not on PATH; install Redis, or run go test -short to skip this test (not under CI=true)", name)
			}
			t.Skipf("%s is not on PATH (-short)", name)
		}
	}
}

// checkGone fails t for each pid that is still a process, and each
// directory that still exists.
func checkGone(t *testing.T, pids []int, dirs []string) {
	t.Helper()
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("redis-server %d is still there after the teardown (kill -0: %v)", pid, err)
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("directory %s is still there after the teardown (%v)", d, err)
		}
	}
}

// waitSample samples p until cond holds, failing t after 10s with the
// last sample: connections closed a moment ago may still be counted.
func waitSample(t *testing.T, p *redisProbe, what string, cond func(redisSample) bool) redisSample {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := p.sample(t.Context())
		if err == nil && cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: last sample %+v, %v", what, s, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStartRedisCluster starts a cluster of 3 masters as
// -start-redis-cluster 3 does, uses it through its URL, probes it, and
// tears it down.
func TestStartRedisCluster(t *testing.T) {
	needRedisBinaries(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := startRedisCluster(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			c.stop()
		}
	}()
	pids := c.pids()
	var dirs []string
	for _, n := range c.nodes {
		dirs = append(dirs, n.dir)
	}

	// The URL is the form go-redis's ParseClusterURL reads, naming every
	// node; each node serves a third of the slots and knows the others.
	opts, err := redis.ParseClusterURL(c.url)
	if err != nil || !slices.Equal(opts.Addrs, c.addrs()) || len(opts.Addrs) != 3 {
		t.Fatalf("URL %q: %v, %v; want the 3 nodes %v", c.url, opts, err, c.addrs())
	}
	for _, a := range c.addrs() {
		info, err := nodeText(ctx, &redis.Options{Addr: a}, "CLUSTER", "INFO")
		if err != nil || infoField(info, "cluster_state") != "ok" || infoField(info, "cluster_size") != "3" || infoField(info, "cluster_known_nodes") != "3" {
			t.Fatalf("%s: CLUSTER INFO %q, %v; want ok, 3 masters", a, info, err)
		}
	}
	cl := redis.NewClusterClient(opts)
	for i := range 30 {
		key := "k" + strconv.Itoa(i)
		if err := cl.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatalf("SET %s through the cluster client: %v", key, err)
		}
	}
	cl.Close()

	// The probe finds the three masters and sums their clients; the most
	// on one node is also told. The probe's own connections are left out.
	p, err := newRedisProbe(ctx, c.url)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	var probed []string
	for _, n := range p.nodes {
		probed = append(probed, n.Options().Addr)
	}
	if slices.Sort(probed); !slices.Equal(probed, slices.Sorted(slices.Values(c.addrs()))) {
		t.Fatalf("probed %v, want the masters %v", probed, c.addrs())
	}
	s0 := waitSample(t, p, "idle cluster", func(s redisSample) bool { return s.clients == 0 })
	if s0.nodes != 3 || s0.cpu <= 0 {
		t.Fatalf("idle sample %+v: want 3 nodes and some CPU", s0)
	}
	var conns []*redis.Client
	for _, a := range []string{c.nodes[0].addr, c.nodes[0].addr, c.nodes[1].addr} {
		rc := redis.NewClient(&redis.Options{Addr: a, PoolSize: 1})
		if err := rc.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, rc)
	}
	waitSample(t, p, "2 clients on one node, 1 on another", func(s redisSample) bool { return s.clients == 3 && s.maxClients == 2 })
	for _, rc := range conns {
		rc.Close()
	}

	// A comma-separated URL names the same seeds.
	p2, err := newRedisProbe(ctx, "redis://"+strings.Join(c.addrs(), ","))
	if err != nil || len(p2.nodes) != 3 {
		t.Fatalf("comma-separated URL: %v; want 3 nodes", err)
	}
	p2.close()
	p.close()

	c.stop()
	stopped = true
	checkGone(t, pids, dirs)
}

// TestStartRedisClusterCanceled: a cluster start that is interrupted
// (Ctrl-C) stops what it started and says so.
func TestStartRedisClusterCanceled(t *testing.T) {
	needRedisBinaries(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if c, err := startRedisCluster(ctx, 3); err == nil {
		c.stop()
		t.Fatal("a canceled start returned a cluster")
	}
	if _, err := startRedisCluster(t.Context(), 2); err == nil || !strings.Contains(err.Error(), "at least 3") {
		t.Fatalf("2 masters: %v; want refused", err)
	}
}

// TestProbeClusterMasters probes a cluster with replicas, given by URL as
// a user would: the masters only.
func TestProbeClusterMasters(t *testing.T) {
	cl := redistest.StartCluster(t, redistest.ClusterOptions{})
	p, err := newRedisProbe(t.Context(), cl.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	var probed, masters []string
	for _, n := range p.nodes {
		probed = append(probed, n.Options().Addr)
	}
	for _, m := range cl.Masters() {
		masters = append(masters, m.Addr())
	}
	slices.Sort(probed)
	slices.Sort(masters)
	if !slices.Equal(probed, masters) || len(probed) != 3 {
		t.Fatalf("probed %v, want the masters %v (of %d nodes)", probed, masters, len(cl.Nodes()))
	}
	if s, err := p.sample(t.Context()); err != nil || s.nodes != 3 {
		t.Fatalf("sample %+v, %v", s, err)
	}
}

func TestParseClusterMasters(t *testing.T) {
	nodes := "" +
		"07c3 127.0.0.1:30004@31004 slave e7d1 0 1426238317239 4 connected\n" +
		"67ed 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922\n" +
		"292f 127.0.0.1:30003@31003,node-3.example master - 0 1426238318243 3 connected 10923-16383\n" +
		"6ec2 127.0.0.1:30005@31005 master,fail - 1426238316232 0 5 disconnected\n" +
		"9a1b :30001@31001 myself,master - 0 0 1 connected 0-5460\n" +
		"aa00 :0@0 master,noaddr - 0 0 0 disconnected\n"
	got := parseClusterMasters(nodes, "127.0.0.9")
	want := []string{"127.0.0.1:30002", "127.0.0.1:30003", "127.0.0.9:30001"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestClusterURL(t *testing.T) {
	for _, tc := range []struct {
		url     string
		cluster bool
		seeds   []string
	}{
		{"redis://127.0.0.1:6379/0", false, nil},
		{"redis://127.0.0.1:26379?master_name=m&addr=127.0.0.1:26380", false, nil},
		{"redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002", true, []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"}},
		{"redis://127.0.0.1:7000,127.0.0.1:7001", true, []string{"127.0.0.1:7000", "127.0.0.1:7001"}},
		{"rediss://u:p,w@h1:7000,h2:7001/?dial_timeout=3s", true, []string{"h1:7000", "h2:7001"}},
	} {
		if got := isClusterURL(tc.url); got != tc.cluster {
			t.Errorf("isClusterURL(%q) = %v", tc.url, got)
		}
		if !tc.cluster {
			continue
		}
		opts, err := parseClusterURL(tc.url)
		if err != nil || !slices.Equal(opts.Addrs, tc.seeds) {
			t.Errorf("%q: %v, %v; want seeds %v", tc.url, opts, err, tc.seeds)
		}
	}
	opts, err := parseClusterURL("rediss://u:p,w@h1:7000,h2:7001/?dial_timeout=3s")
	if err != nil || opts.Username != "u" || opts.Password != "p,w" || opts.DialTimeout != 3*time.Second || opts.TLSConfig == nil {
		t.Fatalf("options lost in the rewriting: %+v, %v", opts, err)
	}
	if no := nodeOptions(opts, "h2:7001"); no.Addr != "h2:7001" || no.Password != "p,w" || no.TLSConfig.ServerName != "h2" || opts.TLSConfig.ServerName != "h1" {
		t.Fatalf("node options: address %s, TLS server name %q (the cluster's %q); want h2's own", no.Addr, no.TLSConfig.ServerName, opts.TLSConfig.ServerName)
	}
	if _, err := parseClusterURL("redis://u:secret@h1:70x0,h2:7001"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("a bad port: %v; want an error without the password", err)
	}
}

// TestStartRedisClusterRun runs the whole tool with -start-redis-cluster
// 3, and checks that the cluster is torn down afterwards, whether the run
// succeeded or failed.
func TestStartRedisClusterRun(t *testing.T) {
	needRedisBinaries(t)

	o, err := parseArgs(args("-target", "self-redis", "-start-redis-cluster", "3", "-scenario", "spread", "-channels", "6", "-publish", "ws"), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	results, runErr := execute(t.Context(), o, &stderr)
	log := stderr.String()
	m := regexp.MustCompile(`started a Redis Cluster of 3 masters at (\S+) \(redis-server pids \[([0-9 ]+)\]\)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("the log does not say where the cluster runs:\n%s\n(error %v)", log, runErr)
	}
	var pids []int
	for _, f := range strings.Fields(m[2]) {
		pid, _ := strconv.Atoi(f)
		pids = append(pids, pid)
	}
	if len(pids) != 3 {
		t.Fatalf("pids %v", pids)
	}
	checkGone(t, pids, nil)
	if runErr != nil || len(results) != 1 {
		t.Fatalf("%v, %d results; log:\n%s", runErr, len(results), log)
	}
	r := results[0]
	checkResult(t, *r, "self-redis", 6, 1, true)
	if r.RedisNodes == nil || *r.RedisNodes != 3 || r.RedisClientsMaxPerNode == nil || *r.RedisClientsMaxPerNode < 1 || *r.RedisClientsMaxPerNode > *r.RedisClientsMax {
		t.Fatalf("Redis nodes %v, clients at most %v, per node %v; want 3 nodes", r.RedisNodes, r.RedisClientsMax, r.RedisClientsMaxPerNode)
	}
	if !strings.Contains(log, "3 masters together") {
		t.Errorf("the summary does not say the Redis figures are 3 masters':\n%s", log)
	}
}

// TestSummaryRedisNodes: the summary tells a Cluster's figures as its
// masters' together, with the most connections on one.
func TestSummaryRedisNodes(t *testing.T) {
	res := &Result{Target: "self-redis", RedisCPUS: ptr(1.5), RedisUSPerDelivered: ptr(2.0),
		RedisNodes: ptr(3), RedisClientsMax: ptr(300), RedisClientsAtEnd: ptr(290), RedisClientsMaxPerNode: ptr(110)}
	var b strings.Builder
	summarize(&b, res)
	if want := "3 masters together: 1.50 s CPU, 2.00 µs per delivered; 300 clients at most (290 at the end), 110 at most on one master"; !strings.Contains(b.String(), want) {
		t.Errorf("summary:\n%s\nwant %q", b.String(), want)
	}
	res.RedisNodes = ptr(1)
	b.Reset()
	summarize(&b, res)
	if want := "redis       1.50 s CPU, 2.00 µs per delivered; 300 clients at most (290 at the end)\n"; !strings.Contains(b.String(), want) {
		t.Errorf("summary:\n%s\nwant %q", b.String(), want)
	}
}
