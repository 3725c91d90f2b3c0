package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/tslm/tslm/client"
)

const subscribeHelp = `Subscribes to each CHANNEL and prints one JSON line per message on
standard output, {"channel","id","data"}, in ID order per channel. After a
disconnect it reconnects with backoff and resumes each channel after the
last message printed, so nothing is repeated or missed; when the gateway
cannot prove that (the backlog was trimmed meanwhile) or messages were
lost while subscribed, it says so on standard error as
{"event":"not-resumed",...} or {"event":"gap",...}. A deleted channel is
{"event":"deleted",...} on standard error and ends its subscription.
Runs until SIGINT/SIGTERM (exit 0), --count messages (exit 0), or every
subscription ended (exit 1).
`

const publishHelp = `Publishes JSON to CHANNEL, or, without JSON, each line of standard
input (empty lines skipped), and prints {"channel","id"} per message
stored. Stops at the first refusal (exit 1). --key publishes with an
idempotency key, safe to retry (one message only).
`

const requestHelp = `Asks the app serving CHANNEL with JSON (default null) and prints its
reply's data as one JSON line. An app's refusal, no reply within
--timeout, or no app serving the channel is exit 1.
`

func wsFlags(fs *flag.FlagSet, def string) *string {
	return fs.String("url", def, "the gateway's WebSocket `URL`")
}

// connect dials url with TSLM_CREDENTIAL, logging the client's notices
// (reconnections) to standard error.
func connect(ctx context.Context, e *env, url string) (*client.Client, error) {
	opts := []client.Option{client.WithLogger(slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))}
	if cred := e.getenv("TSLM_CREDENTIAL"); cred != "" {
		opts = append(opts, client.WithBearer(cred))
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", url, err)
	}
	return c, nil
}

func runSubscribe(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("subscribe", flag.ContinueOnError)
	url := wsFlags(fs, defaultPublicURL)
	since := fs.String("since", "", "resume after this message `ID` (every channel)")
	last := fs.Int("last", 0, "start with the newest `N` messages of each channel")
	count := fs.Int("count", 0, "exit after `N` messages (0: run until stopped)")
	chans, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(chans) == 0:
		return usagef("name at least one channel")
	case *since != "" && *last != 0:
		return usagef("--since and --last together")
	case *last < 0 || *count < 0:
		return usagef("--last and --count must not be negative")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the forwarding goroutines
	c, err := connect(ctx, e, *url)
	if err != nil {
		return err
	}
	defer c.Close()
	events := make(chan client.Event)
	ended := make(chan error, len(chans))
	for _, ch := range chans {
		s, err := c.Subscribe(ctx, ch, client.SubscribeOptions{Since: *since, Last: *last})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("subscribing to %s: %w", ch, err)
		}
		go func() {
			for ev := range s.Events() {
				select {
				case events <- ev:
				case <-ctx.Done():
					return
				}
			}
			ended <- s.Err()
		}()
	}
	out := bufio.NewWriter(e.stdout)
	live, n := len(chans), 0
	var firstErr error
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-ended:
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if live--; live == 0 {
				if firstErr != nil {
					return firstErr
				}
				return errors.New("every subscription ended")
			}
		case ev := <-events:
			switch ev := ev.(type) {
			case client.Message:
				writeJSON(out, struct {
					Channel string          `json:"channel"`
					ID      string          `json:"id"`
					Data    json.RawMessage `json:"data"`
				}{ev.Channel, ev.ID, ev.Data})
				if err := out.Flush(); err != nil {
					return err // stdout closed: the pipeline's reader went away
				}
				if n++; *count > 0 && n >= *count {
					return nil
				}
			case client.Gap:
				writeJSON(e.stderr, map[string]string{"event": "gap", "channel": ev.Channel, "after": ev.After})
			case client.NotResumed:
				writeJSON(e.stderr, map[string]string{"event": "not-resumed", "channel": ev.Channel, "since": ev.Since, "head": ev.Head})
			case client.Deleted:
				writeJSON(e.stderr, map[string]string{"event": "deleted", "channel": ev.Channel})
			}
		}
	}
}

func writeJSON(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	w.Write(append(b, '\n'))
}

func runPublish(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	url := wsFlags(fs, defaultInternalURL)
	key := fs.String("key", "", "idempotency `KEY` (with a JSON argument only)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return usagef("want CHANNEL and at most one JSON argument")
	}
	if *key != "" && len(pos) != 2 {
		return usagef("--key needs the JSON argument: one key per message")
	}
	channel := pos[0]
	var opts []client.PublishOption
	if *key != "" {
		opts = append(opts, client.WithIdempotencyKey(*key))
	}
	if len(pos) == 2 && !json.Valid([]byte(pos[1])) {
		return usagef("%q is not JSON (a string is quoted: '\"text\"')", pos[1])
	}
	c, err := connect(ctx, e, *url)
	if err != nil {
		return err
	}
	defer c.Close()
	publish := func(data string) error {
		id, err := c.Publish(ctx, channel, json.RawMessage(data), opts...)
		if err != nil {
			return err
		}
		writeJSON(e.stdout, map[string]string{"channel": channel, "id": id})
		return nil
	}
	if len(pos) == 2 {
		return publish(pos[1])
	}
	in := bufio.NewScanner(e.stdin)
	in.Buffer(make([]byte, 64<<10), 16<<20)
	for line := 1; in.Scan(); line++ {
		text := strings.TrimSpace(in.Text())
		if text == "" {
			continue
		}
		if !json.Valid([]byte(text)) {
			return fmt.Errorf("line %d is not JSON: %.60q", line, text)
		}
		if err := publish(text); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
	}
	return in.Err()
}

func runRequest(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("request", flag.ContinueOnError)
	url := wsFlags(fs, defaultInternalURL)
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the reply (the request's timeout_ms)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return usagef("want CHANNEL and at most one JSON argument")
	}
	data := "null"
	if len(pos) == 2 {
		data = pos[1]
	}
	if !json.Valid([]byte(data)) {
		return usagef("%q is not JSON (a string is quoted: '\"text\"')", data)
	}
	if *timeout < time.Millisecond {
		return usagef("--timeout must be at least 1ms")
	}
	c, err := connect(ctx, e, *url)
	if err != nil {
		return err
	}
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	reply, err := c.Request(rctx, pos[0], json.RawMessage(data))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("no reply within %v", *timeout)
		}
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", reply)
	return err
}
