package clientip

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	r, err := Parse([]string{"10.0.0.0/8", " 192.168.1.7 ", "::1", "fd00::/8", "172.16.5.9/12"})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"10.1.2.3":        true,
		"::ffff:10.1.2.3": true, // the same address, mapped
		"11.0.0.1":        false,
		"192.168.1.7":     true,
		"192.168.1.8":     false,
		"::1":             true,
		"fd12::1":         true,
		"fe80::1":         false,
		"172.31.255.255":  true, // a prefix written with host bits set
		"172.32.0.0":      false,
		"::ffff:11.0.0.1": false,
	} {
		a, _ := netip.ParseAddr(addr)
		if got := r.Trusted(a); got != want {
			t.Errorf("Trusted(%s) = %v, want %v", addr, got, want)
		}
	}

	for _, bad := range []string{"10.0.0.0/33", "localhost", "10.0.0", "", "fe80::1%eth0", "1.2.3.4:80"} {
		_, err := Parse([]string{"127.0.0.1", bad})
		if err == nil {
			t.Errorf("Parse(%q) accepted it", bad)
			continue
		}
		if !strings.Contains(err.Error(), `"`+bad+`"`) {
			t.Errorf("Parse(%q) = %v, which does not name the entry", bad, err)
		}
	}
}

func TestClientIP(t *testing.T) {
	r, err := Parse([]string{"10.0.0.0/8", "2001:db8:ffff::/48"})
	if err != nil {
		t.Fatal(err)
	}
	const (
		proxy   = "10.0.0.1:4000"
		outside = "203.0.113.9:4000"
	)
	tests := []struct {
		name   string
		remote string
		xff    []string
		fwd    []string
		want   string
	}{
		{"no proxy, no header", outside, nil, nil, "203.0.113.9"},
		{"IPv6 peer", "[2001:db8::5]:9", nil, nil, "2001:db8::5"},
		{"mapped peer is unmapped", "[::ffff:203.0.113.9]:9", nil, nil, "203.0.113.9"},
		{"no port in RemoteAddr", "203.0.113.9", nil, nil, "203.0.113.9"},
		{"garbage RemoteAddr", "pipe", nil, nil, "invalid IP"},

		// Spoofing: an untrusted peer's headers are never read.
		{"untrusted peer's XFF ignored", outside, []string{"1.1.1.1"}, nil, "203.0.113.9"},
		{"untrusted peer's Forwarded ignored", outside, nil, []string{"for=1.1.1.1"}, "203.0.113.9"},
		{"untrusted peer claiming a trusted address", outside, []string{"10.0.0.2"}, nil, "203.0.113.9"},

		{"trusted proxy without headers", proxy, nil, nil, "10.0.0.1"},
		{"XFF one hop", proxy, []string{"198.51.100.1"}, nil, "198.51.100.1"},
		{"XFF client's forged entries left of the real one", proxy, []string{"1.1.1.1, 2.2.2.2, 198.51.100.1"}, nil, "198.51.100.1"},
		{"XFF trusted hops skipped", proxy, []string{"198.51.100.1, 10.9.9.9, 10.8.8.8"}, nil, "198.51.100.1"},
		{"XFF forged trusted hop left of the client", proxy, []string{"10.0.0.5, 198.51.100.1, 10.2.2.2"}, nil, "198.51.100.1"},
		{"XFF all trusted gives the leftmost", proxy, []string{"10.3.3.3, 10.2.2.2"}, nil, "10.3.3.3"},
		{"XFF several header lines in order", proxy, []string{"1.1.1.1", "198.51.100.1, 10.2.2.2"}, nil, "198.51.100.1"},
		{"XFF with ports and brackets", proxy, []string{"[2001:db8::1]:80, 198.51.100.1:5555"}, nil, "198.51.100.1"},
		{"XFF bare IPv6", proxy, []string{"2001:db8::1"}, nil, "2001:db8::1"},
		{"XFF mapped entry unmapped", proxy, []string{"::ffff:198.51.100.1"}, nil, "198.51.100.1"},
		{"XFF malformed entry", proxy, []string{"198.51.100.1, not-an-ip"}, nil, "10.0.0.1"},
		{"XFF empty entry", proxy, []string{"198.51.100.1,,10.2.2.2"}, nil, "10.0.0.1"},
		{"XFF empty header", proxy, []string{""}, nil, "10.0.0.1"},
		{"XFF zoned entry", proxy, []string{"fe80::1%eth0"}, nil, "10.0.0.1"},
		{"IPv6 trusted proxy", "[2001:db8:ffff::1]:443", []string{"198.51.100.1"}, nil, "198.51.100.1"},

		{"Forwarded one hop", proxy, nil, []string{"for=198.51.100.1"}, "198.51.100.1"},
		{"Forwarded wins over XFF", proxy, []string{"1.1.1.1"}, []string{"for=198.51.100.1"}, "198.51.100.1"},
		{"Forwarded quoted IPv6 with port", proxy, nil, []string{`for="[2001:db8:cafe::17]:4711"`}, "2001:db8:cafe::17"},
		{"Forwarded quoted IPv4 with port", proxy, nil, []string{`for="198.51.100.1:80"`}, "198.51.100.1"},
		{"Forwarded other parameters and case", proxy, nil, []string{`proto=https;For=198.51.100.1;by=10.0.0.1;host="a.example"`}, "198.51.100.1"},
		{"Forwarded chain, trusted skipped", proxy, nil, []string{"for=1.1.1.1, for=198.51.100.1;proto=http, for=10.4.4.4"}, "198.51.100.1"},
		{"Forwarded several header lines", proxy, nil, []string{"for=1.1.1.1", "for=198.51.100.1"}, "198.51.100.1"},
		{"Forwarded all trusted gives the leftmost", proxy, nil, []string{"for=10.5.5.5, for=10.4.4.4"}, "10.5.5.5"},
		{"Forwarded obfuscated nearest hop stops the walk", proxy, nil, []string{"for=1.1.1.1, for=_hidden"}, "10.0.0.1"},
		{"Forwarded obfuscated with port", proxy, nil, []string{`for=198.51.100.1, for="_gazonk:_p1"`}, "10.0.0.1"},
		{"Forwarded unknown behind a trusted hop", proxy, nil, []string{"for=1.1.1.1, for=unknown, for=10.4.4.4"}, "10.4.4.4"},
		{"Forwarded element without for", proxy, nil, []string{"for=1.1.1.1, proto=https"}, "10.0.0.1"},
		{"Forwarded obfuscated left of the client ignored", proxy, nil, []string{"for=_x, for=198.51.100.1"}, "198.51.100.1"},
		{"Forwarded quoted string with escapes", proxy, nil, []string{`for="198.51.100.1";host="a\"b,c"`}, "198.51.100.1"},
		{"Forwarded empty pairs", proxy, nil, []string{"for=198.51.100.1;;proto=http;"}, "198.51.100.1"},
		{"Forwarded unquoted IPv6 malformed", proxy, nil, []string{"for=[2001:db8::1]"}, "10.0.0.1"},
		{"Forwarded unbracketed IPv6 malformed", proxy, nil, []string{`for="2001:db8::1"`}, "10.0.0.1"},
		{"Forwarded bracketed IPv4 malformed", proxy, nil, []string{`for="[198.51.100.1]"`}, "10.0.0.1"},
		{"Forwarded unterminated quote", proxy, nil, []string{`for="198.51.100.1`}, "10.0.0.1"},
		{"Forwarded for twice in one element", proxy, nil, []string{"for=1.1.1.1;for=198.51.100.1"}, "10.0.0.1"},
		{"Forwarded garbage", proxy, nil, []string{"hello world"}, "10.0.0.1"},
		{"Forwarded not an address", proxy, nil, []string{"for=example.com"}, "10.0.0.1"},
		{"Forwarded bad port", proxy, nil, []string{`for="198.51.100.1:http"`}, "10.0.0.1"},
		{"Forwarded missing value", proxy, nil, []string{"for="}, "10.0.0.1"},
		{"Forwarded malformed does not fall back to XFF", proxy, []string{"198.51.100.1"}, []string{"for=???"}, "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "/", nil)
			req.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			for _, v := range tt.fwd {
				req.Header.Add("Forwarded", v)
			}
			if got := r.ClientIP(req).String(); got != tt.want {
				t.Errorf("ClientIP = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestNilResolverTrustsNobody: a gateway without trusted proxies takes
// the peer's address whatever the headers say.
func TestNilResolverTrustsNobody(t *testing.T) {
	for _, r := range []*Resolver{nil, {}} {
		req, _ := http.NewRequest(http.MethodGet, "/", nil)
		req.RemoteAddr = "127.0.0.1:5000"
		req.Header.Set("X-Forwarded-For", "198.51.100.1")
		req.Header.Set("Forwarded", "for=198.51.100.1")
		if got := r.ClientIP(req).String(); got != "127.0.0.1" {
			t.Errorf("ClientIP = %s, want the peer 127.0.0.1", got)
		}
	}
}
