package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tslm/tslm/gateway"
	"github.com/tslm/tslm/internal/bare"
	"github.com/tslm/tslm/internal/envconfig"
)

// The servers a run measures (the bare broadcaster, a gateway of
// -target self-*) run in a child process of this same binary, started
// with serveVar set: their CPU time and memory are then theirs alone,
// read from /proc, apart from the load generator's, and each side has
// the whole file-descriptor limit for its end of the connections.
const (
	serveVar = "TSLMBENCH_SERVE" // "bare" or "gateway"
	// Tests only: bare.Config's LoseEvery and RepeatEvery.
	loseVar   = "TSLMBENCH_BARE_LOSE_EVERY"
	repeatVar = "TSLMBENCH_BARE_REPEAT_EVERY"
)

// serveAddrs is the child's first line on stdout.
type serveAddrs struct {
	Public   string `json:"public"`
	Internal string `json:"internal"`
}

// serveMain runs the child: it serves until its stdin closes (the tool
// closes it, or died) and returns the exit code. Meanwhile it obeys the
// lines of its stdin, each answered with a line "ok" or "error: …":
// "cpuprofile PATH" starts a CPU profile into PATH, "stop" ends it, "gc"
// collects garbage and returns free memory to the OS.
func serveMain(kind string) int {
	addrs, stop, err := startServing(kind)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslm-bench server:", envconfig.Explain(err))
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(addrs)
	var profile *os.File
	stopProfile := func() {
		if profile != nil {
			pprof.StopCPUProfile()
			profile.Close()
			profile = nil
		}
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		err := error(nil)
		switch cmd {
		case "cpuprofile":
			stopProfile()
			if profile, err = os.Create(arg); err == nil {
				if err = pprof.StartCPUProfile(profile); err != nil {
					profile.Close()
					profile = nil
				}
			}
		case "stop":
			stopProfile()
		case "gc":
			// What the process holds, not what it has yet to collect:
			// FreeOSMemory collects and returns the free pages at once.
			debug.FreeOSMemory()
		default:
			err = fmt.Errorf("unknown command %q", cmd)
		}
		if err != nil {
			fmt.Printf("error: %v\n", err)
		} else {
			fmt.Println("ok")
		}
	}
	stopProfile()
	stop()
	return 0
}

func startServing(kind string) (serveAddrs, func(), error) {
	switch kind {
	case "bare":
		cfg := bare.Config{}
		cfg.LoseEvery, _ = strconv.Atoi(os.Getenv(loseVar))
		cfg.RepeatEvery, _ = strconv.Atoi(os.Getenv(repeatVar))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return serveAddrs{}, nil, err
		}
		s := bare.New(cfg)
		srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		addr := ln.Addr().String()
		return serveAddrs{Public: addr, Internal: addr}, func() { srv.Close(); s.Close() }, nil
	case "gateway":
		st, err := envconfig.Load(nil)
		if err != nil {
			return serveAddrs{}, nil, err
		}
		logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: st.LogLevel}))
		for _, w := range st.Warnings {
			logger.Warn(w)
		}
		g, err := gateway.Start(context.Background(), st.Gateway, logger)
		if err != nil {
			return serveAddrs{}, nil, err
		}
		stop := func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			g.Shutdown(ctx)
		}
		return serveAddrs{Public: g.PublicAddrs()[0].String(), Internal: g.InternalAddrs()[0].String()}, stop, nil
	}
	return serveAddrs{}, nil, fmt.Errorf("unknown server %q", kind)
}

// child is a server process started by the tool.
type child struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	exited  chan struct{}
	addrs   serveAddrs
	answers chan string // the lines of its stdout after the first
}

// startChild starts this binary as server kind with the extra environment
// env (NAME=value, replacing the tool's own), and waits for its addresses.
func startChild(kind string, env []string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = mergeEnv(os.Environ(), append([]string{serveVar + "=" + kind}, env...))
	cmd.Stderr = os.Stderr
	// Its own process group: Ctrl-C stops the tool, which then stops
	// the server in order, rather than the server under a running test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, stdin: stdin, exited: make(chan struct{}), answers: make(chan string, 1)}
	first := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		err := errors.New("exited")
		if sc.Scan() {
			err = json.Unmarshal(sc.Bytes(), &c.addrs)
		}
		first <- err
		for sc.Scan() {
			select {
			case c.answers <- sc.Text():
			default: // nobody asked
			}
		}
		cmd.Wait()
		close(c.exited)
	}()
	select {
	case err = <-first:
	case <-time.After(60 * time.Second):
		err = errors.New("no address after 60s")
	}
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("the %s server did not start: %v", kind, err)
	}
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// command sends the child one command line (see serveMain) and waits for
// its answer.
func (c *child) command(line string) error {
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		return err
	}
	select {
	case a := <-c.answers:
		if a != "ok" {
			return errors.New(a)
		}
		return nil
	case <-c.exited:
		return errors.New("the server exited")
	case <-time.After(30 * time.Second):
		return errors.New("no answer from the server after 30s")
	}
}

// stop closes the child's stdin, which shuts it down, and waits for it;
// a child that takes longer than 15s is killed.
func (c *child) stop() {
	c.stdin.Close()
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// mergeEnv returns base with the NAME=value entries of over replacing
// those of the same name; an entry NAME alone (no "=") removes NAME.
func mergeEnv(base, over []string) []string {
	replaced := map[string]bool{}
	for _, kv := range over {
		name, _, _ := strings.Cut(kv, "=")
		replaced[name] = true
	}
	out := make([]string, 0, len(base)+len(over))
	for _, kv := range base {
		if name, _, _ := strings.Cut(kv, "="); !replaced[name] {
			out = append(out, kv)
		}
	}
	for _, kv := range over {
		if strings.Contains(kv, "=") {
			out = append(out, kv)
		}
	}
	return out
}
