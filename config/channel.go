package config

import (
	"fmt"

	"github.com/tslm/tslm/auth"
)

// channelTable is a [[channel]] rule.
type channelTable struct {
	Pattern   string    `toml:"pattern"`
	MaxLen    *int64    `toml:"max_len"`
	Retention *string   `toml:"retention"`
	Anonymous []string  `toml:"anonymous"`
	Public    *[]string `toml:"public"`
}

func (l *loader) channels(rules []channelTable) {
	seen := make(map[string]int)
	for i, c := range rules {
		key := fmt.Sprintf("channel[%d]", i)
		ok := true
		var r auth.ChannelRule
		p, err := auth.ParsePattern(c.Pattern)
		switch {
		case !l.ix.has(key + ".pattern"):
			l.fail(key, "has no pattern: name the channels the rule is for, such as \"prices.*\"")
			ok = false
		case err != nil:
			l.fail(key+".pattern", "pattern %q: %v", c.Pattern, err)
			ok = false
		default:
			r.Pattern = p
			if j, dup := seen[c.Pattern]; dup {
				l.warnf(key+".pattern", "channel[%d] has the same pattern and comes first: this rule never applies", j)
			} else {
				seen[c.Pattern] = i
			}
		}
		if v, set := l.positive(key+".max_len", c.MaxLen); set {
			r.MaxLen = v
		} else if c.MaxLen != nil {
			ok = false
		}
		if d, set := l.duration(key+".retention", c.Retention); set {
			r.Retention = d
		} else if c.Retention != nil {
			ok = false
		}
		anon, aok := l.ops(key+".anonymous", c.Anonymous)
		r.Anonymous = anon
		if c.Public != nil {
			pub, pok := l.ops(key+".public", *c.Public)
			r.Public, r.PublicSet = pub, true
			aok = aok && pok
		}
		if ok && aok {
			l.cfg.Channels = append(l.cfg.Channels, r)
			l.set("Channels", key)
		}
	}
}
