package backlog

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// listScans bounds the SCAN calls one List makes, so that a page over a
// keyspace holding few channels among many other keys returns in bounded
// time, possibly short or empty, with a cursor to go on from.
const listScans = 32

var errListUnsupported = errors.New("backlog: List needs a standalone, Sentinel or Cluster client")

// List walks the meta keys with SCAN MATCH: no registry to keep in step
// with the channels, and channels that publishers created by hand are
// listed too. SCAN's guarantees are List's: every channel that exists
// throughout the walk is returned, maybe twice, in no particular order.
//
// On a Cluster, SCAN walks one node, so List walks every master in turn
// (see clusterScan). The channel registry ("<prefix>channels") would page
// more simply, but it is not exact: a channel made by hand is missing from
// it until its first create through a gateway, and one deleted by hand
// stays until its check, so it would list neither what exists nor what
// standalone List lists.
//
// SCAN's COUNT is a hint: a call may return a few more keys than asked
// for. Those beyond limit travel in the cursor, which is "<position>[~<name>...]",
// with "end" for a walk that is done; the position is the SCAN cursor,
// or on a Cluster clusterScan's.
func (r *Redis) List(ctx context.Context, prefix, cursor string, limit int) ([]string, string, error) {
	if r.isClosed() {
		return nil, "", ErrClosed
	}
	var (
		scan  scanFunc
		check func(pos string) error
	)
	switch c := r.client.(type) {
	case *redis.ClusterClient:
		cs := &clusterScan{client: c}
		scan = cs.scan
		check = func(pos string) error { _, _, _, err := parseClusterPos(pos); return err }
	default:
		if r.conns == nil {
			return nil, "", errListUnsupported
		}
		scan = r.nodeScan
		check = func(pos string) error { _, err := parseScanPos(pos); return err }
	}
	pos, done, names, err := parseListCursor(cursor)
	if err == nil {
		err = check(pos)
	}
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
		keys, next, err := scan(ctx, pos, match, count)
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
		pos, done = next, next == ""
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
		next = pos
	}
	for _, n := range rest {
		next += "~" + n
	}
	return names, next, nil
}

// scanFunc runs one SCAN step from pos ("" to start) and returns the next
// position, "" when the walk is done. A pos it cannot read is ErrBadCursor.
type scanFunc func(ctx context.Context, pos, match string, count int64) (keys []string, next string, err error)

// nodeScan is the scanFunc of one server: the position is SCAN's cursor.
func (r *Redis) nodeScan(ctx context.Context, pos, match string, count int64) ([]string, string, error) {
	cursor, err := parseScanPos(pos)
	if err != nil {
		return nil, "", err
	}
	keys, next, err := r.client.Scan(ctx, cursor, match, count).Result()
	if err != nil || next == 0 {
		return keys, "", err
	}
	return keys, strconv.FormatUint(next, 10), nil
}

// parseScanPos reads nodeScan's position; "" is the start.
func parseScanPos(pos string) (uint64, error) {
	if pos == "" {
		return 0, nil
	}
	cursor, err := strconv.ParseUint(pos, 10, 64)
	if err != nil || cursor == 0 {
		return 0, ErrBadCursor
	}
	return cursor, nil
}

// parseListCursor reads a cursor of List; "" starts a walk. The position
// is left to the scanFunc to check.
func parseListCursor(cursor string) (pos string, done bool, names []string, err error) {
	if cursor == "" {
		return "", false, nil, nil
	}
	parts := strings.Split(cursor, "~")
	if parts[0] == "end" {
		done = true
	} else if parts[0] == "" {
		return "", false, nil, ErrBadCursor
	}
	for _, n := range parts[1:] {
		if !ValidChannel(n) {
			return "", false, nil, ErrBadCursor
		}
	}
	if done && len(parts) == 1 {
		return "", false, nil, ErrBadCursor
	}
	if !done {
		pos = parts[0]
	}
	return pos, done, parts[1:], nil
}

// clusterScan walks a Cluster's masters one after the other, in the order
// of the lowest slot each serves, with SCAN on each. Its position is
// "<slot>.<node>.<scan cursor>": the lowest slot of the master being
// walked, a hash of that master's node ID, and SCAN's cursor on it. Slots
// rather than addresses, so that a cursor handed to clients names no
// server.
//
// A SCAN cursor means something only to the process that returned it:
// when the master serving the slot is another node than the one hashed
// (a failover, a resharding), that master is walked again from the start,
// which may list names twice but misses none. A resharding during a walk
// may still move a slot from a master not yet walked to one walked
// already: channels in that slot may then be missing from that walk, as
// SCAN promises nothing for keys that moved during it.
type clusterScan struct {
	client  *redis.ClusterClient
	masters []clusterMaster // loaded at the first step
}

// clusterMaster is a master as one List sees it.
type clusterMaster struct {
	low    int      // the lowest slot it serves
	slots  [][2]int // every range it serves
	node   string   // a hash of its node ID
	client *redis.Client
}

func (s *clusterScan) scan(ctx context.Context, pos, match string, count int64) ([]string, string, error) {
	slot, node, cursor, err := parseClusterPos(pos)
	if err != nil {
		return nil, "", err
	}
	if s.masters == nil {
		if s.masters, err = loadMasters(ctx, s.client); err != nil {
			return nil, "", err
		}
	}
	i := 0
	if pos != "" {
		i = slices.IndexFunc(s.masters, func(m clusterMaster) bool { return m.low == slot && m.node == node })
		if i < 0 {
			// Another node serves that slot now: walk it from the start.
			i, cursor = s.serving(slot), 0
		}
	}
	m := s.masters[i]
	keys, next, err := m.client.Scan(ctx, cursor, match, count).Result()
	if err != nil {
		return nil, "", err
	}
	if next != 0 {
		return keys, fmt.Sprintf("%d.%s.%d", m.low, m.node, next), nil
	}
	if i+1 == len(s.masters) {
		return keys, "", nil
	}
	n := s.masters[i+1]
	return keys, fmt.Sprintf("%d.%s.0", n.low, n.node), nil
}

// serving returns the index of the master serving slot; masters cover
// every slot (loadMasters checks).
func (s *clusterScan) serving(slot int) int {
	return max(slices.IndexFunc(s.masters, func(m clusterMaster) bool {
		return slices.ContainsFunc(m.slots, func(r [2]int) bool { return r[0] <= slot && slot <= r[1] })
	}), 0)
}

// parseClusterPos reads clusterScan's position; "" is the start.
func parseClusterPos(pos string) (slot int, node string, cursor uint64, err error) {
	if pos == "" {
		return 0, "", 0, nil
	}
	parts := strings.Split(pos, ".")
	if len(parts) != 3 || len(parts[1]) != 8 {
		return 0, "", 0, ErrBadCursor
	}
	slot, err = strconv.Atoi(parts[0])
	if err != nil || slot < 0 || slot >= clusterSlots {
		return 0, "", 0, ErrBadCursor
	}
	if _, err := strconv.ParseUint(parts[1], 16, 32); err != nil {
		return 0, "", 0, ErrBadCursor
	}
	if cursor, err = strconv.ParseUint(parts[2], 10, 64); err != nil {
		return 0, "", 0, ErrBadCursor
	}
	return slot, parts[1], cursor, nil
}

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// loadMasters asks every master the client knows who it is and which
// slots it serves (CLUSTER NODES, its own line), and returns those that
// serve slots, by their lowest. Unless they cover every slot (the client's
// map is stale: a failover or a resharding under way), it reloads the
// map and asks once more, then fails: a walk must not skip a slot.
func loadMasters(ctx context.Context, c *redis.ClusterClient) ([]clusterMaster, error) {
	for attempt := 0; ; attempt++ {
		var (
			mu      sync.Mutex
			masters []clusterMaster
			covered int
		)
		err := c.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			text, err := node.ClusterNodes(ctx).Result()
			if err != nil {
				return err
			}
			id, slots := ownSlots(text)
			if len(slots) == 0 {
				return nil // demoted since the client's map was loaded
			}
			low, n := clusterSlots, 0
			for _, r := range slots {
				low = min(low, r[0])
				n += r[1] - r[0] + 1
			}
			h := fnv.New32a()
			h.Write([]byte(id))
			mu.Lock()
			defer mu.Unlock()
			masters = append(masters, clusterMaster{low: low, slots: slots, node: fmt.Sprintf("%08x", h.Sum32()), client: node})
			covered += n
			return nil
		})
		if err != nil {
			return nil, err
		}
		if covered == clusterSlots {
			slices.SortFunc(masters, func(a, b clusterMaster) int { return a.low - b.low })
			return masters, nil
		}
		if attempt > 0 {
			return nil, fmt.Errorf("backlog: the masters serve %d of the %d slots: the cluster is changing", covered, clusterSlots)
		}
		c.ReloadState(ctx)
	}
}

// ownSlots reads the "myself" line of CLUSTER NODES: the node's ID and the
// slot ranges it serves ("<id> <addr> myself,master - ... 0-5460 ...";
// slots being imported or migrated, "[...]", are not served yet or still).
func ownSlots(text string) (id string, slots [][2]int) {
	for line := range strings.SplitSeq(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !slices.Contains(strings.Split(f[2], ","), "myself") {
			continue
		}
		if !slices.Contains(strings.Split(f[2], ","), "master") {
			return f[0], nil
		}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") {
				continue
			}
			lo, hi, found := strings.Cut(s, "-")
			a, err1 := strconv.Atoi(lo)
			b, err2 := a, error(nil)
			if found {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 == nil && err2 == nil {
				slots = append(slots, [2]int{a, b})
			}
		}
		return f[0], slots
	}
	return "", nil
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
