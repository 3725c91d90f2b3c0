package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Mode is how a listener treats credentials.
type Mode uint8

const (
	// ModeOff checks no credentials: every connection may do what the
	// listener allows. The internal listener's default, for trusted
	// networks; the public listener's too, for compatibility.
	ModeOff Mode = iota
	// ModeOptional lets connections without credentials do what the
	// channel rules allow anonymously, and authenticated ones what their
	// grants allow.
	ModeOptional
	// ModeRequired closes a connection that has not authenticated within
	// the listener's deadline; until then it may do nothing.
	ModeRequired
)

var modeNames = [...]string{ModeOff: "off", ModeOptional: "optional", ModeRequired: "required"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// ParseMode reads a mode as String writes it; "" is ModeOff.
func ParseMode(s string) (Mode, error) {
	if s == "" {
		return ModeOff, nil
	}
	for m, n := range modeNames {
		if n == s {
			return Mode(m), nil
		}
	}
	return 0, fmt.Errorf("unknown auth mode %q: want off, optional or required", s)
}

// ParseOps reads operation names, such as ["subscribe", "publish"].
func ParseOps(names []string) (OpSet, error) {
	var s OpSet
	for _, n := range names {
		op, err := ParseOp(strings.TrimSpace(n))
		if err != nil {
			return 0, err
		}
		s |= Ops(op)
	}
	return s, nil
}

// AllOps is every operation.
const AllOps = allOps

// String lists the set's operations, comma-separated, in ParseOps's
// names.
func (s OpSet) String() string {
	var names []string
	for o := OpSubscribe; o < opEnd; o++ {
		if s.Has(o) {
			names = append(names, o.String())
		}
	}
	return strings.Join(names, ",")
}

// ChannelRule configures the channels its pattern matches. Rules are
// tried in order and the first match applies alone.
type ChannelRule struct {
	Pattern Pattern
	// MaxLen and Retention are the defaults of a channel created without
	// them; zero means the gateway's defaults.
	MaxLen    int64
	Retention time.Duration
	// Anonymous are the operations connections without credentials may
	// perform here, on listeners that check credentials.
	Anonymous OpSet
	// Public, when PublicSet, replaces the public listener's allowed
	// operations (TSLM_PUBLIC_ALLOW) on these channels.
	Public    OpSet
	PublicSet bool
}

// Listener is what a decision needs to know of the listener a command came
// through.
type Listener struct {
	Public bool
	Mode   Mode
	// Allow is what the listener allows at all: the ceiling no grant
	// raises.
	Allow OpSet
}

// Verdict is a decision's outcome.
type Verdict uint8

const (
	Allowed Verdict = iota
	// Forbidden: the listener does not allow it here, or the principal's
	// grants do not cover it. Credentials would not help, or other ones
	// would be needed.
	Forbidden
	// Unauthenticated: no credentials were presented, and anonymous
	// connections may not do it.
	Unauthenticated
)

// Policy decides who may do what where. The zero Policy has no channel
// rules. It is safe for concurrent use: it never changes once made.
type Policy struct {
	rules []ChannelRule
}

// NewPolicy checks rules and returns the policy they make.
func NewPolicy(rules []ChannelRule) (*Policy, error) {
	for i, r := range rules {
		if r.Pattern.IsZero() {
			return nil, fmt.Errorf("channel rule %d: no pattern", i+1)
		}
		if r.MaxLen < 0 || r.Retention < 0 {
			return nil, fmt.Errorf("channel rule %d (%s): max_len and retention must not be negative", i+1, r.Pattern)
		}
		if r.Anonymous&^allOps != 0 || r.Public&^allOps != 0 {
			return nil, errors.New("channel rule: unknown operations")
		}
	}
	return &Policy{rules: append([]ChannelRule(nil), rules...)}, nil
}

// Rule returns the first rule whose pattern matches channel.
func (p *Policy) Rule(channel string) (ChannelRule, bool) {
	if p == nil {
		return ChannelRule{}, false
	}
	for _, r := range p.rules {
		if r.Pattern.Match(channel) {
			return r, true
		}
	}
	return ChannelRule{}, false
}

// AllowsSomewhere reports whether listener l allows op on some channel:
// its own allowed operations, or on the public listener a rule's
// replacement of them. It is the ceiling of a command that names no
// channel, such as resuming a request session.
func (p *Policy) AllowsSomewhere(l Listener, op Op) bool {
	if l.Allow.Has(op) {
		return true
	}
	if !l.Public || p == nil {
		return false
	}
	for _, r := range p.rules {
		if r.PublicSet && r.Public.Has(op) {
			return true
		}
	}
	return false
}

// Decide says whether who (nil: no credentials) may perform op on channel,
// through listener l, at now; why explains a refusal in words a client may
// read (it names the channel and the operation, never a grant).
//
// The listener's allowed operations, as the channel's rule may replace
// them on the public listener, are a ceiling; under it, a listener that
// checks credentials allows what who's grants allow plus what the rule
// allows anonymously.
func (p *Policy) Decide(l Listener, who *Principal, op Op, channel string, now time.Time) (v Verdict, why string) {
	rule, _ := p.Rule(channel)
	ceiling := l.Allow
	if l.Public && rule.PublicSet {
		ceiling = rule.Public
	}
	if !ceiling.Has(op) {
		return Forbidden, fmt.Sprintf("%s is not allowed on this listener for channel %q", op, channel)
	}
	if l.Mode == ModeOff || rule.Anonymous.Has(op) || who.Allows(op, channel, now) {
		return Allowed, ""
	}
	if who == nil {
		return Unauthenticated, fmt.Sprintf("%s on channel %q needs credentials: authenticate first", op, channel)
	}
	return Forbidden, fmt.Sprintf("%s on channel %q is not granted to %q", op, channel, who.Subject)
}
