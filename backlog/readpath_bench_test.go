package backlog_test

// Benchmarks behind docs/design/read-path.md (issue 18): the ways a
// replica can learn of new entries on many channels, each against a real
// redis-server, at rpChannels followed channels with one publisher
// appending to random channels, one op per delivered message. Each reports
// Redis's CPU per delivered message (INFO cpu), the Redis commands it ran
// per message (INFO stats, commands inside scripts included), and this
// process's CPU per message (publisher and readers together, getrusage).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

const (
	rpChannels   = 1000
	rpPerReader  = 100 // keys per XREAD, as backlog.Redis's readers
	rpMaxLen     = 1000
	rpDeliverMax = 60 * time.Second
)

// rpMeter is a snapshot of what a benchmark reports per message.
type rpMeter struct {
	redisCPU  float64 // seconds
	redisCmds int64
	selfCPU   time.Duration
}

func rpInfoField(b *testing.B, c *redis.Client, section, field string) string {
	b.Helper()
	info, err := c.Info(context.Background(), section).Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v
		}
	}
	b.Fatalf("INFO %s has no %s", section, field)
	return ""
}

func rpSnap(b *testing.B, c *redis.Client) rpMeter {
	b.Helper()
	user, _ := strconv.ParseFloat(rpInfoField(b, c, "cpu", "used_cpu_user"), 64)
	sys, _ := strconv.ParseFloat(rpInfoField(b, c, "cpu", "used_cpu_sys"), 64)
	cmds, _ := strconv.ParseInt(rpInfoField(b, c, "stats", "total_commands_processed"), 10, 64)
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	self := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return rpMeter{redisCPU: user + sys, redisCmds: cmds, selfCPU: self}
}

func rpReport(b *testing.B, c *redis.Client, start rpMeter, n int) {
	b.Helper()
	end := rpSnap(b, c)
	b.ReportMetric((end.redisCPU-start.redisCPU)*1e6/float64(n), "redis-µs/msg")
	b.ReportMetric(float64(end.redisCmds-start.redisCmds)/float64(n), "redis-cmds/msg")
	b.ReportMetric(float64((end.selfCPU-start.selfCPU).Microseconds())/float64(n), "client-µs/msg")
}

// rpEnv is rpChannels channels made by backlog.Redis under prefix, each
// with one entry, and the cursors after it.
type rpEnv struct {
	srv     *redistest.Server
	c       *redis.Client
	r       *backlog.Redis
	prefix  string
	names   []string
	cursors []backlog.ID
}

func rpSetup(b *testing.B, prefix string) *rpEnv {
	b.Helper()
	srv := redistest.Start(b, redistest.Options{})
	c := srv.Client()
	r := backlog.NewRedis(srv.Client(), backlog.RedisConfig{KeyPrefix: prefix})
	b.Cleanup(func() { r.Close() })
	ctx := context.Background()
	e := &rpEnv{srv: srv, c: c, r: r, prefix: prefix}
	for i := range rpChannels {
		name := fmt.Sprintf("c%d", i)
		if _, err := r.Create(ctx, name, backlog.ChannelConfig{MaxLen: rpMaxLen}); err != nil {
			b.Fatal(err)
		}
		id, err := r.Append(ctx, name, benchPayload)
		if err != nil {
			b.Fatal(err)
		}
		e.names = append(e.names, name)
		e.cursors = append(e.cursors, id)
	}
	return e
}

func (e *rpEnv) stream(i int) string { return e.prefix + "ch:{" + e.names[i] + "}" }
func (e *rpEnv) meta(i int) string   { return e.prefix + "meta:{" + e.names[i] + "}" }
func (e *rpEnv) notif(i int) string  { return e.prefix + "n:{" + e.names[i] + "}" }

// run publishes b.N messages with publish (one in flight, random
// channels) and waits until delivered reaches b.N.
func (e *rpEnv) run(b *testing.B, delivered *atomic.Int64, publish func(ctx context.Context, i int) error) {
	b.Helper()
	ctx := context.Background()
	start := rpSnap(b, e.c)
	b.ResetTimer()
	for range b.N {
		if err := publish(ctx, rand.IntN(rpChannels)); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(rpDeliverMax)
	for delivered.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d of %d", delivered.Load(), b.N)
		}
		time.Sleep(200 * time.Microsecond)
	}
	b.StopTimer()
	rpReport(b, e.c, start, b.N)
	delivered.Add(-int64(b.N))
}

// rpPlainScript is appendScript's work without expiry: the channel's
// max_len from its meta, then XADD with exact trimming.
var rpPlainScript = redis.NewScript(`
local ml = redis.call('HMGET', KEYS[1], 'max_len')[1]
if not ml then return false end
return redis.call('XADD', KEYS[2], 'MAXLEN', ml, '*', 'data', ARGV[1])
`)

// rpNotifyScript is rpPlainScript plus a notification on KEYS[3] by
// ARGV[2] (SPUBLISH or PUBLISH): "<id> <prev> <data>", where prev is the
// stream's newest entry before the XADD (0-0 when empty), read by
// XREVRANGE COUNT 1 (it returns that entry's fields to Lua too).
var rpNotifyScript = redis.NewScript(`
local ml = redis.call('HMGET', KEYS[1], 'max_len')[1]
if not ml then return false end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
local prev = last and last[1] or '0-0'
local id = redis.call('XADD', KEYS[2], 'MAXLEN', ml, '*', 'data', ARGV[1])
redis.call(ARGV[2], KEYS[3], id .. ' ' .. prev .. ' ' .. ARGV[1])
return id
`)

// rpNotifyMetaScript is rpNotifyScript without XREVRANGE's copy of the
// previous entry: the meta keeps the last ID the script appended, and an
// empty XRANGE after it (no copy) proves that nobody XADDed since; only
// otherwise, or on a meta without it, is the newest entry read.
var rpNotifyMetaScript = redis.NewScript(`
local m = redis.call('HMGET', KEYS[1], 'max_len', 'last')
local ml, prev = m[1], m[2]
if not ml then return false end
if not prev or #redis.call('XRANGE', KEYS[2], '(' .. prev, '+', 'COUNT', 1) > 0 then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
  prev = last and last[1] or '0-0'
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', ml, '*', 'data', ARGV[1])
redis.call('HSET', KEYS[1], 'last', id)
redis.call(ARGV[2], KEYS[3], id .. ' ' .. prev .. ' ' .. ARGV[1])
return id
`)

// BenchmarkReadPathFollower (b as built): backlog.Redis's follower over
// every channel (notification in the append script, one pub/sub
// connection, catch-up reads only on doubt), publishing with Append. It
// replaced 10 readers each re-issuing XREAD BLOCK over 100 keys: 158 µs
// of Redis CPU per message on the machine of docs/design/read-path.md.
func BenchmarkReadPathFollower(b *testing.B) {
	e := rpSetup(b, "rpf:")
	var delivered atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	f := e.r.NewFollower()
	defer func() { cancel(); wg.Wait(); f.Close() }()
	for i := range rpChannels {
		f.Follow(e.names[i], e.cursors[i])
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			batches, err := f.Next(ctx, 100)
			if err != nil {
				continue
			}
			for _, bt := range batches {
				delivered.Add(int64(len(bt.Messages)))
			}
		}
	})
	e.run(b, &delivered, func(ctx context.Context, i int) error {
		_, err := e.r.Append(ctx, e.names[i], benchPayload)
		return err
	})
}

// BenchmarkReadPathXReadOnly (a without the proof): the same 10 blocking
// XREADs over 100 keys, re-issued after each wake-up, trusting XREAD's
// entries; publishing with rpPlainScript. What the wake-up alone costs.
func BenchmarkReadPathXReadOnly(b *testing.B) {
	e := rpSetup(b, "rpa0:")
	var delivered atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for g := 0; g < rpChannels; g += rpPerReader {
		streams := make([]string, 2*rpPerReader)
		for i := range rpPerReader {
			streams[i] = e.stream(g + i)
			streams[rpPerReader+i] = e.cursors[g+i].String()
		}
		wg.Go(func() {
			conn := e.c.Conn()
			defer conn.Close()
			at := make(map[string]int, rpPerReader)
			for i := range rpPerReader {
				at[streams[i]] = rpPerReader + i
			}
			for ctx.Err() == nil {
				res, err := conn.XRead(context.Background(), &redis.XReadArgs{Streams: streams, Count: 100, Block: 100 * time.Millisecond}).Result()
				if err != nil {
					continue
				}
				for _, s := range res {
					if len(s.Messages) > 0 {
						streams[at[s.Stream]] = s.Messages[len(s.Messages)-1].ID
						delivered.Add(int64(len(s.Messages)))
					}
				}
			}
		})
	}
	e.run(b, &delivered, func(ctx context.Context, i int) error {
		return rpPlainScript.Run(ctx, e.c, []string{e.meta(i), e.stream(i)}, benchPayload).Err()
	})
}

// BenchmarkReadPathNotify (b, d): the append script publishes "<id>
// <prev> <data>" on the channel's notification channel; one connection
// subscribed to all of them delivers from the notification when prev is
// its cursor, else catches up with one XRANGE after the cursor (reported
// as catchups/msg). SPUBLISH (Redis 7 sharded pub/sub) and PUBLISH.
func BenchmarkReadPathNotify(b *testing.B) {
	for _, mode := range []string{"SPUBLISH", "PUBLISH"} {
		b.Run(mode, func(b *testing.B) {
			e := rpSetup(b, "rpb:")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			chans := make([]string, rpChannels)
			at := make(map[string]int, rpChannels)
			for i := range chans {
				chans[i] = e.notif(i)
				at[chans[i]] = i
			}
			var ps *redis.PubSub
			if mode == "SPUBLISH" {
				ps = e.c.SSubscribe(ctx, chans...)
			} else {
				ps = e.c.Subscribe(ctx, chans...)
			}
			defer ps.Close()
			for range chans { // every subscription confirmed
				if _, err := ps.Receive(ctx); err != nil {
					b.Fatal(err)
				}
			}
			var delivered, catchups atomic.Int64
			cursors := append([]backlog.ID(nil), e.cursors...)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					msg, err := ps.ReceiveMessage(ctx)
					if err != nil {
						return
					}
					i := at[msg.Channel]
					idS, rest, _ := strings.Cut(msg.Payload, " ")
					prevS, _, _ := strings.Cut(rest, " ")
					id, _ := backlog.ParseID(idS)
					prev, _ := backlog.ParseID(prevS)
					switch {
					case !cursors[i].Less(id):
						// delivered by a catch-up already
					case prev == cursors[i]:
						cursors[i] = id
						delivered.Add(1)
					default:
						catchups.Add(1)
						entries, err := e.c.XRange(ctx, e.stream(i), "("+cursors[i].String(), "+").Result()
						if err != nil {
							return
						}
						for _, en := range entries {
							cursors[i], _ = backlog.ParseID(en.ID)
							delivered.Add(1)
						}
					}
				}
			}()
			e.run(b, &delivered, func(ctx context.Context, i int) error {
				return rpNotifyScript.Run(ctx, e.c, []string{e.meta(i), e.stream(i), e.notif(i)}, benchPayload, mode).Err()
			})
			b.ReportMetric(float64(catchups.Load())/float64(b.N), "catchups/msg")
			cancel()
			ps.Close()
			<-done
		})
	}
}

// BenchmarkReadPathKeyspace (c): keyspace notifications for stream
// commands, and one non-blocking XRANGE after the cursor per notification.
// per-key: notify-keyspace-events Kt, SUBSCRIBE __keyspace@0__:<stream>
// for each followed channel on one connection. keyevent: Et, one
// SUBSCRIBE __keyevent@0__:xadd that names every stream XADDed to in the
// database, followed or not.
func BenchmarkReadPathKeyspace(b *testing.B) {
	for _, mode := range []string{"per-key", "keyevent"} {
		b.Run(mode, func(b *testing.B) {
			e := rpSetup(b, "rpc:")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			flags, chans := "Kt", make([]string, 0, rpChannels)
			at := make(map[string]int, rpChannels)
			for i := range rpChannels {
				if mode == "per-key" {
					chans = append(chans, "__keyspace@0__:"+e.stream(i))
					at[chans[i]] = i
				} else {
					at[e.stream(i)] = i
				}
			}
			if mode == "keyevent" {
				flags, chans = "Et", []string{"__keyevent@0__:xadd"}
			}
			if err := e.c.ConfigSet(ctx, "notify-keyspace-events", flags).Err(); err != nil {
				b.Fatal(err)
			}
			ps := e.c.Subscribe(ctx, chans...)
			defer ps.Close()
			for range chans {
				if _, err := ps.Receive(ctx); err != nil {
					b.Fatal(err)
				}
			}
			var delivered atomic.Int64
			cursors := append([]backlog.ID(nil), e.cursors...)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					msg, err := ps.ReceiveMessage(ctx)
					if err != nil {
						return
					}
					var i int
					var ok bool
					if mode == "per-key" {
						i, ok = at[msg.Channel]
						ok = ok && msg.Payload == "xadd"
					} else {
						i, ok = at[msg.Payload]
					}
					if !ok {
						continue
					}
					entries, err := e.c.XRangeN(ctx, e.stream(i), "("+cursors[i].String(), "+", 100).Result()
					if err != nil {
						return
					}
					for _, en := range entries {
						cursors[i], _ = backlog.ParseID(en.ID)
						delivered.Add(1)
					}
				}
			}()
			e.run(b, &delivered, func(ctx context.Context, i int) error {
				return rpPlainScript.Run(ctx, e.c, []string{e.meta(i), e.stream(i)}, benchPayload).Err()
			})
			cancel()
			ps.Close()
			<-done
		})
	}
}

// BenchmarkReadPathPublishOnly: rpPlainScript and rpNotifyScript with
// nobody reading or subscribed, so that the benchmarks above can be read
// as publisher + read path; at 16KB, what XREVRANGE's copy of the previous
// entry into Lua adds to an append.
func BenchmarkReadPathPublishOnly(b *testing.B) {
	big := []byte(`"` + strings.Repeat("x", 16<<10) + `"`)
	for _, size := range []string{"80B", "16KB"} {
		for _, mode := range []string{"plain", "SPUBLISH", "SPUBLISH-metalast"} {
			b.Run(mode+"/"+size, func(b *testing.B) {
				payload := benchPayload
				if size == "16KB" {
					payload = big
				}
				e := rpSetup(b, "rpp:")
				ctx := context.Background()
				start := rpSnap(b, e.c)
				b.ResetTimer()
				for range b.N {
					i := rand.IntN(rpChannels)
					var err error
					switch mode {
					case "plain":
						err = rpPlainScript.Run(ctx, e.c, []string{e.meta(i), e.stream(i)}, payload).Err()
					case "SPUBLISH":
						err = rpNotifyScript.Run(ctx, e.c, []string{e.meta(i), e.stream(i), e.notif(i)}, payload, mode).Err()
					default:
						err = rpNotifyMetaScript.Run(ctx, e.c, []string{e.meta(i), e.stream(i), e.notif(i)}, payload, "SPUBLISH").Err()
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				rpReport(b, e.c, start, b.N)
			})
		}
	}
}

// BenchmarkReadPathChurn: one follow plus one unfollow, per op, on a
// replica following rpChannels channels. ssubscribe: SSUBSCRIBE and
// SUNSUBSCRIBE of one more channel on the connection subscribed to all,
// each confirmed. xread-reissue: today's cost, a reader blocked over 100
// keys is CLIENT UNBLOCKed and re-issues its XREAD (twice per op: follow
// and unfollow each restart the shared read).
func BenchmarkReadPathChurn(b *testing.B) {
	b.Run("ssubscribe", func(b *testing.B) {
		srv := redistest.Start(b, redistest.Options{})
		c := srv.Client()
		ctx := context.Background()
		chans := make([]string, rpChannels)
		for i := range chans {
			chans[i] = fmt.Sprintf("n:{c%d}", i)
		}
		ps := c.SSubscribe(ctx, chans...)
		defer ps.Close()
		for range chans {
			if _, err := ps.Receive(ctx); err != nil {
				b.Fatal(err)
			}
		}
		start := rpSnap(b, c)
		b.ResetTimer()
		for i := range b.N {
			ch := fmt.Sprintf("n:{x%d}", i)
			if err := ps.SSubscribe(ctx, ch); err != nil {
				b.Fatal(err)
			}
			if _, err := ps.Receive(ctx); err != nil {
				b.Fatal(err)
			}
			if err := ps.SUnsubscribe(ctx, ch); err != nil {
				b.Fatal(err)
			}
			if _, err := ps.Receive(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		rpReport(b, c, start, b.N)
	})
	b.Run("xread-reissue", func(b *testing.B) {
		srv := redistest.Start(b, redistest.Options{})
		c := srv.Client()
		ctx := context.Background()
		streams := make([]string, 2*rpPerReader)
		for i := range rpPerReader {
			streams[i] = fmt.Sprintf("ch:{c%d}", i)
			if err := c.XAdd(ctx, &redis.XAddArgs{Stream: streams[i], Values: []any{"data", "x"}}).Err(); err != nil {
				b.Fatal(err)
			}
			streams[rpPerReader+i] = "$"
		}
		conn := c.Conn()
		defer conn.Close()
		id, err := conn.ClientID(ctx).Result()
		if err != nil {
			b.Fatal(err)
		}
		start := rpSnap(b, c)
		b.ResetTimer()
		for range 2 * b.N {
			ret := make(chan error, 1)
			go func() {
				ret <- conn.XRead(ctx, &redis.XReadArgs{Streams: streams, Block: 10 * time.Second}).Err()
			}()
			for { // an UNBLOCK that arrives first finds nothing blocked
				time.Sleep(100 * time.Microsecond)
				if n, err := c.ClientUnblock(ctx, id).Result(); err == nil && n == 1 {
					break
				}
			}
			if err := <-ret; err != redis.Nil {
				b.Fatalf("XREAD after UNBLOCK: %v", err)
			}
		}
		b.StopTimer()
		rpReport(b, c, start, b.N)
	})
}
