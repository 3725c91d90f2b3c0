package ws

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
)

// batchBytes bounds what the writer buffers before it writes to the
// socket: a batch of queued frames goes out in writes of about this size
// (one frame more at most), each under its own write deadline, so that
// WriteTimeout still bounds one write of bounded size. Larger writes save
// little once the syscall is amortized over dozens of frames.
const batchBytes = 64 << 10

// batchBufs holds the buffers of batches being written, borrowed for one
// batch only: an idle connection holds none.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// batchConn is the socket under a connection's gorilla Conn. Gorilla
// writes every frame to its net.Conn as soon as the frame is complete,
// one syscall per frame; between begin and end, the writer goroutine's
// batch, batchConn appends those writes to a buffer instead, and flush
// writes it in one. Outside a batch writes go straight through.
//
// Gorilla serializes its frames (its own lock), but frames come from two
// goroutines: the writer's data frames, pings and close, and the reader's
// pongs and close echo. A frame the reader writes during a batch joins the
// buffer, even while a flush is on the socket (flush takes the buffer and
// leaves an empty one), and goes out with the next flush, the last one
// being end's: so the reader never waits on a client that is slow to read,
// and its pong never fails on a deadline shorter than the writer's. The
// socket's write deadline is the flush's while batching: gorilla sets one
// before every frame, which would otherwise move a flush's. mu guards
// batching and buf; it is held over a write only outside a batch, so that
// begin waits for a frame on its way to the socket.
type batchConn struct {
	net.Conn

	mu       sync.Mutex
	batching bool
	buf      *[]byte // borrowed from batchBufs while batching
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batching {
		*b.buf = append(*b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

func (b *batchConn) SetWriteDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batching {
		return nil // flush sets its own
	}
	return b.Conn.SetWriteDeadline(t)
}

// begin starts a batch. Writer goroutine only, like the methods below.
func (b *batchConn) begin() {
	b.mu.Lock()
	b.batching = true
	b.buf = batchBufs.Get().(*[]byte)
	b.mu.Unlock()
}

// buffered is how many bytes wait for flush.
func (b *batchConn) buffered() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf == nil {
		return 0
	}
	return len(*b.buf)
}

// flush writes what the batch holds in one write under deadline; the batch
// goes on, taking frames while the write is on the socket.
func (b *batchConn) flush(deadline time.Time) error {
	b.mu.Lock()
	out := b.buf
	if len(*out) == 0 {
		b.mu.Unlock()
		return nil
	}
	b.buf = batchBufs.Get().(*[]byte)
	b.mu.Unlock()
	defer putBatchBuf(out)
	if err := b.Conn.SetWriteDeadline(deadline); err != nil {
		return err
	}
	_, err := b.Conn.Write(*out)
	return err
}

// end flushes what the batch still holds, frames written by the reader
// during the last flush included, and ends the batch.
func (b *batchConn) end(deadline time.Time) error {
	for {
		b.mu.Lock()
		if len(*b.buf) == 0 {
			b.stop()
			b.mu.Unlock()
			return nil
		}
		b.mu.Unlock()
		if err := b.flush(deadline); err != nil {
			b.abort()
			return err
		}
	}
}

// abort ends the batch, dropping what it holds: whole frames (gorilla
// writes each under its lock, and the writer calls this between its
// frames), so the stream stays well formed for a close frame after it.
func (b *batchConn) abort() {
	b.mu.Lock()
	b.stop()
	b.mu.Unlock()
}

// stop leaves batching and gives the buffer back. It expects b.mu held.
func (b *batchConn) stop() {
	b.batching = false
	putBatchBuf(b.buf)
	b.buf = nil
}

// putBatchBuf returns buf to batchBufs, unless a large frame grew it: that
// is let go rather than kept for every later batch.
func putBatchBuf(buf *[]byte) {
	if cap(*buf) <= 2*batchBytes {
		*buf = (*buf)[:0]
		batchBufs.Put(buf)
	}
}

// batchWriter hands the upgrader, through Hijack, the client's socket
// wrapped in a batchConn. Gorilla takes its net.Conn from Hijack, so this
// is how frames get batched without forking it.
//
// It also hands gorilla the buffer to read the client's input through,
// which gorilla reuses when the upgrader's ReadBufferSize is 0: a smaller
// one than the HTTP server's, and one the reader can ask whether input is
// waiting in it (reader.go) before it parks.
type batchWriter struct {
	http.ResponseWriter
	conn *batchConn    // set by a successful Hijack
	br   *bufio.Reader // likewise
}

func (w *batchWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &batchConn{Conn: nc}
	if brw.Reader.Buffered() > 0 {
		// Input before the handshake's end, which gorilla refuses.
		return w.conn, brw, nil
	}
	w.br = bufio.NewReaderSize(w.conn, readBufferBytes)
	return w.conn, bufio.NewReadWriter(w.br, brw.Writer), nil
}

func (w *batchWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
