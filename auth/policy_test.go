package auth

import (
	"strings"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	policy, err := NewPolicy([]ChannelRule{
		{Pattern: MustParsePattern("open.*"), Anonymous: Ops(OpSubscribe)},
		{Pattern: MustParsePattern("rpc.*"), Public: Ops(OpSubscribe, OpRequest), PublicSet: true},
		{Pattern: MustParsePattern("closed.*"), PublicSet: true},   // nothing public
		{Pattern: MustParsePattern("*"), Anonymous: Ops(OpCreate)}, // shadowed by the rules above for their names
	})
	if err != nil {
		t.Fatal(err)
	}
	alice := &Principal{Subject: "alice", Issuer: "https://sso", Expires: now.Add(time.Hour),
		Grants: []Grant{{Ops: Ops(OpSubscribe, OpRequest), Patterns: []Pattern{MustParsePattern("rpc.*"), MustParsePattern("closed.a")}}}}
	expired := &Principal{Subject: "old", Expires: now, Grants: alice.Grants}
	public := Listener{Public: true, Mode: ModeOptional, Allow: Ops(OpSubscribe)}
	internal := Listener{Mode: ModeRequired, Allow: AllOps}
	off := Listener{Public: true, Mode: ModeOff, Allow: Ops(OpSubscribe)}

	for _, tc := range []struct {
		name    string
		l       Listener
		who     *Principal
		op      Op
		channel string
		want    Verdict
		why     string // part of the refusal
	}{
		{"auth off: the listener decides alone", off, nil, OpSubscribe, "prices", Allowed, ""},
		{"auth off: still under the ceiling", off, nil, OpPublish, "prices", Forbidden, "not allowed on this listener"},
		{"auth off: a rule's public list is the ceiling", off, nil, OpRequest, "rpc.q", Allowed, ""},
		{"anonymous by rule", public, nil, OpSubscribe, "open.board", Allowed, ""},
		{"anonymous elsewhere", public, nil, OpSubscribe, "prices", Unauthenticated, "needs credentials"},
		{"anonymous op the rule does not list", public, nil, OpRequest, "open.board", Forbidden, "not allowed on this listener"},
		{"granted, and the rule opens request publicly", public, alice, OpRequest, "rpc.q", Allowed, ""},
		{"granted, but the listener does not allow it", public, alice, OpRequest, "closed.a", Forbidden, "not allowed on this listener"},
		{"the rule's empty public list closes the channel", public, alice, OpSubscribe, "closed.a", Forbidden, "not allowed on this listener"},
		{"not granted", public, alice, OpSubscribe, "prices", Forbidden, `not granted to "alice"`},
		{"expired principal is granted nothing", public, expired, OpRequest, "rpc.q", Forbidden, "not granted"},
		{"public rule lists do not apply to the internal listener", internal, alice, OpSubscribe, "closed.a", Allowed, ""},
		{"required mode: anonymous rule still applies", internal, nil, OpCreate, "prices", Allowed, ""},
		{"required mode: nothing else anonymous", internal, nil, OpPublish, "prices", Unauthenticated, "authenticate first"},
		{"no rule reaches an inbox", internal, nil, OpCreate, "_inbox.0123", Unauthenticated, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, why := policy.Decide(tc.l, tc.who, tc.op, tc.channel, now)
			if v != tc.want || !strings.Contains(why, tc.why) {
				t.Fatalf("Decide = %v, %q; want %v with %q", v, why, tc.want, tc.why)
			}
			if v != Allowed && !strings.Contains(why, tc.channel) {
				t.Errorf("refusal %q does not name the channel", why)
			}
		})
	}

	var none *Policy // no rules
	if v, _ := none.Decide(public, nil, OpSubscribe, "open.board", now); v != Unauthenticated {
		t.Errorf("nil policy: anonymous subscribe = %v, want Unauthenticated", v)
	}
}

func TestAllowsSomewhere(t *testing.T) {
	policy, err := NewPolicy([]ChannelRule{{Pattern: MustParsePattern("rpc.*"), Public: Ops(OpRequest), PublicSet: true}})
	if err != nil {
		t.Fatal(err)
	}
	public := Listener{Public: true, Allow: Ops(OpSubscribe)}
	internal := Listener{Allow: Ops(OpSubscribe)}
	for _, tc := range []struct {
		p    *Policy
		l    Listener
		op   Op
		want bool
	}{
		{policy, public, OpSubscribe, true},
		{policy, public, OpRequest, true},
		{policy, public, OpPublish, false},
		{policy, internal, OpRequest, false},
		{nil, public, OpRequest, false},
	} {
		if got := tc.p.AllowsSomewhere(tc.l, tc.op); got != tc.want {
			t.Errorf("AllowsSomewhere(%+v, %v) = %v, want %v", tc.l, tc.op, got, tc.want)
		}
	}
}

func TestParseModeAndOps(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeOff, "off": ModeOff, "optional": ModeOptional, "required": ModeRequired} {
		if m, err := ParseMode(in); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", in, m, err, want)
		}
	}
	if _, err := ParseMode("Required"); err == nil {
		t.Error("ParseMode accepted a mode in another case")
	}
	s, err := ParseOps([]string{"subscribe", " request "})
	if err != nil || s != Ops(OpSubscribe, OpRequest) || s.String() != "subscribe,request" {
		t.Errorf("ParseOps = %v (%s), %v", s, s, err)
	}
	if _, err := ParseOps([]string{"admin"}); err == nil {
		t.Error("ParseOps accepted an unknown operation")
	}
}

func TestNewPolicyRefuses(t *testing.T) {
	for _, rules := range [][]ChannelRule{
		{{}},
		{{Pattern: MustParsePattern("a"), MaxLen: -1}},
		{{Pattern: MustParsePattern("a"), Retention: -time.Second}},
		{{Pattern: MustParsePattern("a"), Anonymous: 1}}, // bit 0 is no operation
	} {
		if _, err := NewPolicy(rules); err == nil {
			t.Errorf("NewPolicy(%+v) accepted", rules)
		}
	}
}
