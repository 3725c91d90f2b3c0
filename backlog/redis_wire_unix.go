//go:build unix

package backlog

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
)

// errWireUnexpectedRead is data waiting on an idle connection, where no
// reply is due: the stream is out of step, or it is a TLS close.
var errWireUnexpectedRead = errors.New("backlog: redis: unexpected data on the idle append connection")

// checkIdle tells whether an idle connection is still open, without
// blocking: after Redis restarted, the first batch on the old connection
// would fail though nothing ran. go-redis checks a pooled connection the
// same way before each use; this one is checked only after it was idle.
func checkIdle(c net.Conn) error {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var checkErr error
	err = raw.Read(func(fd uintptr) bool {
		var buf [1]byte
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case n == 0 && err == nil:
			checkErr = errors.New("backlog: redis: the append connection was closed")
		case n > 0:
			checkErr = errWireUnexpectedRead
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			checkErr = nil
		default:
			checkErr = err
		}
		return true // never wait for input
	})
	if err != nil {
		return err
	}
	return checkErr
}
