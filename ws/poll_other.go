//go:build !linux

package ws

import (
	"errors"
	"net"
	"syscall"
)

// poller is Linux's epoll (poll_linux.go); elsewhere every connection
// keeps a reader goroutine blocked on its socket.
type poller struct{}

func sharedPoller() (*poller, error) {
	return nil, errors.New("parking idle connections needs epoll (Linux)")
}

func pollable(net.Conn) (syscall.RawConn, bool) { return nil, false }

func (p *poller) add(*conn) error { return errors.New("no poller") }
func (p *poller) arm(*conn) bool  { return false }
func (p *poller) remove(*conn)    {}
