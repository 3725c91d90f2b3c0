// Command tslm-bench drives a TSLM gateway, or the bare broadcaster it
// starts as the ceiling, with WebSocket subscribers and publishers, and
// measures what it delivers, how fast, and what it costs: delivered
// messages per second, end-to-end latency percentiles, CPU per delivered
// message of the gateway and of Redis (and of the tool itself, apart),
// the gateway's memory and its Redis connections. Every run checks that
// each subscriber received every acknowledged message of its channel
// once and in order, and exits 1 when one was lost or duplicated.
//
//	tslm-bench -target self-redis -start-redis -scenario spread -compare bare
//	tslm-bench -target self-redis -start-redis-cluster 3 -scenario spread -channels 10000
//	tslm-bench -target ws://127.0.0.1:8080/v1/ws -api http://127.0.0.1:8081 -gateway-pid 4242
//
// A progress line goes to standard error every second, then a summary
// for humans; one JSON line per run goes to standard output.
//
// Exit codes: 0 every run verified, 1 a run failed its verification or
// could not run, 2 a usage error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if kind := os.Getenv(serveVar); kind != "" {
		os.Exit(serveMain(kind))
	}
	// Package responder (-serve redis) logs through the default logger;
	// its INFO lines about joining groups are noise in a load tool.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the command line's.
type options struct {
	spec        spec
	target      string
	api         string
	redisURL    string
	gatewayPID  int
	startRedis  bool
	allowRemote bool
	maxConns    int
	compare     string
	count       int
	cpuprofile  string

	startCluster int    // -start-redis-cluster's masters; 0 for none
	startedRedis string // the URL of the redis-server -start-redis started, or of -start-redis-cluster's seeds

	// Tests only: the bare broadcaster loses or repeats every n-th
	// delivery (bare.Config), so that the verification can be seen to
	// catch it.
	loseEvery, repeatEvery int
}

const usageText = `tslm-bench: load a TSLM gateway (or the bare broadcaster) and measure it.

usage: tslm-bench -target TARGET [-scenario fanout|spread|idle|storm|reqreply] [flags]

Targets:
  bare                     the bare broadcaster: gorilla/websocket, no backlog (the ceiling)
  self-memory              a gateway on the in-memory backlog
  self-redis=redis://…     a gateway on that Redis (or -start-redis for one of its own,
                           -start-redis-cluster N for a Redis Cluster of N masters of its own)
  ws://HOST:PORT/v1/ws     a running gateway's public listener (with -api, -redis, -gateway-pid)
The tool starts bare and self-* itself, each in a process of its own on
loopback, so that their CPU and memory are theirs alone; self-* gateways
read the TSLM_* variables of the environment (not TSLM_CONFIG).

Scenarios: fanout = 1 channel × 1000 subscribers, spread = 1000 channels ×
1 subscriber; -channels and -subscribers (per channel) change the counts.
  idle   -connections (10 000) subscribers on -channels (100), no traffic:
         the gateway's RSS and Go heap per connection, after -settle; then
         one message per channel proves every connection still subscribed
  storm  -connections subscribers connect fresh (the baseline), then are
         all dropped at once; -messages (100) per channel are published
         while they are down; all reconnect, resuming with since = the
         last ID each received; the time until every one has caught up,
         over the baseline's; the gateway's RSS idle, at peak and after
         (bare has no backlog: its storm is skipped, its baseline kept)
  reqreply  -requesters (100) public connections send request frames
         (timeout_ms = -timeout), requester i on channel i % -channels
         (10), each keeping -inflight (4) unanswered, or all together
         at -rate requests/s; -responders (2) internal apps serve every
         channel and answer each request with its data echoed beside a
         marker: -serve ws (default, the documented way on either
         backlog: serve/reply frames on the internal listener's
         WebSocket) or -serve redis (package responder, consumer group
         tslm, straight from Redis: self-redis or -redis, not a
         Cluster; its replies are FCALL tslm_publish, notified as the
         gateway's own are). A self-* gateway gets
         TSLM_PUBLIC_ALLOW=subscribe,request and TSLM_PUBLIC_RATE=0
         unless set; a URL target must allow request on its public
         listener. Reports answered requests/s, round-trip latency
         (request sent → reply received), timeouts, and gateway and
         Redis CPU per round trip; every request must get exactly one
         answer, its own reply. No -compare bare: the bare broadcaster
         routes no requests, and an answer made inside it would skip
         the responder's hop the gateway's round trip has, so there is
         no ceiling to compare with.

Many connections: each side holds one file descriptor per connection. The
tool raises its soft limit (RLIMIT_NOFILE) to what the run needs, up to
the hard limit, and the servers it starts inherit it; above the hard
limit it stops at once: raise it (ulimit -Hn as root, LimitNOFILE in
systemd, nofile in /etc/security/limits.conf). For 50 000 connections on
one machine, as root:
  ulimit -n 200000                                    # this shell
  sysctl -w net.ipv4.ip_local_port_range="1024 65535"  # ephemeral ports
  sysctl -w net.core.somaxconn=65535                  # accept backlog
  sysctl -w net.ipv4.tcp_max_syn_backlog=65535
  sysctl -w net.ipv4.tcp_mem="786432 1048576 1572864" # pages, for the sockets' buffers
  sysctl -w fs.nr_open=1048576 fs.file-max=2097152
and pass -max-conns 50000 -local-addrs 4: connections to one address and
port are unique by source address and port, ~64 000 per source address at
most; 127.0.0.1–127.0.0.4 all reach loopback on Linux. Where the hard
limit cannot be raised (a container), cmd/tslm-bench/vm.sh runs the tool
in a throwaway VM (qemu) whose init does all of the above.

Exit codes: 0 every run verified, 1 a run failed or lost/duplicated a
message, 2 usage error.

flags:
`

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// parseArgs reads the command line into options.
func parseArgs(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("tslm-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.target, "target", "", "what to load: bare, self-memory, self-redis[=URL], or a gateway's public ws:// URL")
	fs.StringVar(&o.api, "api", "http://127.0.0.1:8081", "with a URL target: the gateway's internal listener (HTTP API, and /v1/ws for -publish ws)")
	fs.StringVar(&o.redisURL, "redis", "", "with a URL target: its Redis (with a Cluster URL, every master is measured), for -publish xadd and Redis's CPU and connections")
	fs.IntVar(&o.gatewayPID, "gateway-pid", 0, "with a URL target: the gateway's process on this machine, for its CPU and memory")
	fs.BoolVar(&o.startRedis, "start-redis", false, "for -target self-redis: start redis-server from PATH on a free loopback port, without persistence")
	fs.IntVar(&o.startCluster, "start-redis-cluster", 0, "for -target self-redis: start a Redis Cluster of `N` masters (3 or more, no replicas, no persistence) from redis-server and redis-cli on PATH, on free loopback ports")
	fs.BoolVar(&o.allowRemote, "allow-remote", false, "allow addresses that are not loopback")
	fs.IntVar(&o.maxConns, "max-conns", 20000, "refuse a run that needs more WebSocket connections than this")
	fs.StringVar(&o.compare, "compare", "", `"bare": run the same load against the bare broadcaster first, and report the target's ratios to it`)
	fs.IntVar(&o.count, "count", 1, "measure `N` times, with -compare bare as N pairs (bare, then the target against it); stderr ends with the median and range of each figure, as this machine's speed drifts between runs")
	fs.StringVar(&o.spec.scenario, "scenario", "fanout", "fanout (1 channel × N subscribers), spread (N channels × 1 subscriber), idle (-connections at rest: memory per connection), storm (-connections dropped at once, resuming -messages each) or reqreply (-requesters asking, -responders answering)")
	fs.IntVar(&o.spec.requesters, "requesters", 100, "reqreply: requesters, one public connection each, spread over -channels")
	fs.IntVar(&o.spec.inflight, "inflight", 4, "reqreply without -rate: requests each requester keeps unanswered (the gateway's TSLM_MAX_INFLIGHT_REQUESTS, 100 by default, bounds it)")
	fs.IntVar(&o.spec.responders, "responders", 2, "reqreply: internal apps, each serving every channel")
	fs.StringVar(&o.spec.serve, "serve", "ws", "reqreply: how responders serve: ws (serve frames on the internal listener, either backlog) or redis (consumer group tslm in Redis, package responder)")
	fs.DurationVar(&o.spec.timeout, "timeout", 5*time.Second, "reqreply: each request's timeout_ms; a timeout fails the run")
	fs.IntVar(&o.spec.conns, "connections", 10000, "idle and storm: subscribers, one connection each, spread over -channels")
	fs.IntVar(&o.spec.messages, "messages", 100, "storm: messages published to each channel while its subscribers are down")
	fs.DurationVar(&o.spec.settle, "settle", 5*time.Second, "idle and storm: the wait before reading the gateway's memory (after connecting, and after the storm)")
	fs.BoolVar(&o.spec.gc, "gc", false, "idle and storm: a server the tool started collects its garbage and returns free memory to the OS (debug.FreeOSMemory) before each memory reading, so that it shows what the connections hold")
	fs.IntVar(&o.spec.localAddrs, "local-addrs", 1, "subscribers connect from 127.0.0.1 … 127.0.0.`N` in turn: past ~28 000 connections to one address the ephemeral ports run out")
	fs.IntVar(&o.spec.channels, "channels", 0, "channels (default: the scenario's)")
	fs.IntVar(&o.spec.subscribers, "subscribers", 0, "subscribers per channel, one connection each (default: the scenario's)")
	fs.IntVar(&o.spec.publishers, "publishers", 8, "publishers, each with one publish in flight, each cycling over every channel")
	fs.StringVar(&o.spec.publish, "publish", "api", "how publishers publish: api (HTTP POST), ws (the internal WebSocket), fcall (straight into Redis with FCALL tslm_publish) or xadd (a plain XADD, which followers find with their poll, within TSLM_POLL_INTERVAL, unless a notified append follows)")
	fs.Float64Var(&o.spec.rate, "rate", 0, "messages per second from all publishers together (reqreply: requests per second from all requesters); 0 = as fast as they go (reqreply: -inflight each)")
	fs.IntVar(&o.spec.size, "size", 64, "bytes of each message's (reqreply: request's) data (at least the ~50 its header takes)")
	fs.DurationVar(&o.spec.duration, "duration", 10*time.Second, "how long to publish; the run then stops by itself")
	fs.DurationVar(&o.spec.drain, "drain", 10*time.Second, "the longest wait for deliveries after publishing stops")
	fs.IntVar(&o.spec.maxLen, "max-len", 1000, "max_len of the channels the run creates")
	fs.BoolVar(&o.spec.allowGaps, "allow-gaps", false, "do not fail a run for gap frames (and the losses they announce)")
	fs.StringVar(&o.spec.redisPrefix, "redis-prefix", "tslm:", "the gateway's TSLM_REDIS_PREFIX, for -publish xadd")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of each server the tool starts, over publishing and draining, to `PREFIX`-<target>.pprof (go tool pprof)")
	fs.IntVar(&o.spec.dialers, "dialers", 64, "connections opened (and channels created) at a time")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if conns := o.spec.scenario == "idle" || o.spec.scenario == "storm"; conns && !set["drain"] {
		o.spec.drain = 2 * time.Minute // thousands of connections catching up take longer than a drain
	} else if !conns {
		o.spec.conns = 0 // a count of subscribers per channel instead
	}
	if set["connections"] && o.spec.conns == 0 {
		return nil, usagef("-connections must be at least 1")
	}
	return o, o.check()
}

// check completes and validates o.
func (o *options) check() error {
	sp := &o.spec
	switch sp.scenario {
	case "fanout":
		sp.channels, sp.subscribers = or(sp.channels, 1), or(sp.subscribers, 1000)
	case "spread":
		sp.channels, sp.subscribers = or(sp.channels, 1000), or(sp.subscribers, 1)
	case "idle", "storm":
		sp.channels = or(sp.channels, 100)
		if sp.subscribers != 0 {
			return usagef("-scenario %s counts -connections in all, not -subscribers per channel", sp.scenario)
		}
		if sp.conns < 1 {
			return usagef("-connections must be at least 1")
		}
		sp.subscribers = (sp.conns + sp.channels - 1) / sp.channels
	case "reqreply":
		sp.channels = or(sp.channels, 10)
		switch {
		case sp.subscribers != 0:
			return usagef("-scenario reqreply has -requesters, not -subscribers")
		case sp.requesters < 1 || sp.inflight < 1 || sp.responders < 1:
			return usagef("-requesters, -inflight and -responders must be at least 1")
		case sp.timeout < time.Millisecond:
			return usagef("-timeout %s: want at least 1ms", sp.timeout)
		case sp.serve != "ws" && sp.serve != "redis":
			return usagef("-serve %q: want ws or redis", sp.serve)
		case o.target == "bare" || o.compare == "bare":
			return usagef("-scenario reqreply cannot run against the bare broadcaster: it routes no requests, " +
				"and one answering them itself would skip the responder's hop, so there is no ceiling to compare with")
		}
	default:
		return usagef("-scenario %q: want fanout, spread, idle, storm or reqreply", sp.scenario)
	}
	switch {
	case sp.messages < 1 || sp.settle < 0:
		return usagef("-messages must be at least 1, -settle not negative")
	case sp.scenario == "storm" && sp.maxLen <= sp.messages:
		return usagef("-max-len %d must be above -messages %d: a backlog trimmed past a subscriber's last ID cannot resume it", sp.maxLen, sp.messages)
	case sp.localAddrs < 1 || sp.localAddrs > 254:
		return usagef("-local-addrs %d: want 1 to 254", sp.localAddrs)
	case sp.localAddrs > 1 && o.allowRemote:
		return usagef("-local-addrs is for a gateway on loopback")
	}
	switch {
	case o.target == "":
		return usagef("-target is required: bare, self-memory, self-redis[=URL] or a ws:// URL")
	case sp.channels < 1 || sp.scenario != "reqreply" && sp.subscribers < 1 || sp.publishers < 1:
		return usagef("-channels, -subscribers and -publishers must be at least 1")
	case sp.duration <= 0 || sp.drain < 0 || sp.rate < 0 || sp.size < 0 || sp.maxLen < 1 || sp.dialers < 1:
		return usagef("-duration must be positive; -drain, -rate and -size not negative; -max-len and -dialers at least 1")
	case sp.publish != "api" && sp.publish != "ws" && sp.publish != "xadd" && sp.publish != "fcall":
		return usagef("-publish %q: want api, ws, fcall or xadd", sp.publish)
	case o.compare != "" && o.compare != "bare":
		return usagef("-compare %q: only bare can be compared with", o.compare)
	case o.compare == "bare" && o.target == "bare":
		return usagef("-compare bare: the target is bare already")
	case o.count < 1:
		return usagef("-count %d: want at least 1", o.count)
	case sp.connections() > o.maxConns:
		return usagef("the run needs %d connections, over -max-conns %d", sp.connections(), o.maxConns)
	}
	selfRedis := o.target == "self-redis" || strings.HasPrefix(o.target, "self-redis=")
	urlTarget := strings.HasPrefix(o.target, "ws://") || strings.HasPrefix(o.target, "wss://")
	if !urlTarget && o.target != "bare" && o.target != "self-memory" && !selfRedis {
		return usagef("-target %q: want bare, self-memory, self-redis[=URL] or a ws:// URL", o.target)
	}
	switch {
	case o.startCluster < 0 || o.startCluster > 0 && o.startCluster < minClusterMasters:
		return usagef("-start-redis-cluster %d: a Redis Cluster needs at least %d masters here (redis-cli --cluster create refuses fewer, "+
			"and a Cluster URL names two seeds or more); for one Redis use -start-redis", o.startCluster, minClusterMasters)
	case o.startRedis && o.startCluster > 0:
		return usagef("-start-redis and -start-redis-cluster: choose one")
	case o.target == "self-redis" && !o.startRedis && o.startCluster == 0:
		return usagef("-target self-redis needs a Redis: self-redis=redis://HOST:PORT, -start-redis or -start-redis-cluster N")
	case o.startRedis && o.target != "self-redis":
		return usagef("-start-redis is for -target self-redis (without a URL)")
	case o.startCluster > 0 && o.target != "self-redis":
		return usagef("-start-redis-cluster is for -target self-redis (without a URL)")
	}
	if !urlTarget && (o.gatewayPID != 0 || o.redisURL != "") {
		return usagef("-gateway-pid and -redis are for a URL target: the tool knows its own servers")
	}
	redisURL := o.redisURL
	if selfRedis {
		redisURL = strings.TrimPrefix(strings.TrimPrefix(o.target, "self-redis"), "=")
	}
	direct := sp.publish == "xadd" || sp.publish == "fcall"
	if direct && !(selfRedis || urlTarget && o.redisURL != "") {
		return usagef("-publish %s needs a Redis target: self-redis, or a URL target with -redis", sp.publish)
	}
	if direct && (o.startCluster > 0 || isClusterURL(redisURL)) {
		return usagef("-publish %s publishes to one Redis, not a Cluster: use -publish api or ws", sp.publish)
	}
	if sp.scenario == "reqreply" && sp.serve == "redis" {
		if !(selfRedis || urlTarget && o.redisURL != "") {
			return usagef("-serve redis needs a Redis target: self-redis, or a URL target with -redis")
		}
		if o.startCluster > 0 || isClusterURL(redisURL) {
			return usagef("-serve redis serves from one Redis here, not a Cluster: use -serve ws")
		}
	}
	if !o.allowRemote {
		checks := map[string]string{}
		if urlTarget {
			checks["-target"], checks["-api"] = o.target, o.api
		}
		if isClusterURL(redisURL) {
			seeds, err := parseClusterURL(redisURL)
			if err != nil {
				return &usageError{err.Error()}
			}
			for _, a := range seeds.Addrs {
				checks["-redis seed "+a] = "redis://" + a
			}
		} else if redisURL != "" {
			checks["-redis"] = redisURL
		}
		for name, u := range checks {
			if err := checkLoopback(name, u); err != nil {
				return &usageError{err.Error()}
			}
		}
	}
	return nil
}

func or(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "tslm-bench: %v (see -h)\n", err)
		return 2
	}
	results, err := execute(ctx, o, stderr)
	for _, res := range results {
		json.NewEncoder(stdout).Encode(res)
	}
	if err != nil {
		fmt.Fprintln(stderr, "tslm-bench:", err)
		return 1
	}
	for _, res := range results {
		if !res.Verify.OK {
			return 1
		}
	}
	return 0
}

// execute runs the bare broadcaster if compared with, then the target,
// and returns their results in that order.
func execute(ctx context.Context, o *options, stderr io.Writer) ([]*Result, error) {
	if err := raiseFileLimit(o.spec.connections()); err != nil {
		return nil, err
	}
	if o.startRedis {
		r, err := startRedis(ctx)
		if err != nil {
			return nil, err
		}
		defer r.stop()
		o.startedRedis = r.url
		fmt.Fprintf(stderr, "tslm-bench: started redis-server at %s\n", r.url)
	}
	if o.startCluster > 0 {
		c, err := startRedisCluster(ctx, o.startCluster)
		if err != nil {
			return nil, err
		}
		defer c.stop()
		o.startedRedis = c.url
		fmt.Fprintf(stderr, "tslm-bench: started a Redis Cluster of %d masters at %s (redis-server pids %v)\n", len(c.nodes), c.url, c.pids())
	}
	var results []*Result
	names := []string{o.target}
	if o.compare == "bare" {
		names = []string{"bare", o.target}
	}
	for round := 1; round <= max(o.count, 1); round++ {
		var bare *Result // this round's
		for _, name := range names {
			t, err := openTarget(ctx, name, o)
			if err != nil {
				return results, err
			}
			r := &bench{spec: o.spec, tgt: t, progress: stderr}
			if o.cpuprofile != "" {
				r.cpuprofile = o.cpuprofile + "-" + t.name + ".pprof"
				if o.count > 1 {
					r.cpuprofile = fmt.Sprintf("%s-%s-%d.pprof", o.cpuprofile, t.name, round)
				}
			}
			res, err := r.measure(ctx)
			t.close()
			if err != nil {
				return results, fmt.Errorf("%s: %w", name, err)
			}
			switch {
			case name == "bare":
				bare = res
			case bare == nil:
			case res.Idle != nil || res.Storm != nil:
				res.compareConns(bare)
			default:
				res.compare(bare)
			}
			summarize(stderr, res)
			results = append(results, res)
			if ctx.Err() != nil {
				return results, nil
			}
		}
	}
	if o.count > 1 {
		summarizeRounds(stderr, results, o.target)
	}
	return results, nil
}

// raiseFileLimit makes sure this process may open conns connections and
// some files besides, raising its soft limit up to the hard one.
func raiseFileLimit(conns int) error {
	need := uint64(conns) + 256
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil // not knowable: let the connections tell
	}
	if lim.Cur >= need {
		return nil
	}
	if lim.Max < need {
		return fmt.Errorf("%d connections need about %d open files; the hard limit is %d: raise it (ulimit -Hn, or LimitNOFILE in systemd) and run again",
			conns, need, lim.Max)
	}
	lim.Cur = need
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}
