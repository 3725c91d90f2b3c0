package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelOptions configures StartSentinel. The zero value is a set without
// persistence whose primary is failed over about two seconds after it
// stops answering.
type SentinelOptions struct {
	// AOF turns on each data node's append-only file, as Options.AOF does.
	AOF bool
	// DownAfter is down-after-milliseconds: how long the primary must not
	// answer before a sentinel deems it down; 0 means 1s.
	DownAfter time.Duration
	// FailoverTimeout is failover-timeout; a sentinel whose failover
	// attempt failed retries after twice that. 0 means 3s.
	FailoverTimeout time.Duration
}

// SentinelMaster is the name the sentinels monitor the primary under.
const SentinelMaster = "tslm-primary"

const (
	sentinelReplicas = 2
	sentinelCount    = 3
	sentinelQuorum   = 2
)

// Sentinel is a private Redis Sentinel set: one primary, two replicas and
// three sentinels (quorum 2), every process a redis-server on a free
// loopback port, torn down when the test ends. Which data node is primary
// changes with failovers: ask Primary rather than remembering. A Sentinel
// is meant for one test goroutine; its methods are not safe for
// concurrent use.
type Sentinel struct {
	t         testing.TB
	opts      SentinelOptions
	data      []*Server // the first primary first
	sentinels []*Server
	clients   []*redis.Client
}

// StartSentinel starts the primary and its replicas, waits until both
// replicas are in sync, then starts the sentinels and waits until each
// sees the primary, both replicas and the two other sentinels, so that a
// failover can be agreed on at once. Without redis-server on PATH the
// test fails or is skipped as with Start (no container fallback).
func StartSentinel(t testing.TB, opts SentinelOptions) *Sentinel {
	t.Helper()
	if opts.DownAfter <= 0 {
		opts.DownAfter = time.Second
	}
	if opts.FailoverTimeout <= 0 {
		opts.FailoverTimeout = 3 * time.Second
	}
	began := time.Now()
	s := &Sentinel{t: t, opts: opts}
	dataOpts := Options{AOF: opts.AOF}
	primary := startProcess(t, dataOpts, dataArgs(""), false)
	s.data = append(s.data, primary)
	for range sentinelReplicas {
		s.data = append(s.data, startProcess(t, dataOpts, dataArgs(primary.Addr()), false))
	}
	s.waitReplicasInSync(primary)
	for range sentinelCount {
		s.sentinels = append(s.sentinels, startProcess(t, Options{}, s.sentinelArgs(primary), false))
	}
	// After the processes' own cleanups, so it runs first: clients go,
	// then every process stops at once.
	t.Cleanup(s.cleanup)
	s.waitSentinelsAgree(primary)
	t.Logf("redistest: sentinel set ready in %v", time.Since(began).Round(time.Millisecond))
	return s
}

// dataArgs is a data node's command line: a standalone server, replicating
// from primary unless it is "", that syncs at once rather than after the
// default diskless-sync delay.
func dataArgs(primary string) func(s *Server) []string {
	return func(s *Server) []string {
		args := append(s.serverArgs(), "--repl-diskless-sync-delay", "0")
		if primary != "" {
			host, port := hostPort(primary)
			args = append(args, "--replicaof", host, strconv.Itoa(port))
		}
		return args
	}
}

// sentinelArgs is a sentinel's command line. Its configuration file is
// written on first start only: the sentinel rewrites it with what it
// learns (its ID, the current primary), which a restart must keep.
func (s *Sentinel) sentinelArgs(primary *Server) func(*Server) []string {
	return func(n *Server) []string {
		conf := filepath.Join(n.dir, "sentinel.conf")
		if _, err := os.Stat(conf); errors.Is(err, os.ErrNotExist) {
			host, port := hostPort(primary.Addr())
			text := fmt.Sprintf("sentinel monitor %[1]s %[2]s %[3]d %[4]d\n"+
				"sentinel down-after-milliseconds %[1]s %[5]d\n"+
				"sentinel failover-timeout %[1]s %[6]d\n"+
				"sentinel parallel-syncs %[1]s 1\n",
				SentinelMaster, host, port, sentinelQuorum,
				s.opts.DownAfter.Milliseconds(), s.opts.FailoverTimeout.Milliseconds())
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				n.t.Fatalf("redistest: sentinel config: %v", err)
			}
		}
		return []string{conf, "--sentinel",
			"--port", strconv.Itoa(n.port), "--bind", "127.0.0.1",
			"--dir", n.dir, "--protected-mode", "no", "--loglevel", "warning"}
	}
}

func (s *Sentinel) cleanup() {
	for _, c := range s.clients {
		c.Close()
	}
	s.clients = nil
	stopAll(append(slices.Clone(s.sentinels), s.data...))
}

// MasterName is the name the sentinels know the primary by.
func (s *Sentinel) MasterName() string { return SentinelMaster }

// SentinelAddrs returns the sentinels' host:port.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, n := range s.sentinels {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL returns the sentinels and the master name as one URL of the form
// go-redis's ParseFailoverURL reads:
// redis://sentinel1?master_name=…&addr=sentinel2&addr=…
func (s *Sentinel) URL() string {
	return urlWithSeeds(s.SentinelAddrs(), "master_name="+SentinelMaster)
}

// Client returns a new failover client (redis.NewFailoverClient), closed
// when the test ends: it asks the sentinels for the primary and follows
// their switch to a new one.
func (s *Sentinel) Client() *redis.Client {
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            SentinelMaster,
		SentinelAddrs:         s.SentinelAddrs(),
		DialTimeout:           time.Second,
		ReadTimeout:           2 * time.Second,
		WriteTimeout:          2 * time.Second,
		ContextTimeoutEnabled: true,
	})
	s.clients = append(s.clients, c)
	return c
}

// Servers returns the data nodes, the one that was primary at start first.
func (s *Sentinel) Servers() []*Server { return slices.Clone(s.data) }

// Sentinels returns the sentinel processes.
func (s *Sentinel) Sentinels() []*Server { return slices.Clone(s.sentinels) }

// Primary returns the data node a running sentinel names as primary.
func (s *Sentinel) Primary() *Server {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var lastErr error
	for _, n := range s.sentinels {
		if !n.answers() {
			continue
		}
		addr, err := s.masterAddr(ctx, n)
		if err == nil {
			return s.byAddr(addr)
		}
		lastErr = err
	}
	s.t.Fatalf("redistest: no sentinel names the primary: %v", lastErr)
	return nil
}

// Replicas returns the data nodes other than the primary.
func (s *Sentinel) Replicas() []*Server {
	s.t.Helper()
	p := s.Primary()
	var out []*Server
	for _, n := range s.data {
		if n != p {
			out = append(out, n)
		}
	}
	return out
}

// KillPrimary kills the primary (SIGKILL: what it had not passed to its
// replicas is lost) and waits for the sentinels to promote a replica,
// which it returns; see WaitPromotion. Start on the old primary brings it
// back, and the sentinels make it a replica of the new one.
func (s *Sentinel) KillPrimary() *Server {
	s.t.Helper()
	old := s.Primary()
	old.Kill()
	return s.WaitPromotion(old)
}

// WaitPromotion waits until every running sentinel names the same primary
// other than old, and that node answers ROLE as a master; it returns it.
// With the default options that takes about two seconds after old stops
// answering.
func (s *Sentinel) WaitPromotion(old *Server) *Server {
	s.t.Helper()
	var promoted *Server
	waitFor(s.t, "promote a replica in place of "+old.Addr(), setTimeout, func(ctx context.Context) (bool, string) {
		promoted = nil
		for _, n := range s.sentinels {
			if !n.answers() {
				continue
			}
			addr, err := s.masterAddr(ctx, n)
			if err != nil {
				return false, err.Error()
			}
			if addr == old.Addr() {
				return false, fmt.Sprintf("sentinel %s still names %s", n.Addr(), addr)
			}
			p := s.byAddr(addr)
			if promoted != nil && p != promoted {
				return false, fmt.Sprintf("sentinels disagree: %s and %s", promoted.Addr(), addr)
			}
			promoted = p
		}
		if promoted == nil {
			return false, "no sentinel answers"
		}
		role, err := do(ctx, promoted.Addr(), "ROLE")
		if err != nil {
			return false, fmt.Sprintf("ROLE on %s: %v", promoted.Addr(), err)
		}
		if r, _ := role.([]any); len(r) == 0 || r[0] != "master" {
			return false, fmt.Sprintf("%s answers ROLE %v", promoted.Addr(), role)
		}
		return true, ""
	}, s.logs)
	return promoted
}

func (s *Sentinel) masterAddr(ctx context.Context, sentinel *Server) (string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr(), DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	hp, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
	if err != nil {
		return "", fmt.Errorf("sentinel %s: %w", sentinel.Addr(), err)
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("sentinel %s: master address %v", sentinel.Addr(), hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// waitReplicasInSync waits until primary reports every replica online.
func (s *Sentinel) waitReplicasInSync(primary *Server) {
	s.t.Helper()
	waitFor(s.t, "replicas in sync", setTimeout, func(ctx context.Context) (bool, string) {
		info, err := doText(ctx, primary.Addr(), "INFO", "replication")
		if err != nil {
			return false, err.Error()
		}
		online := strings.Count(info, "state=online")
		return online == sentinelReplicas, strings.Join(strings.Fields(info), " ")
	}, s.logs)
}

// waitSentinelsAgree waits until every sentinel monitors primary as up,
// with both replicas and both other sentinels known: before that a
// failover could lack a replica or the votes to elect a leader.
func (s *Sentinel) waitSentinelsAgree(primary *Server) {
	s.t.Helper()
	waitFor(s.t, "sentinels see the set", setTimeout, func(ctx context.Context) (bool, string) {
		for _, n := range s.sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: n.Addr(), DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
			m, err := c.Master(ctx, SentinelMaster).Result()
			c.Close()
			if err != nil {
				return false, fmt.Sprintf("sentinel %s: %v", n.Addr(), err)
			}
			if net.JoinHostPort(m["ip"], m["port"]) != primary.Addr() || m["flags"] != "master" ||
				m["num-slaves"] != strconv.Itoa(sentinelReplicas) ||
				m["num-other-sentinels"] != strconv.Itoa(sentinelCount-1) {
				return false, fmt.Sprintf("sentinel %s: %v", n.Addr(), m)
			}
		}
		return true, ""
	}, s.logs)
}

func (s *Sentinel) byAddr(addr string) *Server {
	s.t.Helper()
	for _, n := range s.data {
		if n.Addr() == addr {
			return n
		}
	}
	s.t.Fatalf("redistest: the sentinels name %s, which is none of the set's data nodes", addr)
	return nil
}

func (s *Sentinel) logs() string { return logsOf(append(slices.Clone(s.data), s.sentinels...)) }
