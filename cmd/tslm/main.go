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
	"syscall"

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
	redis.SetLogger(redisLogger{logger.With("component", "redis")})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg := st.Gateway.WithDefaults()
	g, err := gateway.Start(ctx, cfg, logger)
	if err != nil {
		return envconfig.Explain(err)
	}
	<-ctx.Done()
	stop()
	logger.Info("shutting down: telling clients to reconnect elsewhere", "grace", cfg.ShutdownGrace)
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := g.Shutdown(drainCtx); err != nil {
		logger.Warn("grace period over: remaining connections cut", "err", err)
	}
	logger.Info("stopped")
	return nil
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

// redisLogger adapts slog to go-redis's logging interface.
type redisLogger struct{ logger *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.logger.WarnContext(ctx, fmt.Sprintf(format, v...))
}
