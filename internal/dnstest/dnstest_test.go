package dnstest_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tslm/tslm/internal/dnstest"
)

// query asks srv one question over UDP, with EDNS0 as HAProxy does.
func query(t *testing.T, srv *dnstest.Server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(8192, false)
	c := dns.Client{Net: "udp", Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, srv.Addr())
	if err != nil {
		t.Fatalf("query %s %s: %v", name, dns.TypeToString[qtype], err)
	}
	if r.Id != m.Id || len(r.Question) != 1 || r.Question[0] != m.Question[0] {
		t.Fatalf("answer %v does not match the query %v", r, m)
	}
	return r
}

// addrs returns the answer's addresses, checking each record's TTL.
func addrs(t *testing.T, r *dns.Msg) []string {
	t.Helper()
	var out []string
	for _, rr := range r.Answer {
		if rr.Header().Ttl != 1 {
			t.Errorf("%v: TTL %d, want 1", rr, rr.Header().Ttl)
		}
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		default:
			t.Errorf("unexpected record %v", rr)
		}
	}
	slices.Sort(out)
	return out
}

func TestAnswersWhatIsSetForTheBalancer(t *testing.T) {
	srv := dnstest.Start(t)
	if r := query(t, srv, "tslm", dns.TypeA); r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
		t.Fatalf("a name never set: %v, want NXDOMAIN", r)
	}

	srv.Set("tslm", netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("::1"))
	r := query(t, srv, "TSLM.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative || r.IsEdns0() == nil {
		t.Fatalf("A tslm: %v, want an authoritative NOERROR with EDNS0", r)
	}
	if got := addrs(t, r); !slices.Equal(got, []string{"127.0.0.2", "127.0.0.3"}) {
		t.Errorf("A tslm = %v, want the two IPv4 addresses", got)
	}
	if got := addrs(t, query(t, srv, "tslm", dns.TypeAAAA)); !slices.Equal(got, []string{"::1"}) {
		t.Errorf("AAAA tslm = %v, want ::1", got)
	}
	if r := query(t, srv, "other", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("another name: rcode %d, want NXDOMAIN", r.Rcode)
	}

	srv.Set("tslm", netip.MustParseAddr("127.0.0.4"))
	if got := addrs(t, query(t, srv, "tslm", dns.TypeA)); !slices.Equal(got, []string{"127.0.0.4"}) {
		t.Errorf("after a second Set: A tslm = %v, want 127.0.0.4", got)
	}
	if r := query(t, srv, "tslm", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("AAAA of a name with IPv4 only: %v, want NOERROR without records", r)
	}

	srv.Set("tslm")
	if r := query(t, srv, "tslm", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("a name set to nothing: rcode %d, want NXDOMAIN", r.Rcode)
	}
	if n := srv.Queries(); n != 7 {
		t.Errorf("Queries() = %d, want 7", n)
	}
}
