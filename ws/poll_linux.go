package ws

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller waits, with one epoll instance and one goroutine for the whole
// process, for input on the sockets of connections whose reader has parked
// (reader.go), and wakes each one's reader when its socket has something
// to read. An idle connection thus holds no goroutine and no stack: the Go
// runtime's own poller parks a goroutine per waiting socket, which is the
// largest part of an idle connection's memory.
//
// Each socket is registered level-triggered and one-shot: an event disarms
// it until its reader, having read all it could, arms it again, so that
// one reader runs at a time and input that arrived while it ran wakes it
// again at once. Events name the connection by a number, not by its file
// descriptor, which the kernel reuses as soon as a socket closes.
type poller struct {
	epfd   int
	wakefd int // an eventfd: tells the loop that nothing is registered any more

	mu      sync.Mutex
	conns   map[uint64]*conn
	next    uint64
	running bool // the loop goroutine is running
}

var (
	thePoller     *poller
	thePollerErr  error
	thePollerOnce sync.Once
)

// epollEvents is what a parked socket waits for: input, or the peer's end
// (which reads as EOF, or as the error that ends the connection).
const epollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// sharedPoller returns the process's poller, made on first use; nil with
// the reason when epoll is not available, and connections then keep a
// blocked reader goroutine each.
func sharedPoller() (*poller, error) {
	thePollerOnce.Do(func() {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			thePollerErr = err
			return
		}
		wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			unix.Close(epfd)
			thePollerErr = err
			return
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN} // id 0: the eventfd
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
			unix.Close(epfd)
			unix.Close(wakefd)
			thePollerErr = err
			return
		}
		thePoller = &poller{epfd: epfd, wakefd: wakefd, conns: make(map[uint64]*conn)}
	})
	return thePoller, thePollerErr
}

// pollable returns the raw socket under nc when its readiness is the
// connection's: a plain TCP or Unix socket. TLS keeps decrypted input the
// socket no longer shows, and other wrappers may buffer too.
func pollable(nc net.Conn) (syscall.RawConn, bool) {
	var sc syscall.Conn
	switch c := nc.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil, false
	}
	raw, err := sc.SyscallConn()
	return raw, err == nil
}

// add registers c's socket, armed. The loop runs while anything is
// registered, so that a process with no connection keeps no goroutine.
func (p *poller) add(c *conn) error {
	p.mu.Lock()
	p.next++
	c.pollID = p.next
	p.conns[c.pollID] = c
	if !p.running {
		p.running = true
		go p.loop()
	}
	p.mu.Unlock()
	if err := p.ctl(c, unix.EPOLL_CTL_ADD); err != nil {
		p.remove(c)
		return err
	}
	return nil
}

// arm waits for c's socket's next input. False when the socket is closed.
func (p *poller) arm(c *conn) bool {
	return p.ctl(c, unix.EPOLL_CTL_MOD) == nil
}

// ctl runs epoll_ctl on c's socket while the runtime holds the socket
// open, so that a concurrent close cannot hand the number to another one.
func (p *poller) ctl(c *conn, op int) error {
	var opErr error
	err := c.raw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: epollEvents, Fd: int32(uint32(c.pollID)), Pad: int32(uint32(c.pollID >> 32))}
		opErr = unix.EpollCtl(p.epfd, op, int(fd), &ev)
	})
	return errors.Join(err, opErr)
}

// remove forgets c; its socket is deregistered if still open (closing it
// deregisters it too).
func (p *poller) remove(c *conn) {
	c.raw.Control(func(fd uintptr) { unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	p.mu.Lock()
	delete(p.conns, c.pollID)
	if len(p.conns) == 0 && p.running {
		var one = [8]byte{1}
		unix.Write(p.wakefd, one[:])
	}
	p.mu.Unlock()
}

func (p *poller) loop() {
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// Not expected of a valid epoll instance: say so, and wake
			// every parked reader, which then blocks in its own read.
			slog.Error("epoll_wait failed: idle connections fall back to a goroutine each", "err", err)
			p.mu.Lock()
			p.running = false
			all := make([]*conn, 0, len(p.conns))
			for _, c := range p.conns {
				all = append(all, c)
			}
			p.mu.Unlock()
			for _, c := range all {
				c.pollFailed()
			}
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				var buf [8]byte
				unix.Read(p.wakefd, buf[:])
				p.mu.Lock()
				if len(p.conns) == 0 {
					p.running = false
					p.mu.Unlock()
					return
				}
				p.mu.Unlock()
				continue
			}
			p.mu.Lock()
			c := p.conns[id]
			p.mu.Unlock()
			if c != nil {
				c.wake()
			}
		}
	}
}
