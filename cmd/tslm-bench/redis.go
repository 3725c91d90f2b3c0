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

// localRedis is a redis-server this tool started (-start-redis).
type localRedis struct {
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
	dir, err := os.MkdirTemp("", "tslm-bench-redis-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 { // a free port can be taken between probing and binding
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		r := &localRedis{url: "redis://127.0.0.1:" + strconv.Itoa(port) + "/0", dir: dir, log: new(bytes.Buffer), exited: make(chan struct{})}
		r.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--dir", dir, "--protected-mode", "no", "--loglevel", "warning")
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
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("redis-server did not start: %w", lastErr)
}

func (r *localRedis) await(ctx context.Context) error {
	opts, _ := redis.ParseURL(r.url)
	opts.MaxRetries = -1
	c := redis.NewClient(opts)
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

// stop ends redis-server and removes its directory.
func (r *localRedis) stop() {
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(5 * time.Second):
		r.cmd.Process.Kill()
		<-r.exited
	}
	os.RemoveAll(r.dir)
}

// redisProbe reads Redis's CPU time and client count on a connection of
// its own, which it leaves out of the count.
type redisProbe struct{ c *redis.Client }

func newRedisProbe(url string) (*redisProbe, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis URL %q: %w", url, err)
	}
	opts.PoolSize, opts.MinIdleConns, opts.MaxIdleConns = 1, 1, 1
	return &redisProbe{c: redis.NewClient(opts)}, nil
}

func (p *redisProbe) close() { p.c.Close() }

// redisSample is one reading of INFO.
type redisSample struct {
	cpu     time.Duration // used_cpu_sys + used_cpu_user
	clients int           // connected_clients, the probe's own left out
}

func (p *redisProbe) sample(ctx context.Context) (redisSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := p.c.Info(ctx, "cpu", "clients").Result()
	if err != nil {
		return redisSample{}, err
	}
	return parseInfo(info)
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
