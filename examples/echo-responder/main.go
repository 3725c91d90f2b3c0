// Command echo-responder answers every request on the channels named on
// its command line with a reply whose data is the request's data: the
// smallest responder, for trying requests and for measuring round trips.
//
//	go run ./examples/echo-responder orders
//
// With TSLM_REDIS_URL set (one server, or a Sentinel set) it serves
// straight from Redis (docs/redis.md), with the gateway's key prefix
// TSLM_REDIS_PREFIX (default "tslm:") in the consumer group "tslm", which
// it shares with apps serving through the gateway. Otherwise it serves through the gateway's internal WebSocket at
// TSLM_INTERNAL_URL (default ws://127.0.0.1:8081/v1/ws), presenting
// TSLM_CREDENTIAL (an API key or publisher token granting serve, when the
// listener checks credentials) as Authorization: Bearer. TSLM_LOG_LEVEL
// (debug, info, warn, error) sets its log level. SIGINT or SIGTERM stops
// it: requests it was handling go to other responders.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/responder"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.LookupEnv); err != nil {
		fmt.Fprintln(os.Stderr, "echo-responder:", err)
		stop()
		os.Exit(1)
	}
}

// run serves channels until ctx is done, configured by the variables
// lookup finds.
func run(ctx context.Context, channels []string, lookup func(string) (string, bool)) error {
	if len(channels) == 0 || channels[0] == "-h" || channels[0] == "--help" {
		return errors.New("usage: echo-responder CHANNEL... (through Redis when TSLM_REDIS_URL is set, else through TSLM_INTERNAL_URL)")
	}
	var level slog.Level
	if v, ok := lookup("TSLM_LOG_LEVEL"); ok {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("TSLM_LOG_LEVEL: %w", err)
		}
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)

	echo := func(_ context.Context, r responder.Request) (json.RawMessage, error) {
		return r.Data, nil
	}
	var err error
	if url, ok := lookup("TSLM_REDIS_URL"); ok && url != "" {
		client, addr, perr := redisClient(url)
		if perr != nil {
			return fmt.Errorf("TSLM_REDIS_URL: %w", perr)
		}
		defer client.Close()
		prefix := responder.DefaultPrefix
		if p, ok := lookup("TSLM_REDIS_PREFIX"); ok {
			if p == "" {
				return errors.New("TSLM_REDIS_PREFIX is set but empty: unset it for the default " + responder.DefaultPrefix)
			}
			prefix = p
		}
		logger.Info("echo-responder: serving from Redis", "addr", addr, "prefix", prefix, "channels", channels)
		err = responder.ServeRedis(ctx, responder.RedisConfig{Client: client, Prefix: prefix, Group: responder.DefaultGroup}, echo, channels...)
	} else {
		url := responder.DefaultURL
		if u, ok := lookup("TSLM_INTERNAL_URL"); ok && u != "" {
			url = u
		}
		logger.Info("echo-responder: serving through the gateway", "url", url, "channels", channels)
		cfg := responder.WebSocketConfig{URL: url}
		if cred, ok := lookup("TSLM_CREDENTIAL"); ok && cred != "" {
			cfg.Header = http.Header{"Authorization": {"Bearer " + cred}}
		}
		err = responder.ServeWebSocket(ctx, cfg, echo, channels...)
	}
	if err == nil {
		logger.Info("echo-responder: stopped")
	}
	return err
}

// redisClient connects to TSLM_REDIS_URL as the gateway reads it: one
// server, or a Sentinel set when the query names master_name
// (docs/redis.md#sentinel). addr describes it for the log.
func redisClient(url string) (client *redis.Client, addr string, err error) {
	if strings.Contains(url, "master_name=") {
		opt, err := redis.ParseFailoverURL(url)
		if err != nil {
			return nil, "", err
		}
		return redis.NewFailoverClient(opt), "sentinel master " + opt.MasterName, nil
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, "", err
	}
	return redis.NewClient(opt), opt.Addr, nil
}
