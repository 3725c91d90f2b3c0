package backlog

import (
	"context"
	"errors"
	"strconv"
	"strings"
)

// listScans bounds the SCAN calls one List makes, so that a page over a
// keyspace holding few channels among many other keys returns in bounded
// time, possibly short or empty, with a cursor to go on from.
const listScans = 32

var errListUnsupported = errors.New("backlog: List needs a standalone or Sentinel Redis: SCAN walks one node")

// List walks the meta keys with SCAN MATCH: no registry to keep in step
// with the channels, and channels that publishers created by hand are
// listed too. SCAN's guarantees are List's: every channel that exists
// throughout the walk is returned, maybe twice, in no particular order.
//
// SCAN's COUNT is a hint: a call may return a few more keys than asked
// for. Those beyond limit travel in the cursor, which is "<scan
// cursor>[~<name>...]", with "end" for a scan cursor that is done.
func (r *Redis) List(ctx context.Context, prefix, cursor string, limit int) ([]string, string, error) {
	if r.isClosed() {
		return nil, "", ErrClosed
	}
	if r.conns == nil {
		return nil, "", errListUnsupported
	}
	scan, done, names, err := parseListCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	match := globEscape(r.cfg.KeyPrefix+"meta:{"+prefix) + "*}"
	head := r.cfg.KeyPrefix + "meta:{"
	seen := make(map[string]struct{}, len(names))
	for _, n := range names {
		seen[n] = struct{}{}
	}
	for calls := 0; !done && (limit <= 0 || len(names) < limit) && calls < listScans; calls++ {
		count := int64(1000)
		if limit > 0 {
			count = int64(limit - len(names))
		}
		keys, next, err := r.client.Scan(ctx, scan, match, count).Result()
		if err != nil {
			return nil, "", r.wrap(ctx, err)
		}
		for _, k := range keys {
			name := strings.TrimSuffix(strings.TrimPrefix(k, head), "}")
			if _, dup := seen[name]; dup || !ValidChannel(name) || !strings.HasPrefix(name, prefix) {
				continue
			}
			seen[name] = struct{}{}
			names = append(names, name)
		}
		scan, done = next, next == 0
	}
	var rest []string
	if limit > 0 && len(names) > limit {
		names, rest = names[:limit:limit], names[limit:]
	}
	if done && len(rest) == 0 {
		return names, "", nil
	}
	next := "end"
	if !done {
		next = strconv.FormatUint(scan, 10)
	}
	for _, n := range rest {
		next += "~" + n
	}
	return names, next, nil
}

// parseListCursor reads a cursor of List; "" starts a walk.
func parseListCursor(cursor string) (scan uint64, done bool, names []string, err error) {
	if cursor == "" {
		return 0, false, nil, nil
	}
	parts := strings.Split(cursor, "~")
	if parts[0] == "end" {
		done = true
	} else if scan, err = strconv.ParseUint(parts[0], 10, 64); err != nil || scan == 0 {
		return 0, false, nil, ErrBadCursor
	}
	for _, n := range parts[1:] {
		if !ValidChannel(n) {
			return 0, false, nil, ErrBadCursor
		}
	}
	if done && len(parts) == 1 {
		return 0, false, nil, ErrBadCursor
	}
	return scan, done, parts[1:], nil
}

// globEscape quotes the characters SCAN MATCH treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
