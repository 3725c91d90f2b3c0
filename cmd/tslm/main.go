// Command tslm runs a TSLM gateway replica, configured by the TOML file
// TSLM_CONFIG names, if any, and then by TSLM_* environment variables, a
// variable that is set winning over the file (see README.md and
// docs/config.md).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/config"
	"github.com/tslm/tslm/gateway"
	"github.com/tslm/tslm/internal/envconfig"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheck(os.Args[2:], os.Stdout, os.Stderr))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tslm:", err)
		os.Exit(1)
	}
}

func run() error {
	st, fileWarnings, err := load()
	if err != nil {
		return err
	}
	opts := &slog.HandlerOptions{Level: st.LogLevel}
	var handler slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if st.LogFormat == "json" {
		handler = slog.NewJSONHandler(os.Stderr, opts)
	}
	logger := slog.New(handler)
	slog.SetDefault(logger)
	if st.ConfigFile != "" {
		logger.Info("config file read", "file", st.ConfigFile)
	}
	for _, w := range append(fileWarnings, st.Warnings...) {
		logger.Warn(w)
	}
	// go-redis logs connection trouble through its own global logger, in
	// plain text: route it into the structured log instead.
	redis.SetLogger(newRedisLogger(logger.With("component", "redis")))

	// The first signal cancels ctx: it stops a start-up that waits (an
	// OpenID provider slow to answer, say), or starts the drain.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg := st.Gateway.WithDefaults()
	g, err := gateway.Start(ctx, cfg, logger)
	if err != nil {
		return envconfig.Explain(err)
	}
	<-ctx.Done()
	// Later signals go to sigs, taken before ctx lets go of them so that
	// none falls back to the default (exit at once): a second one cuts
	// the drain delay and the grace short (an operator's second Ctrl-C,
	// an orchestrator in a hurry).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	stop()
	drain(g, cfg, logger, sigs)
	logger.Info("stopped")
	return nil
}

// drain runs the stop sequence docs/deploy.md describes for operators:
// /readyz turns 503 at once, clients stay for the drain delay while load
// balancers take the replica out, then every client is told to reconnect
// elsewhere and given the grace period to go. A signal in sigs skips what
// is left of the delay, then of the grace.
func drain(g *gateway.Gateway, cfg gateway.Config, logger *slog.Logger, sigs <-chan os.Signal) {
	g.Drain()
	if cfg.DrainDelay > 0 {
		logger.Info("draining: waiting for load balancers to stop sending clients", "drain_delay", cfg.DrainDelay)
		select {
		case <-time.After(cfg.DrainDelay):
		case <-sigs:
			logger.Info("second signal: drain delay skipped")
		}
	}
	logger.Info("shutting down: telling clients to reconnect elsewhere", "grace", cfg.ShutdownGrace)
	graceCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	go func() {
		select {
		case <-sigs:
			logger.Info("second signal: grace period cut short")
			cancel()
		case <-graceCtx.Done():
		}
	}()
	if err := g.Shutdown(graceCtx); err != nil {
		logger.Warn("grace period over: remaining connections cut", "err", err)
	}
}

// load reads the config file TSLM_CONFIG names, if any, then the
// variables over it.
func load() (envconfig.Settings, []string, error) {
	environ := envconfig.Environ()
	var file config.File
	// An empty TSLM_CONFIG is LoadOver's to refuse, with the others.
	if path := environ[envconfig.ConfigVar]; strings.TrimSpace(path) != "" {
		var err error
		if file, err = config.Load(path); err != nil {
			return envconfig.Settings{}, nil, err
		}
	}
	st, err := envconfig.LoadOver(file.Config, environ)
	return st, file.Warnings, err
}

// redisLogger adapts slog to go-redis's logging interface. go-redis logs
// every failed dial, tens a second while Redis is down, which would bury
// the one line the backlog logs for the outage: each of its messages (by
// format) is logged at most once per redisLogEvery, with the count of the
// lines left out since.
type redisLogger struct {
	logger *slog.Logger
	every  time.Duration
	now    func() time.Time

	mu   sync.Mutex
	last map[string]redisLogState
}

type redisLogState struct {
	at      time.Time
	dropped int
}

const redisLogEvery = 30 * time.Second

func newRedisLogger(logger *slog.Logger) *redisLogger {
	return &redisLogger{logger: logger, every: redisLogEvery, now: time.Now, last: make(map[string]redisLogState)}
}

func (l *redisLogger) Printf(ctx context.Context, format string, v ...any) {
	now := l.now()
	l.mu.Lock()
	st, seen := l.last[format]
	if seen && now.Sub(st.at) < l.every {
		st.dropped++
		l.last[format] = st
		l.mu.Unlock()
		return
	}
	l.last[format] = redisLogState{at: now}
	l.mu.Unlock()
	if st.dropped > 0 {
		l.logger.WarnContext(ctx, fmt.Sprintf(format, v...), "similar_lines_dropped", st.dropped)
		return
	}
	l.logger.WarnContext(ctx, fmt.Sprintf(format, v...))
}
