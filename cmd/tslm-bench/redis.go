package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// localRedis is a redis-server this tool started (-start-redis, or a node
// of -start-redis-cluster).
type localRedis struct {
	addr   string // 127.0.0.1:port
	url    string
	cmd    *exec.Cmd
	dir    string
	log    *bytes.Buffer
	exited chan struct{}
}

// startRedis runs redis-server from PATH on a free loopback port, without
// persistence (a benchmark's data is thrown away), and waits until it
// answers.
func startRedis(ctx context.Context) (*localRedis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("-start-redis: %w (install Redis, e.g. apt-get install redis-server)", err)
	}
	return startRedisProcess(ctx, bin, false)
}

// startRedisProcess runs redis-server bin in a directory of its own on a
// free loopback port, in cluster mode (with a cluster bus port chosen as
// freely) when cluster, and waits until it answers PING.
func startRedisProcess(ctx context.Context, bin string, cluster bool) (*localRedis, error) {
	dir, err := os.MkdirTemp("", "tslm-bench-redis-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 { // a free port can be taken between probing and binding
		nports := 1
		if cluster {
			nports = 2
		}
		ports, err := freePorts(nports)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		port := strconv.Itoa(ports[0])
		addr := "127.0.0.1:" + port
		r := &localRedis{addr: addr, url: "redis://" + addr + "/0", dir: dir, log: new(bytes.Buffer), exited: make(chan struct{})}
		args := []string{"--port", port, "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--dir", dir, "--protected-mode", "no", "--loglevel", "warning"}
		if cluster {
			// The bus port is explicit: the default, port + 10000, is past
			// 65535 for a good part of Linux's ephemeral range.
			args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
				"--cluster-port", strconv.Itoa(ports[1]))
		}
		r.cmd = exec.Command(bin, args...)
		r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
		// Its own process group: a Ctrl-C meant for the tool must not
		// stop Redis under the running benchmark.
		r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := r.cmd.Start(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		go func() { r.cmd.Wait(); close(r.exited) }()
		if lastErr = r.await(ctx); lastErr == nil {
			return r, nil
		}
		r.cmd.Process.Kill()
		<-r.exited
		if ctx.Err() != nil {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("redis-server did not start: %w", lastErr)
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		// Held open until all are chosen, so that they differ.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (r *localRedis) await(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := c.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-r.exited:
			return fmt.Errorf("exited: %s", strings.TrimSpace(r.log.String()))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PING answer after 10s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *localRedis) pid() int { return r.cmd.Process.Pid }

// stop ends redis-server and removes its directory.
func (r *localRedis) stop() { stopRedis([]*localRedis{r}) }

// stopRedis ends every server at once, each with SIGTERM and, after a
// common grace period, SIGKILL, and removes their directories: tearing
// down a cluster takes one grace period at most, not one per node.
func stopRedis(servers []*localRedis) {
	for _, r := range servers {
		r.cmd.Process.Signal(syscall.SIGTERM)
	}
	grace := time.After(5 * time.Second)
	for _, r := range servers {
		select {
		case <-r.exited:
		case <-grace:
			r.cmd.Process.Kill()
			<-r.exited
		}
		os.RemoveAll(r.dir)
	}
}

// redisProbe reads the CPU time and client count of every Redis node a
// target uses, one (a standalone Redis) or a Redis Cluster's masters,
// each on a connection of its own, which it leaves out of the count.
type redisProbe struct {
	nodes []*redis.Client
}

// newRedisProbe probes the Redis of rawURL: the one server of a
// standalone URL, or every master the seeds of a Cluster URL (see
// isClusterURL) list in CLUSTER NODES. Replicas are left out: the run's
// commands go to masters, and a standalone Redis has no replica to
// compare with. The list is taken once, so a failover during the run is
// not followed.
func newRedisProbe(ctx context.Context, rawURL string) (*redisProbe, error) {
	if !isClusterURL(rawURL) {
		opts, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("redis URL: %w", unquoteURL(err))
		}
		return &redisProbe{nodes: []*redis.Client{probeClient(opts)}}, nil
	}
	copts, err := parseClusterURL(rawURL)
	if err != nil {
		return nil, err
	}
	masters, err := clusterMasters(ctx, copts)
	if err != nil {
		return nil, err
	}
	p := &redisProbe{}
	for _, addr := range masters {
		p.nodes = append(p.nodes, probeClient(nodeOptions(copts, addr)))
	}
	return p, nil
}

// probeClient keeps a single connection, so that the probe's share of
// connected_clients is known: one.
func probeClient(opts *redis.Options) *redis.Client {
	opts.PoolSize, opts.MinIdleConns, opts.MaxIdleConns = 1, 1, 1
	return redis.NewClient(opts)
}

func (p *redisProbe) close() {
	if p == nil {
		return // no Redis to probe
	}
	for _, c := range p.nodes {
		c.Close()
	}
}

// redisSample is one reading of INFO on every node, summed.
type redisSample struct {
	cpu     time.Duration // used_cpu_sys + used_cpu_user
	clients int           // connected_clients, the probe's own left out
	// maxClients is the most clients of one node; with one node, clients.
	maxClients int
	nodes      int
}

func (p *redisProbe) sample(ctx context.Context) (redisSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sum := redisSample{nodes: len(p.nodes)}
	for _, c := range p.nodes {
		info, err := c.Info(ctx, "cpu", "clients").Result()
		if err != nil {
			return redisSample{}, fmt.Errorf("INFO on %s: %w", c.Options().Addr, err)
		}
		s, err := parseInfo(info)
		if err != nil {
			return redisSample{}, fmt.Errorf("%s: %w", c.Options().Addr, err)
		}
		sum.cpu += s.cpu
		sum.clients += s.clients
		sum.maxClients = max(sum.maxClients, s.clients)
	}
	return sum, nil
}

// parseInfo reads the fields redisSample needs from INFO's text.
func parseInfo(info string) (redisSample, error) {
	var s redisSample
	var seen int
	for line := range strings.Lines(info) {
		name, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch name {
		case "used_cpu_sys", "used_cpu_user":
			secs, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return s, fmt.Errorf("INFO %s: %v", name, err)
			}
			s.cpu += time.Duration(secs * float64(time.Second))
			seen++
		case "connected_clients":
			n, err := strconv.Atoi(value)
			if err != nil {
				return s, fmt.Errorf("INFO %s: %v", name, err)
			}
			s.clients = n - 1
			seen++
		}
	}
	if seen != 3 {
		return s, errors.New("INFO lacks used_cpu_sys, used_cpu_user or connected_clients")
	}
	return s, nil
}
