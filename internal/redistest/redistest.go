// Package redistest starts a private Redis server for one test: a
// redis-server binary on a free loopback port when one is on PATH, else a
// testcontainers Redis container when Docker answers, else the test fails
// with a message saying so; go test -short skips it instead, except when
// CI=true, so that CI never silently skips Redis.
//
// StartCluster and StartSentinel start a Redis Cluster (3 masters, 3
// replicas) and a Sentinel set (primary, 2 replicas, 3 sentinels) the same
// way, from the redis-server and redis-cli binaries only.
//
// It never touches a shared server such as 127.0.0.1:6379. A Server is
// meant for one test goroutine; its methods are not safe for concurrent use.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"

	"github.com/tslm/tslm/internal/syncbuf"
)

// Options configures Start. The zero value is a server without persistence.
type Options struct {
	// AOF turns on the append-only file (appendonly yes, fsync every
	// second, flushed on a clean stop), so that Restart keeps the data.
	// Without it a restart comes back empty.
	AOF bool
}

// Server is one private Redis server, stopped when the test ends.
type Server struct {
	t    testing.TB
	opts Options
	addr string

	// binary backend
	bin    string
	dir    string
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
	log    *syncbuf.Buffer
	// commandLine, when set, prepares the server's directory and returns
	// its arguments (cluster nodes, sentinels); nil is a standalone
	// server configured by opts.
	commandLine func(s *Server) []string
	// busPort is a cluster node's cluster bus port, chosen with port.
	busPort  int
	needsBus bool
	// frozen is set while Hang holds the process stopped; the thaw may
	// come from another goroutine.
	frozen atomic.Bool

	// container backend
	container *tcredis.RedisContainer

	clients []*redis.Client
}

// Start starts a server and registers its cleanup with t.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if bin, err := exec.LookPath("redis-server"); err == nil {
		// The directory first: cleanups run last-registered first, and
		// the process must be gone before its directory is removed.
		s := &Server{t: t, opts: opts, bin: bin, dir: t.TempDir()}
		t.Cleanup(s.cleanup)
		s.startBinary()
		return s
	}
	s := &Server{t: t, opts: opts}
	t.Cleanup(s.cleanup)
	s.startContainer()
	return s
}

// startProcess starts a redis-server with the command line commandLine
// returns, in a directory of its own. Unlike Start it has no container
// fallback: Cluster and Sentinel sets need the binaries.
func startProcess(t testing.TB, opts Options, commandLine func(s *Server) []string, needsBus bool) *Server {
	t.Helper()
	bin := lookBinary(t, "redis-server")
	s := &Server{t: t, opts: opts, bin: bin, dir: t.TempDir(), commandLine: commandLine, needsBus: needsBus}
	t.Cleanup(s.cleanup)
	s.startBinary()
	return s
}

// lookBinary finds name on PATH, or fails or skips t as Start does when no
// Redis can be had.
func lookBinary(t testing.TB, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		unavailable(t, name+" is not on PATH (Cluster and Sentinel sets run the binaries, never a container)")
	}
	return bin
}

// unavailable fails t, or skips it under go test -short outside CI.
func unavailable(t testing.TB, why string) {
	t.Helper()
	msg, fail := unavailableVerdict(os.Getenv("CI") == "true", testing.Short(), why)
	if fail {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// unavailableVerdict says what a test does when no Redis can be started,
// and why. CI never skips, so that Redis coverage cannot silently vanish.
// Elsewhere only -short skips: go test ./... prints nothing but "ok" for a
// package that passes, skips and warnings included, so a plain skip would
// look like a pass.
func unavailableVerdict(ci, short bool, why string) (msg string, fail bool) {
	msg = "redis-backed tests NOT run: " + why + "; install redis-server or start Docker"
	switch {
	case ci:
		return msg + " (CI=true: failing instead of skipping)", true
	case short:
		return msg + " (skipped: -short)", false
	}
	return msg + ", or run go test -short to skip them", true
}

func (s *Server) startBinary() {
	s.t.Helper()
	var lastErr error
	for range 5 { // a free port can be taken between probing and binding
		if s.port == 0 {
			port, err := freePort()
			if err != nil {
				s.t.Fatalf("redistest: free port: %v", err)
			}
			s.port = port
			for s.needsBus && (s.busPort == 0 || s.busPort == s.port) {
				if s.busPort, err = freePort(); err != nil {
					s.t.Fatalf("redistest: free port: %v", err)
				}
			}
		}
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
		if lastErr = s.spawn(); lastErr == nil {
			return
		}
		if s.exited == nil {
			break
		}
		s.port, s.busPort = 0, 0 // retry elsewhere only when the process itself gave up
	}
	s.t.Fatalf("redistest: redis-server did not start: %v", lastErr)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// serverArgs are a data node's arguments: loopback only, no RDB snapshots,
// AOF as opts says.
func (s *Server) serverArgs() []string {
	aof := "no"
	if s.opts.AOF {
		aof = "yes"
	}
	return []string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", aof, "--dir", s.dir,
		"--protected-mode", "no", "--loglevel", "warning"}
}

// spawn runs redis-server and waits until it answers PING.
func (s *Server) spawn() error {
	args := s.serverArgs()
	if s.commandLine != nil {
		args = s.commandLine(s)
	}
	s.log = new(syncbuf.Buffer)
	s.frozen.Store(false) // a new process; a Hang of the old one ended with it
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited

	c := redis.NewClient(&redis.Options{Addr: s.addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			s.cmd = nil
			return fmt.Errorf("exited: %s", s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("no PING answer after 10s: %v; log: %s", err, s.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *Server) startContainer() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := func() (c *tcredis.RedisContainer, err error) {
		defer func() {
			// testcontainers panics when no Docker provider can be built.
			if r := recover(); r != nil {
				err = fmt.Errorf("%v", r)
			}
		}()
		return tcredis.Run(ctx, "redis:7")
	}()
	if c != nil {
		s.container = c
	}
	if err != nil {
		unavailable(s.t, fmt.Sprintf("redis-server is not on PATH and Docker failed: %v", err))
	}
	url, err := c.ConnectionString(ctx)
	if err != nil {
		s.t.Fatalf("redistest: container address: %v", err)
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		s.t.Fatalf("redistest: container URL %q: %v", url, err)
	}
	s.addr = opt.Addr
	if s.opts.AOF {
		c := s.Client()
		if err := c.ConfigSet(ctx, "appendonly", "yes").Err(); err != nil {
			s.t.Fatalf("redistest: enable AOF: %v", err)
		}
	}
}

// CanRestart reports whether Stop, Start and Restart work: true for the
// redis-server backend, false for the container one.
func (s *Server) CanRestart() bool { return s.bin != "" }

func (s *Server) needRestart() {
	s.t.Helper()
	if !s.CanRestart() {
		s.t.Skip("redistest: restarting is unsupported with the container backend (no redis-server on PATH)")
	}
}

// Addr returns host:port.
func (s *Server) Addr() string { return s.addr }

// URL returns a redis:// URL for database 0.
func (s *Server) URL() string { return "redis://" + s.addr + "/0" }

// Stop stops the server cleanly (flushing the AOF when on) and waits for it
// to exit; the port and data directory stay reserved for Start.
func (s *Server) Stop() {
	s.t.Helper()
	s.needRestart()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.kill()
	}
	s.cmd = nil
}

func (s *Server) kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Kill ends the server at once (SIGKILL), as a crash would: writes it had
// not yet passed to replicas or fsynced are lost. Start brings it back on
// the same port and directory.
func (s *Server) Kill() {
	s.t.Helper()
	s.needRestart()
	s.kill()
}

// Running reports whether the server's process runs (stopped or killed
// servers do not; a frozen one does).
func (s *Server) Running() bool {
	if s.container != nil {
		return true
	}
	return s.cmd != nil
}

// answers reports whether the server can answer commands: it runs and is
// not frozen by Hang.
func (s *Server) answers() bool { return s.Running() && !s.frozen.Load() }

// Log returns what the server has logged (warnings and worse) since it
// last started; empty with the container backend.
func (s *Server) Log() string {
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// Start starts a stopped server again on the same port and directory, so
// that with Options.AOF it comes back with its data.
func (s *Server) Start() {
	s.t.Helper()
	s.needRestart()
	if s.cmd != nil {
		return
	}
	if err := s.spawn(); err != nil {
		s.t.Fatalf("redistest: restart on %s: %v", s.addr, err)
	}
}

// Restart is Stop then Start.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.Start()
}

// Flush empties every database.
func (s *Server) Flush() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Client().FlushAll(ctx).Err(); err != nil {
		s.t.Fatalf("redistest: FLUSHALL: %v", err)
	}
}

// Client returns a new client for the server, closed when the test ends.
// It has short timeouts and a single retry, so that a stopped server fails
// tests within about a second while a connection left over from before a
// restart is still replaced transparently.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr:                  s.addr,
		DialTimeout:           time.Second,
		DialerRetries:         1,
		MaxRetries:            1,
		ReadTimeout:           2 * time.Second,
		WriteTimeout:          2 * time.Second,
		ContextTimeoutEnabled: true,
	})
	s.clients = append(s.clients, c)
	return c
}

func (s *Server) cleanup() {
	for _, c := range s.clients {
		c.Close()
	}
	s.clients = nil
	if s.container != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.container.Terminate(ctx); err != nil {
			s.t.Logf("redistest: terminate container: %v", err)
		}
		return
	}
	if s.cmd != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			s.kill()
		}
		s.cmd = nil
	}
}
