// Command tslmctl is a command-line client of the TSLM gateway for shell
// pipelines, built on package client: it subscribes (resuming on its own
// after a disconnect), publishes, asks requests and creates or describes
// channels. Output is JSON lines on standard output; notices and errors go
// to standard error.
//
//	tslmctl subscribe prices --last 10
//	tslmctl publish prices '{"bid":1.5}'
//	tslmctl channel create prices --max-len 10000 --retention 24h
//
// With TSLM_CREDENTIAL set, it presents that credential (an access token,
// a publisher token or an API key) as "Authorization: Bearer": an
// environment variable rather than a flag, so that it does not show in the
// process list.
//
// Exit codes: 0 success (or stopped by SIGINT/SIGTERM), 1 a failure (the
// gateway refused, the connection could not be made, a request was
// refused or timed out), 2 a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Defaults: subscribers use the public listener; publishers, requesters
// and operators the internal one, where the gateway allows them.
const (
	defaultPublicURL   = "ws://127.0.0.1:8080/v1/ws"
	defaultInternalURL = "ws://127.0.0.1:8081/v1/ws"
	defaultAPI         = "http://127.0.0.1:8081"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})
	stop()
	os.Exit(code)
}

// env is what a command reads and writes besides its arguments.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// command is one subcommand.
type command struct {
	name, args, help string
	run              func(ctx context.Context, e *env, args []string) error
}

func commands() []command {
	return []command{
		{"subscribe", "CHANNEL... [--since ID | --last N] [--count N]", subscribeHelp, runSubscribe},
		{"publish", "CHANNEL [JSON] [--key KEY]", publishHelp, runPublish},
		{"request", "CHANNEL [JSON] [--timeout 5s]", requestHelp, runRequest},
		{"channel create", "NAME [--max-len N] [--retention DURATION]", channelCreateHelp, runChannelCreate},
		{"channel info", "NAME", channelInfoHelp, runChannelInfo},
	}
}

const usageHead = `tslmctl: a command-line client of the TSLM gateway.

usage: tslmctl COMMAND [ARGS] [FLAGS]   (tslmctl COMMAND --help for each)

`

const usageTail = `
Every WebSocket command takes --url, every channel command --api.
TSLM_CREDENTIAL, when set, is sent as "Authorization: Bearer".
Exit codes: 0 success, 1 failure, 2 usage error.
`

func usage(w io.Writer) {
	fmt.Fprint(w, usageHead)
	for _, c := range commands() {
		fmt.Fprintf(w, "  tslmctl %s %s\n", c.name, c.args)
	}
	fmt.Fprint(w, usageTail)
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 {
		usage(e.stderr)
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stdout)
		return 0
	}
	name, rest := args[0], args[1:]
	if name == "channel" {
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			if len(rest) > 0 && (rest[0] == "-h" || rest[0] == "--help") {
				usage(e.stdout)
				return 0
			}
			fmt.Fprintln(e.stderr, "tslmctl: channel needs a subcommand: create or info")
			return 2
		}
		name, rest = "channel "+rest[0], rest[1:]
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(ctx, e, rest)
		var ue *usageError
		var help *helpRequest
		switch {
		case err == nil:
			return 0
		case errors.As(err, &help):
			fmt.Fprintf(e.stdout, "usage: tslmctl %s %s\n\n%s%s", c.name, c.args, c.help, help.flags)
			return 0
		case errors.As(err, &ue):
			fmt.Fprintf(e.stderr, "tslmctl %s: %v\nusage: tslmctl %s %s (see --help)\n", c.name, err, c.name, c.args)
			return 2
		default:
			fmt.Fprintf(e.stderr, "tslmctl %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(e.stderr, "tslmctl: unknown command %q\n", name)
	usage(e.stderr)
	return 2
}

// helpRequest is --help: run prints the command's help and fs's flags.
type helpRequest struct{ flags string }

func (*helpRequest) Error() string { return "help requested" }

// parse parses fs's flags wherever they are among the positional
// arguments (Go's flag package stops at the first), up to a "--" after
// which everything is positional.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var tail []string
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], args[i+1:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &helpRequest{flagsHelp(fs)}
			}
			return nil, &usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(pos, tail...), nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// flagsHelp lists fs's flags for a command's --help.
func flagsHelp(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString("\nflags:\n")
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}
