package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// target is what a run loads: its addresses and, when known, the
// gateway's process.
type target struct {
	name       string // bare, self-memory, self-redis, or the URL given
	publicWS   string // ws://…/v1/ws, where subscribers connect
	internalWS string // ws://…/v1/ws, where WebSocket publishers connect
	api        string // http://…, the internal HTTP API
	redisURL   string // "" without Redis
	pid        int    // the gateway's process; 0 when unknown
	child      *child // the server process the tool started, if any
	// outlives says that the target outlives the run, which then deletes
	// the channels it created.
	outlives bool
}

func (t *target) close() {
	if t.child != nil {
		t.child.stop()
	}
}

// openTarget starts or finds target name (see -target) for opts.
func openTarget(ctx context.Context, name string, o *options) (*target, error) {
	local := func(c *child, t *target) *target {
		t.child, t.pid = c, c.pid()
		t.publicWS = "ws://" + c.addrs.Public + "/v1/ws"
		t.internalWS = "ws://" + c.addrs.Internal + "/v1/ws"
		t.api = "http://" + c.addrs.Internal
		return t
	}
	switch {
	case name == "bare":
		env := []string{}
		if o.loseEvery > 0 {
			env = append(env, loseVar+"="+strconv.Itoa(o.loseEvery))
		}
		if o.repeatEvery > 0 {
			env = append(env, repeatVar+"="+strconv.Itoa(o.repeatEvery))
		}
		c, err := startChild("bare", env)
		if err != nil {
			return nil, err
		}
		return local(c, &target{name: name}), nil
	case name == "self-memory" || name == "self-redis" || strings.HasPrefix(name, "self-redis="):
		t := &target{name: name}
		env := gatewayEnv(o.maxConns, o.spec.scenario == "reqreply")
		if name == "self-memory" {
			env = append(env, "TSLM_REDIS_URL")
		} else {
			t.name = "self-redis"
			t.redisURL = strings.TrimPrefix(strings.TrimPrefix(name, "self-redis"), "=")
			t.outlives = t.redisURL != ""
			if t.redisURL == "" {
				t.redisURL = o.startedRedis
			}
			env = append(env, "TSLM_REDIS_URL="+t.redisURL)
		}
		c, err := startChild("gateway", env)
		if err != nil {
			return nil, err
		}
		return local(c, t), nil
	}
	t := &target{name: name, publicWS: name, api: o.api, redisURL: o.redisURL, pid: o.gatewayPID, outlives: true}
	u, err := url.Parse(o.api)
	if err != nil {
		return nil, fmt.Errorf("-api %q: %v", o.api, err)
	}
	scheme := "ws"
	if u.Scheme == "https" {
		scheme = "wss"
	}
	t.internalWS = scheme + "://" + u.Host + "/v1/ws"
	return t, nil
}

// gatewayEnv is the environment of a gateway the tool starts: the user's
// TSLM_* settings (to measure a tuning), loopback listeners on free
// ports, and connection limits that let the run's connections in unless
// the user set them; for reqreply, requests allowed on the public
// listener and no command rate there (50 a second per connection by
// default, which a closed loop of requests outruns), unless set.
func gatewayEnv(maxConns int, reqreply bool) []string {
	env := []string{"TSLM_PUBLIC_ADDRS=127.0.0.1:0", "TSLM_INTERNAL_ADDRS=127.0.0.1:0", "TSLM_CONFIG"}
	unlessSet := func(name, value string) {
		if _, set := os.LookupEnv(name); !set {
			env = append(env, name+"="+value)
		}
	}
	unlessSet("TSLM_MAX_CONNECTIONS", strconv.Itoa(maxConns+64))
	unlessSet("TSLM_MAX_CONNECTIONS_PER_IP", strconv.Itoa(maxConns+64))
	unlessSet("TSLM_LOG_LEVEL", "warn")
	if reqreply {
		unlessSet("TSLM_PUBLIC_ALLOW", "subscribe,request")
		unlessSet("TSLM_PUBLIC_RATE", "0")
	}
	return env
}

// checkLoopback refuses an address that is not this machine's unless
// -allow-remote: the tool loads what it is pointed at, and a mistyped
// host must not become a load test of someone else's server.
func checkLoopback(flagName, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%s %q is not a URL", flagName, raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s %q is not a loopback address: pass -allow-remote to load another machine", flagName, u.Redacted())
}
