package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// minClusterMasters is the fewest masters redis-cli --cluster create
// accepts. Redis itself serves a cluster of one or two masters, but a
// Cluster URL names at least two seeds, and one master is -start-redis's
// case anyway.
const minClusterMasters = 3

// redisCluster is a Redis Cluster this tool started (-start-redis-cluster):
// masters only, no replicas, no persistence, each a redis-server of its own
// on free loopback ports.
type redisCluster struct {
	nodes []*localRedis
	url   string // the seeds in the form go-redis's ParseClusterURL reads
}

// startRedisCluster starts masters redis-servers in cluster mode, joins
// them with redis-cli --cluster create (the slots split evenly, no
// replicas) and waits until every node reports cluster_state:ok and knows
// every other. On an error, or when ctx ends first, it stops what it
// started.
func startRedisCluster(ctx context.Context, masters int) (_ *redisCluster, err error) {
	if masters < minClusterMasters {
		return nil, fmt.Errorf("-start-redis-cluster %d: redis-cli --cluster create needs at least %d masters", masters, minClusterMasters)
	}
	var bins [2]string
	for i, name := range []string{"redis-server", "redis-cli"} {
		if bins[i], err = exec.LookPath(name); err != nil {
			return nil, fmt.Errorf("-start-redis-cluster: %w (install Redis, e.g. apt-get install redis-server, which brings redis-cli)", err)
		}
	}
	c := &redisCluster{}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	for range masters {
		n, err := startRedisProcess(ctx, bins[0], true)
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, n)
	}
	addrs := c.addrs()
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(cctx, bins[1], args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := waitClusterOK(cctx, addrs); err != nil {
		return nil, err
	}
	q := make([]string, 0, len(addrs)-1)
	for _, a := range addrs[1:] {
		q = append(q, "addr="+a)
	}
	c.url = "redis://" + addrs[0] + "?" + strings.Join(q, "&")
	return c, nil
}

func (c *redisCluster) addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.addr
	}
	return addrs
}

func (c *redisCluster) pids() []int {
	pids := make([]int, len(c.nodes))
	for i, n := range c.nodes {
		pids[i] = n.pid()
	}
	return pids
}

// stop ends every node and removes their directories.
func (c *redisCluster) stop() { stopRedis(c.nodes) }

// waitClusterOK polls every node until each reports cluster_state:ok, all
// 16384 slots served and every node known: until then a client that
// asks the wrong node for the slot map could get an incomplete one.
func waitClusterOK(ctx context.Context, addrs []string) error {
	var last string
	for {
		ok := true
		for _, a := range addrs {
			info, err := nodeText(ctx, &redis.Options{Addr: a}, "CLUSTER", "INFO")
			if err != nil {
				ok, last = false, err.Error()
				break
			}
			if infoField(info, "cluster_state") != "ok" || infoField(info, "cluster_slots_ok") != "16384" ||
				infoField(info, "cluster_known_nodes") != fmt.Sprint(len(addrs)) {
				ok, last = false, fmt.Sprintf("%s: cluster_state:%s cluster_slots_ok:%s cluster_known_nodes:%s", a,
					infoField(info, "cluster_state"), infoField(info, "cluster_slots_ok"), infoField(info, "cluster_known_nodes"))
				break
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the cluster is not ok (%v); last: %s", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// nodeText runs one command whose answer is text on the node of opts,
// with a client of its own.
func nodeText(ctx context.Context, opts *redis.Options, args ...any) (string, error) {
	opts.MaxRetries = -1
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return c.Do(ctx, args...).Text()
}

// infoField returns field's value in INFO-style text ("field:value"
// lines), or "" when it is absent.
func infoField(text, field string) string {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// isClusterURL reports whether rawURL names a Redis Cluster's seeds, as
// the gateway reads it (backlog.NewRedisClient): several comma-separated
// hosts, or addr parameters without master_name (which make a Sentinel
// URL).
func isClusterURL(rawURL string) bool {
	if strings.Contains(urlHost(rawURL), ",") {
		return true
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	q := u.Query()
	return q.Has("addr") && !q.Has("master_name")
}

// urlHost returns the host part of a URL without parsing it: url.Parse
// refuses "host1:port1,host2:port2" as a bad port.
func urlHost(rawURL string) string {
	start, end := hostSpan(rawURL)
	return rawURL[start:end]
}

// hostSpan returns where the host part of rawURL starts and ends: after
// "//" and any userinfo, before the path, query or fragment.
func hostSpan(rawURL string) (start, end int) {
	if i := strings.Index(rawURL, "://"); i >= 0 {
		start = i + 3
	}
	end = len(rawURL)
	if i := strings.IndexAny(rawURL[start:], "/?#"); i >= 0 {
		end = start + i
	}
	if i := strings.LastIndex(rawURL[start:end], "@"); i >= 0 {
		start += i + 1
	}
	return start, end
}

// parseClusterURL reads a Cluster URL, in the addr parameter form or the
// comma-separated one, which it rewrites into the former for go-redis.
func parseClusterURL(rawURL string) (*redis.ClusterOptions, error) {
	if start, end := hostSpan(rawURL); strings.Contains(rawURL[start:end], ",") {
		seeds := strings.Split(rawURL[start:end], ",")
		u, err := url.Parse(rawURL[:start] + seeds[0] + rawURL[end:])
		if err != nil {
			return nil, fmt.Errorf("redis Cluster URL: %w", unquoteURL(err))
		}
		q := u.Query()
		for _, s := range seeds[1:] {
			q.Add("addr", s)
		}
		u.RawQuery = q.Encode()
		rawURL = u.String()
	}
	opts, err := redis.ParseClusterURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis Cluster URL: %w", unquoteURL(err))
	}
	return opts, nil
}

// unquoteURL drops the URL a *url.Error quotes, password and all.
func unquoteURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// clusterMasters asks each seed of opts for CLUSTER NODES and returns the
// masters any of them lists (not failed, with an address), in the order
// first seen. Seeds that do not answer are passed over while one does.
func clusterMasters(ctx context.Context, opts *redis.ClusterOptions) ([]string, error) {
	var masters []string
	var lastErr error
	answered := false
	for _, seed := range opts.Addrs {
		text, err := nodeText(ctx, nodeOptions(opts, seed), "CLUSTER", "NODES")
		if err != nil {
			lastErr = fmt.Errorf("CLUSTER NODES on %s: %w", seed, err)
			continue
		}
		answered = true
		seedHost, _, _ := net.SplitHostPort(seed)
		for _, m := range parseClusterMasters(text, seedHost) {
			if !slices.Contains(masters, m) {
				masters = append(masters, m)
			}
		}
	}
	switch {
	case !answered:
		return nil, lastErr
	case len(masters) == 0:
		return nil, errors.New("CLUSTER NODES lists no master")
	}
	return masters, nil
}

// nodeOptions are the options of a client of one node of the cluster of
// opts: its credentials and TLS, the server name that of the node (go-redis
// takes the first seed's for every node).
func nodeOptions(opts *redis.ClusterOptions, addr string) *redis.Options {
	o := &redis.Options{Addr: addr, Username: opts.Username, Password: opts.Password, Protocol: opts.Protocol}
	if opts.TLSConfig != nil {
		o.TLSConfig = opts.TLSConfig.Clone()
		o.TLSConfig.ServerName, _, _ = net.SplitHostPort(addr)
	}
	return o
}

// parseClusterMasters returns the addresses of the masters CLUSTER NODES
// lists, each line "<id> <ip:port@cport[,hostname]> <flags> …", leaving
// out those flagged failed or without an address. A node that does not
// know its own IP lists itself as ":port": that is seedHost's.
func parseClusterMasters(text, seedHost string) []string {
	var out []string
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		flags := strings.Split(f[2], ",")
		if !slices.Contains(flags, "master") || slices.ContainsFunc(flags, func(fl string) bool {
			return fl == "fail" || fl == "fail?" || fl == "noaddr" || fl == "handshake"
		}) {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		addr, _, _ = strings.Cut(addr, ",")
		host, port, err := net.SplitHostPort(addr)
		if err != nil || port == "0" {
			continue
		}
		if host == "" {
			host = seedHost
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	return out
}
