package backlog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// appendWire is the append batcher's own connection to a single Redis
// server, written and read directly in RESP2. go-redis dials it, so that
// TLS, credentials, the database and the client's handshake are the
// writer's own; after that a batch is one write of its EVALSHAs and one
// read of their replies, without the pool's health check, the RESP3 push
// peeks, the per-command objects and hooks of a go-redis pipeline. On the
// spread benchmark those were about a tenth of the gateway's CPU
// (docs/benchmarks.md, issue 18).
//
// It is used for a standalone writer only: a Cluster's appends go one by
// one (runBatched), and a Sentinel writer must follow the primary, which
// its go-redis client does.
//
// The batcher's lead serializes its use. Any failure closes it, so that
// replies never pair with the wrong calls; the next batch dials again.
// Nothing is retried: a call whose reply was not read gets the error, and
// the append may have run (Append's contract on errors).
type appendWire struct {
	client *redis.Client // dials and hands over its one connection
	held   *redis.Conn   // keeps that connection out of the client's pool
	conn   net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	hooks  []redis.Hook // the writer's: metrics see the batch as a pipeline
	used   time.Time    // when a batch last went
}

// wireIdleCheck is how long the connection may rest before a batch checks
// that it is still open (checkIdle): under load batches follow each other
// within it, so the check costs a busy replica no system call.
const wireIdleCheck = 100 * time.Millisecond

// wireError is an error reply read off the wire. go-redis's error
// predicates (redis.IsLoadingError, redis.HasErrorPrefix, ...) read it by
// its text, as they do their own.
type wireError string

func (e wireError) Error() string { return string(e) }
func (wireError) RedisError()     {}

// dialWire opens the batcher's connection with the writer's options.
func dialWire(ctx context.Context, writer *redis.Client, hooks []redis.Hook) (*appendWire, error) {
	opt := *writer.Options()
	opt.Protocol = 2 // no push frames between replies
	opt.PoolSize, opt.MinIdleConns, opt.MaxIdleConns = 1, 0, 0
	opt.MaxRetries = -1
	opt.PushNotificationProcessor = nil
	var mu sync.Mutex
	var dialed net.Conn
	dial := opt.Dialer // go-redis's own, TLS included
	opt.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err == nil {
			mu.Lock()
			dialed = c
			mu.Unlock()
		}
		return c, err
	}
	client := redis.NewClient(&opt)
	held := client.Conn()
	// The ping makes go-redis dial and run its handshake (AUTH, SELECT,
	// CLIENT SETINFO), all of whose replies it reads: the connection is
	// then quiet, and ours.
	if err := held.Ping(ctx).Err(); err != nil {
		held.Close()
		client.Close()
		return nil, err
	}
	mu.Lock()
	c := dialed
	mu.Unlock()
	if c == nil {
		held.Close()
		client.Close()
		return nil, errors.New("backlog: redis: no connection was dialed for appends")
	}
	return &appendWire{client: client, held: held, conn: c, used: time.Now(),
		br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 16<<10), hooks: hooks}, nil
}

func (w *appendWire) close() {
	w.held.Close()
	w.client.Close()
}

// run sends cmds, EVALSHA commands, as one batch and reads their replies
// into them, through the writer's hooks. It returns an error when the
// connection failed, which it then is no more.
func (w *appendWire) run(ctx context.Context, cmds []redis.Cmder) error {
	process := w.roundTrip
	for i := len(w.hooks) - 1; i >= 0; i-- {
		process = w.hooks[i].ProcessPipelineHook(process)
	}
	return process(ctx, cmds)
}

func (w *appendWire) roundTrip(ctx context.Context, cmds []redis.Cmder) error {
	now := time.Now()
	if now.Sub(w.used) >= wireIdleCheck {
		if err := checkIdle(w.conn); err != nil {
			return w.fail(cmds, &wireClosed{err})
		}
	}
	w.used = now
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Minute)
	}
	if err := w.conn.SetDeadline(deadline); err != nil {
		return w.fail(cmds, err)
	}
	for _, cmd := range cmds {
		writeCommand(w.bw, cmd.Args())
	}
	if err := w.bw.Flush(); err != nil {
		return w.fail(cmds, err)
	}
	for i, cmd := range cmds {
		val, err := readReply(w.br, 0)
		var reply wireError
		switch {
		case errors.As(err, &reply):
			cmd.SetErr(reply)
		case err != nil:
			return w.fail(cmds[i:], err)
		default:
			setVal(cmd, val)
		}
	}
	return nil
}

// wireClosed is a connection found closed before a batch was written:
// nothing of the batch ran, so it goes again on a new connection.
type wireClosed struct{ cause error }

func (e *wireClosed) Error() string { return e.cause.Error() }
func (e *wireClosed) Unwrap() error { return e.cause }

// fail gives cmds, whose replies were not read, the connection's error.
func (w *appendWire) fail(cmds []redis.Cmder, err error) error {
	for _, cmd := range cmds {
		cmd.SetErr(err)
	}
	return err
}

// setVal stores a reply in cmd, one of send's *redis.Cmd, as go-redis
// would read it.
func setVal(cmd redis.Cmder, val any) {
	if val == nil {
		cmd.SetErr(redis.Nil)
		return
	}
	cmd.(*redis.Cmd).SetVal(val)
}

// writeCommand writes args as a RESP array of bulk strings.
func writeCommand(bw *bufio.Writer, args []any) {
	var num [20]byte
	bw.WriteByte('*')
	bw.Write(strconv.AppendInt(num[:0], int64(len(args)), 10))
	bw.WriteString("\r\n")
	for _, a := range args {
		var s string
		var b []byte
		switch a := a.(type) {
		case string:
			s = a
		case []byte:
			b = a
		case int:
			b = strconv.AppendInt(num[:0], int64(a), 10)
		case int64:
			b = strconv.AppendInt(num[:0], a, 10)
		default:
			s = fmt.Sprint(a)
		}
		bw.WriteByte('$')
		bw.WriteString(strconv.Itoa(len(s) + len(b)))
		bw.WriteString("\r\n")
		bw.WriteString(s)
		bw.Write(b)
		bw.WriteString("\r\n")
	}
}

// maxWireDepth bounds the nesting of a reply: scripts answer flat arrays
// or arrays of pairs.
const maxWireDepth = 8

// readReply reads one RESP2 reply, depth arrays deep, as go-redis gives
// it: a string, an int64, nil, an []any, or a wireError for an error
// reply (an error inside an array is its element's value, as in go-redis).
func readReply(br *bufio.Reader, depth int) (any, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("backlog: redis: malformed reply %q", line)
	}
	body := line[1 : len(line)-2]
	switch line[0] {
	case '+':
		return string(body), nil
	case '-':
		return nil, wireError(body)
	case ':':
		return strconv.ParseInt(string(body), 10, 64)
	case '$':
		n, err := strconv.Atoi(string(body))
		if err != nil || n < -1 {
			return nil, fmt.Errorf("backlog: redis: malformed bulk length %q", body)
		}
		if n == -1 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(string(body))
		if err != nil || n < -1 || depth >= maxWireDepth {
			return nil, fmt.Errorf("backlog: redis: malformed array %q", body)
		}
		if n == -1 {
			return nil, nil
		}
		vals := make([]any, n)
		for i := range vals {
			v, err := readReply(br, depth+1)
			var reply wireError
			if errors.As(err, &reply) {
				v, err = reply, nil
			}
			if err != nil {
				return nil, err
			}
			vals[i] = v
		}
		return vals, nil
	}
	return nil, fmt.Errorf("backlog: redis: unexpected reply %q", line)
}
