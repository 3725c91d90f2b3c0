package ws

import (
	"sync"
	"time"
)

// writerIdle is how long a writer goroutine waits for another connection
// to write for before it ends.
const writerIdle = time.Second

// writerPool runs connections' writers (conn.writeRun) on goroutines that
// outlive one connection's turn. A connection has a writer only while it
// has something to write, and a goroutine started for every turn would
// start on a small stack and grow it on every write's way to the socket:
// at 25 messages a second to 1000 subscribers, starting, growing and
// ending a goroutine per message cost about a sixth of the gateway's CPU
// (docs/benchmarks.md). A pooled one keeps its grown stack. There is still
// one writer per connection at a time (conn.wmu's writing), and goroutines
// idle for writerIdle end, so a replica whose clients are all idle holds
// none.
type writerPool struct {
	mu      sync.Mutex
	idle    []*writerGoroutine // the most recently used last
	cleaner *time.Timer        // armed while any is idle
}

type writerGoroutine struct {
	next      chan *conn // a connection to write for; nil: end
	idleSince time.Time
}

// run has a pooled goroutine, or a new one, run c's writer.
func (p *writerPool) run(c *conn) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.next <- c
		return
	}
	p.mu.Unlock()
	w := &writerGoroutine{next: make(chan *conn, 1)}
	go w.loop(p, c)
}

func (w *writerGoroutine) loop(p *writerPool, c *conn) {
	var batch []queued
	for c != nil {
		batch = c.writeRun(batch)
		p.mu.Lock()
		w.idleSince = time.Now()
		p.idle = append(p.idle, w)
		if p.cleaner == nil {
			p.cleaner = time.AfterFunc(writerIdle, p.clean)
		}
		p.mu.Unlock()
		c = <-w.next
	}
}

// clean ends the goroutines idle for writerIdle, the longest idle first,
// and comes back while any is left.
func (p *writerPool) clean() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleSince) >= writerIdle {
		p.idle[n].next <- nil
		n++
	}
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	if len(p.idle) == 0 {
		p.cleaner = nil
		return
	}
	p.cleaner.Reset(writerIdle - now.Sub(p.idle[0].idleSince))
}

// stop ends the idle goroutines now; running ones end when their turn
// does, after writerIdle. For Shutdown, once every connection is gone.
func (p *writerPool) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.idle {
		w.next <- nil
	}
	clear(p.idle)
	p.idle = p.idle[:0]
	if p.cleaner != nil {
		p.cleaner.Stop()
		p.cleaner = nil
	}
}
