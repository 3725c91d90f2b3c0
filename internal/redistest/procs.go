package redistest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Helpers shared by the Cluster and Sentinel sets.

// setTimeout bounds each wait of a Cluster or Sentinel set (forming,
// failing over, moving a slot); a set that takes longer is broken, and
// the test fails with what it last saw.
const setTimeout = 30 * time.Second

// nodeClient returns a client for one process with short timeouts and no
// retries, so that polling a dead or frozen process costs at most a
// second. The caller closes it.
func nodeClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:                  addr,
		DialTimeout:           time.Second,
		ReadTimeout:           time.Second,
		WriteTimeout:          time.Second,
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
	})
}

// do runs one command on addr with its own client.
func do(ctx context.Context, addr string, args ...any) (any, error) {
	c := nodeClient(addr)
	defer c.Close()
	return c.Do(ctx, args...).Result()
}

// doText runs one command on addr whose answer is text, such as CLUSTER
// INFO or INFO.
func doText(ctx context.Context, addr string, args ...any) (string, error) {
	c := nodeClient(addr)
	defer c.Close()
	return c.Do(ctx, args...).Text()
}

// infoField returns field's value from INFO-style text ("field:value"
// lines), or "" when absent.
func infoField(text, field string) string {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// waitFor polls cond every 50ms until it holds, failing t after timeout
// with what cond last reported and extra (a function, so that it is
// only computed on failure) appended.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func(ctx context.Context) (ok bool, state string), extra func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		ok, state := cond(ctx)
		cancel()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("redistest: %s: not after %v; last: %s", what, timeout, state)
			if extra != nil {
				msg += "\n" + extra()
			}
			t.Fatal(msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopAll stops every running process at once, each with SIGTERM and then,
// after a common grace period, SIGKILL, and reaps them, so that tearing down
// a set takes one grace period at most rather than one per process.
func stopAll(servers []*Server) {
	for _, s := range servers {
		if s.cmd != nil {
			// A frozen process must be thawed to heed SIGTERM.
			s.cmd.Process.Signal(syscall.SIGCONT)
			s.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	grace := time.After(5 * time.Second)
	for _, s := range servers {
		if s.cmd == nil {
			continue
		}
		select {
		case <-s.exited:
			s.cmd = nil
		case <-grace:
			s.kill()
		}
	}
}

// logsOf renders the logs of servers, for failure messages.
func logsOf(servers []*Server) string {
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "--- %s (running %v) log:\n%s", s.Addr(), s.Running(), s.Log())
	}
	return b.String()
}

// hostPort splits host:port.
func hostPort(addr string) (string, int) {
	h, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return h, port
}

// urlWithSeeds renders the URL form go-redis's ParseClusterURL and
// ParseFailoverURL read: the first address as host, the others as addr
// parameters, extra query parameters first.
func urlWithSeeds(addrs []string, query ...string) string {
	q := append([]string(nil), query...)
	for _, a := range addrs[1:] {
		q = append(q, "addr="+a)
	}
	u := "redis://" + addrs[0]
	if len(q) > 0 {
		u += "?" + strings.Join(q, "&")
	}
	return u
}
