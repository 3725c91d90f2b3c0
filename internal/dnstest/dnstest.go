// Package dnstest runs a small DNS server for one test, standing in for
// Docker's embedded DNS in front of HAProxy's "resolvers" section: it
// answers A (and AAAA) queries for the names the test sets, with a TTL of
// one second, and NXDOMAIN for every other name, over UDP on a free
// loopback port. A Server is safe for concurrent use.
package dnstest

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// ttl is short so that a resolver holding an answer asks again soon: like
// Docker's DNS, which answers with whatever runs at the moment, a Set
// is seen within about a second.
const ttl = 1

// Server is a DNS server on 127.0.0.1, stopped when the test ends.
type Server struct {
	srv  *dns.Server
	addr string

	mu    sync.Mutex
	names map[string][]netip.Addr // by lower-case FQDN

	queries atomic.Int64
}

// Start starts a server and registers its shutdown with t.
func Start(t testing.TB) *Server {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("dnstest: listen: %v", err)
	}
	s := &Server{addr: pc.LocalAddr().String(), names: map[string][]netip.Addr{}}
	started := make(chan struct{})
	s.srv = &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: func() { close(started) }}
	served := make(chan error, 1)
	go func() { served <- s.srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-served:
		t.Fatalf("dnstest: serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("dnstest: not serving after 10s")
	}
	t.Cleanup(func() {
		if err := s.srv.Shutdown(); err != nil {
			t.Errorf("dnstest: shutdown: %v", err)
		}
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Errorf("dnstest: still serving 10s after shutdown")
		}
	})
	return s
}

// Addr is the server's host:port (UDP).
func (s *Server) Addr() string { return s.addr }

// Set makes name resolve to addrs: IPv4 ones answer A queries, IPv6 ones
// AAAA queries (a type without addresses is answered with none, NOERROR).
// No addrs removes the name: it is then NXDOMAIN, as a service with no
// running container is for Docker's DNS.
func (s *Server) Set(name string, addrs ...netip.Addr) {
	key := strings.ToLower(dns.Fqdn(name))
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(addrs) == 0 {
		delete(s.names, key)
		return
	}
	s.names[key] = append([]netip.Addr(nil), addrs...)
}

// Queries counts the queries answered so far, to tell in a failure
// whether a resolver asked at all.
func (s *Server) Queries() int64 { return s.queries.Load() }

// ServeDNS answers one query; it is the server's dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	s.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	s.mu.Lock()
	addrs, ok := s.names[strings.ToLower(q.Name)]
	s.mu.Unlock()
	if !ok {
		m.Rcode = dns.RcodeNameError
		w.WriteMsg(m)
		return
	}
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: ttl}
	for _, a := range addrs {
		switch {
		case q.Qtype == dns.TypeA && a.Is4():
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case q.Qtype == dns.TypeAAAA && a.Is6() && !a.Is4In6():
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	w.WriteMsg(m)
}
