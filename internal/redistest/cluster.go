package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterOptions configures StartCluster. The zero value is a cluster
// without persistence whose masters fail over a second after they stop
// answering.
type ClusterOptions struct {
	// AOF turns on each node's append-only file, as Options.AOF does.
	AOF bool
	// NodeTimeout is cluster-node-timeout: how long a node must be
	// unreachable before it is failed and a replica of a failed master
	// takes over; 0 means 1s.
	NodeTimeout time.Duration
}

// ClusterSlots is the number of hash slots of a Redis Cluster.
const ClusterSlots = 16384

// clusterSize is how many nodes a Cluster has: 3 masters, 1 replica each.
const clusterSize = 6

// Cluster is a private Redis Cluster of 3 masters with 1 replica each,
// every node a redis-server on free loopback ports, torn down when the
// test ends. Which node is master changes with failovers: ask Masters,
// MasterOf and ReplicaOf rather than remembering. A Cluster is meant for
// one test goroutine; its methods are not safe for concurrent use.
type Cluster struct {
	t       testing.TB
	opts    ClusterOptions
	nodes   []*Server
	ids     map[*Server]string
	clients []*redis.ClusterClient
}

// StartCluster starts the nodes, joins them with redis-cli --cluster create
// and waits until every node reports cluster_state:ok with all 16384 slots
// covered and every replica in sync. Without redis-server or redis-cli on
// PATH the test fails or is skipped as with Start (no container fallback).
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.NodeTimeout <= 0 {
		opts.NodeTimeout = time.Second
	}
	cli := lookBinary(t, "redis-cli")
	began := time.Now()
	c := &Cluster{t: t, opts: opts, ids: make(map[*Server]string)}
	for range clusterSize {
		c.nodes = append(c.nodes, startProcess(t, Options{AOF: opts.AOF}, c.nodeArgs, true))
	}
	// After the nodes' own cleanups, so it runs first: clients go, then
	// every node stops at once.
	t.Cleanup(c.cleanup)

	ctx, cancel := context.WithTimeout(context.Background(), setTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s\n%s", err, out, logsOf(c.nodes))
	}
	for _, n := range c.nodes {
		id, err := doText(ctx, n.Addr(), "CLUSTER", "MYID")
		if err != nil {
			t.Fatalf("redistest: CLUSTER MYID on %s: %v", n.Addr(), err)
		}
		c.ids[n] = id
	}
	c.WaitHealthy()
	c.waitReplicasInSync()
	t.Logf("redistest: cluster of %d nodes ready in %v", clusterSize, time.Since(began).Round(time.Millisecond))
	return c
}

// nodeArgs is a cluster node's command line: a data node's, in cluster
// mode, with its cluster state in its own directory, and a replica that
// may always take over (no data-age limit: tests decide what is lost) and
// syncs at once rather than after the default diskless-sync delay. A
// master pings its replicas every second rather than ten: until a
// replica's offset moved past 0, which on an idle master only those pings
// do, nodes leave it out of CLUSTER SLOTS.
func (c *Cluster) nodeArgs(s *Server) []string {
	return append(s.serverArgs(),
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-port", strconv.Itoa(s.busPort),
		"--cluster-node-timeout", strconv.FormatInt(c.opts.NodeTimeout.Milliseconds(), 10),
		"--cluster-replica-validity-factor", "0",
		"--repl-diskless-sync-delay", "0",
		"--repl-ping-replica-period", "1")
}

func (c *Cluster) cleanup() {
	for _, cl := range c.clients {
		cl.Close()
	}
	c.clients = nil
	stopAll(c.nodes)
}

// Addrs returns every node's host:port, the seeds a client starts from.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL returns the seeds as one URL of the form go-redis's ParseClusterURL
// reads: redis://host:port?addr=host2:port2&addr=…
func (c *Cluster) URL() string { return urlWithSeeds(c.Addrs()) }

// Client returns a new cluster client seeded with every node, closed when
// the test ends. It has short timeouts, so that a dead master costs a
// command about a second. It follows MOVED and ASK at once, but go-redis
// (v9.23) reloads the slot map on nothing else: after a master crashes,
// its commands fail to dial and never see a MOVED, so the map is reloaded
// every second here instead of every minute by default.
func (c *Cluster) Client() *redis.ClusterClient {
	cl := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                      c.Addrs(),
		DialTimeout:                time.Second,
		ReadTimeout:                2 * time.Second,
		WriteTimeout:               2 * time.Second,
		ContextTimeoutEnabled:      true,
		ClusterStateReloadInterval: time.Second,
	})
	c.clients = append(c.clients, cl)
	return cl
}

// Nodes returns all six nodes, masters and replicas alike, in a fixed
// order.
func (c *Cluster) Nodes() []*Server { return slices.Clone(c.nodes) }

// NodeID returns n's cluster node ID.
func (c *Cluster) NodeID(n *Server) string { return c.ids[n] }

// Slot returns the hash slot of key (CLUSTER KEYSLOT).
func (c *Cluster) Slot(key string) int {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var lastErr error
	for _, n := range c.running() {
		v, err := do(ctx, n.Addr(), "CLUSTER", "KEYSLOT", key)
		if err == nil {
			return int(v.(int64))
		}
		lastErr = err
	}
	c.t.Fatalf("redistest: CLUSTER KEYSLOT %q: %v", key, lastErr)
	return 0
}

// Masters returns the nodes that serve slots, as a running node sees it.
func (c *Cluster) Masters() []*Server {
	c.t.Helper()
	var out []*Server
	for _, v := range c.view() {
		if v.master && !v.failed && len(v.slots) > 0 {
			out = append(out, c.byID(v.id))
		}
	}
	return out
}

// MasterOf returns the master serving slot, as a running node sees it.
func (c *Cluster) MasterOf(slot int) *Server {
	c.t.Helper()
	for _, v := range c.view() {
		if v.master && !v.failed && v.serves(slot) {
			return c.byID(v.id)
		}
	}
	c.t.Fatalf("redistest: no master serves slot %d", slot)
	return nil
}

// ReplicaOf returns a replica of master that is not failed.
func (c *Cluster) ReplicaOf(master *Server) *Server {
	c.t.Helper()
	id := c.ids[master]
	for _, v := range c.view() {
		if !v.master && v.masterID == id && !v.failed {
			return c.byID(v.id)
		}
	}
	c.t.Fatalf("redistest: %s has no healthy replica", master.Addr())
	return nil
}

// Failover makes master's replica take over with CLUSTER FAILOVER, which
// the two coordinate so that no acknowledged write is lost, and waits
// until every running node agrees and the cluster is healthy. It returns
// the new master; the old one is then its replica.
func (c *Cluster) Failover(master *Server) *Server {
	c.t.Helper()
	replica := c.ReplicaOf(master)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := do(ctx, replica.Addr(), "CLUSTER", "FAILOVER"); err != nil {
		c.t.Fatalf("redistest: CLUSTER FAILOVER on %s: %v", replica.Addr(), err)
	}
	c.waitPromoted(replica)
	return replica
}

// KillMaster kills master (SIGKILL: what it had not passed to its replica
// is lost) and waits until its replica was elected in its place, every
// running node agrees, and the cluster is healthy again, which takes about
// NodeTimeout and a second. It returns the new master. master.Start brings
// the old one back, as a replica of the new one.
func (c *Cluster) KillMaster(master *Server) *Server {
	c.t.Helper()
	replica := c.ReplicaOf(master)
	master.Kill()
	c.waitPromoted(replica)
	return replica
}

// waitPromoted waits until every running node sees replica as a master
// serving slots, and the cluster is healthy.
func (c *Cluster) waitPromoted(replica *Server) {
	c.t.Helper()
	id := c.ids[replica]
	waitFor(c.t, "promote "+replica.Addr(), setTimeout, func(ctx context.Context) (bool, string) {
		for _, n := range c.running() {
			view, err := c.viewFrom(ctx, n)
			if err != nil {
				return false, err.Error()
			}
			i := slices.IndexFunc(view, func(v nodeView) bool { return v.id == id })
			if i < 0 || !view[i].master || len(view[i].slots) == 0 {
				return false, fmt.Sprintf("%s does not see %s as a master with slots yet", n.Addr(), replica.Addr())
			}
		}
		return c.healthy(ctx)
	}, c.logs)
}

// WaitHealthy waits until every running node reports cluster_state:ok,
// knows every node, sees all 16384 slots served and flags no running node
// failed, as after a restart.
func (c *Cluster) WaitHealthy() {
	c.t.Helper()
	waitFor(c.t, "cluster healthy", setTimeout, c.healthy, c.logs)
}

func (c *Cluster) healthy(ctx context.Context) (bool, string) {
	running := c.running()
	for _, n := range running {
		info, err := doText(ctx, n.Addr(), "CLUSTER", "INFO")
		if err != nil {
			return false, fmt.Sprintf("CLUSTER INFO on %s: %v", n.Addr(), err)
		}
		if infoField(info, "cluster_state") != "ok" ||
			infoField(info, "cluster_slots_ok") != strconv.Itoa(ClusterSlots) ||
			infoField(info, "cluster_known_nodes") != strconv.Itoa(clusterSize) {
			return false, fmt.Sprintf("%s: %s", n.Addr(), strings.Join(strings.Fields(info), " "))
		}
		// A node that came back stays flagged failed in the others'
		// views until gossip clears it, and Masters, ReplicaOf and
		// MasterOf skip failed nodes: healthy means no running node is
		// still flagged by any other.
		view, err := c.viewFrom(ctx, n)
		if err != nil {
			return false, err.Error()
		}
		// Nor does one see a running node as anything but a master with
		// slots or the replica of one: a node restarted after its
		// failover says it is a master until it learns otherwise, and
		// ReplicaOf looks for the replica in one node's view.
		serving := map[string]bool{}
		for _, v := range view {
			if v.master && !v.failed && len(v.slots) > 0 {
				serving[v.id] = true
			}
		}
		for _, m := range running {
			i := slices.IndexFunc(view, func(v nodeView) bool { return v.id == c.ids[m] })
			switch {
			case i < 0:
				return false, fmt.Sprintf("%s does not know %s", n.Addr(), m.Addr())
			case view[i].failed:
				return false, fmt.Sprintf("%s still flags the running %s failed", n.Addr(), m.Addr())
			case !serving[view[i].id] && !serving[view[i].masterID]:
				return false, fmt.Sprintf("%s sees %s neither serving slots nor replicating a node that does", n.Addr(), m.Addr())
			}
		}
	}
	return true, ""
}

// waitReplicasInSync waits until every replica's link to its master is up,
// so that a failover right after start has a replica to promote, and
// every node lists a replica beside each master in CLUSTER SLOTS (which
// it does once gossip told it the replica's offset), so that clients
// learn the replicas too.
func (c *Cluster) waitReplicasInSync() {
	c.t.Helper()
	waitFor(c.t, "replicas in sync", setTimeout, func(ctx context.Context) (bool, string) {
		for _, n := range c.running() {
			info, err := doText(ctx, n.Addr(), "INFO", "replication")
			if err != nil {
				return false, err.Error()
			}
			if infoField(info, "role") == "slave" && infoField(info, "master_link_status") != "up" {
				return false, fmt.Sprintf("replica %s: master_link_status %s", n.Addr(), infoField(info, "master_link_status"))
			}
			cl := nodeClient(n.Addr())
			slots, err := cl.ClusterSlots(ctx).Result()
			cl.Close()
			if err != nil {
				return false, fmt.Sprintf("CLUSTER SLOTS on %s: %v", n.Addr(), err)
			}
			for _, r := range slots {
				if len(r.Nodes) < 2 {
					return false, fmt.Sprintf("%s lists no replica for slots %d-%d", n.Addr(), r.Start, r.End)
				}
			}
		}
		return true, ""
	}, c.logs)
}

// SlotMove is a slot being moved from one master to another: between
// BeginSlotMove and Finish, the source answers ASK for keys it no longer
// holds, as during a resharding.
type SlotMove struct {
	c        *Cluster
	slot     int
	from, to *Server
}

// BeginSlotMove marks slot as migrating from its master to to (CLUSTER
// SETSLOT IMPORTING on to, MIGRATING on the source). Keys move with
// MigrateKeys; Finish hands the slot over.
func (c *Cluster) BeginSlotMove(slot int, to *Server) *SlotMove {
	c.t.Helper()
	from := c.MasterOf(slot)
	if from == to {
		c.t.Fatalf("redistest: slot %d is served by %s already", slot, to.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := do(ctx, to.Addr(), "CLUSTER", "SETSLOT", slot, "IMPORTING", c.ids[from]); err != nil {
		c.t.Fatalf("redistest: SETSLOT %d IMPORTING on %s: %v", slot, to.Addr(), err)
	}
	if _, err := do(ctx, from.Addr(), "CLUSTER", "SETSLOT", slot, "MIGRATING", c.ids[to]); err != nil {
		c.t.Fatalf("redistest: SETSLOT %d MIGRATING on %s: %v", slot, from.Addr(), err)
	}
	return &SlotMove{c: c, slot: slot, from: from, to: to}
}

// MigrateKeys moves up to n of the slot's keys (all when n <= 0) with
// MIGRATE and returns how many it moved.
func (m *SlotMove) MigrateKeys(n int) int {
	t := m.c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setTimeout)
	defer cancel()
	host, port := hostPort(m.to.Addr())
	moved := 0
	for n <= 0 || moved < n {
		batch := 100
		if n > 0 {
			batch = min(batch, n-moved)
		}
		v, err := do(ctx, m.from.Addr(), "CLUSTER", "GETKEYSINSLOT", m.slot, batch)
		if err != nil {
			t.Fatalf("redistest: GETKEYSINSLOT %d on %s: %v", m.slot, m.from.Addr(), err)
		}
		keys, _ := v.([]any)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		args = append(args, keys...)
		if _, err := do(ctx, m.from.Addr(), args...); err != nil {
			t.Fatalf("redistest: MIGRATE from %s to %s: %v", m.from.Addr(), m.to.Addr(), err)
		}
		moved += len(keys)
	}
	return moved
}

// Finish migrates the keys left and assigns the slot to its new master on
// every master (target first, then source, as Redis advises), then waits
// until every running node sees the move and the cluster is healthy.
func (m *SlotMove) Finish() {
	t := m.c.t
	t.Helper()
	m.MigrateKeys(0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	toID := m.c.ids[m.to]
	order := []*Server{m.to, m.from}
	for _, master := range m.c.Masters() {
		if master != m.to && master != m.from {
			order = append(order, master)
		}
	}
	for _, n := range order {
		if _, err := do(ctx, n.Addr(), "CLUSTER", "SETSLOT", m.slot, "NODE", toID); err != nil {
			t.Fatalf("redistest: SETSLOT %d NODE on %s: %v", m.slot, n.Addr(), err)
		}
	}
	waitFor(t, fmt.Sprintf("slot %d served by %s", m.slot, m.to.Addr()), setTimeout, func(ctx context.Context) (bool, string) {
		for _, n := range m.c.running() {
			view, err := m.c.viewFrom(ctx, n)
			if err != nil {
				return false, err.Error()
			}
			i := slices.IndexFunc(view, func(v nodeView) bool { return v.id == toID })
			if i < 0 || !view[i].serves(m.slot) {
				return false, fmt.Sprintf("%s does not see the move yet", n.Addr())
			}
		}
		return m.c.healthy(ctx)
	}, m.c.logs)
}

// MoveSlot moves slot, keys and all, to the master to: a resharding of one
// slot, done when it returns.
func (c *Cluster) MoveSlot(slot int, to *Server) {
	c.t.Helper()
	c.BeginSlotMove(slot, to).Finish()
}

// nodeView is one line of CLUSTER NODES.
type nodeView struct {
	id, addr string
	master   bool
	failed   bool   // fail or fail?
	masterID string // a replica's master
	slots    [][2]int
}

func (v nodeView) serves(slot int) bool {
	for _, r := range v.slots {
		if r[0] <= slot && slot <= r[1] {
			return true
		}
	}
	return false
}

// parseNodes parses CLUSTER NODES: <id> <ip:port@cport[,hostname]>
// <flags> <master> <ping-sent> <pong-recv> <epoch> <link> <slot>...
// Slots being migrated or imported ("[…]") are left out.
func parseNodes(text string) []nodeView {
	var out []nodeView
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		flags := strings.Split(f[2], ",")
		v := nodeView{
			id:     f[0],
			addr:   addr,
			master: slices.Contains(flags, "master"),
			failed: slices.Contains(flags, "fail") || slices.Contains(flags, "fail?"),
		}
		if f[3] != "-" {
			v.masterID = f[3]
		}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") {
				continue
			}
			lo, hi, found := strings.Cut(s, "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if found {
				b, _ = strconv.Atoi(hi)
			}
			v.slots = append(v.slots, [2]int{a, b})
		}
		out = append(out, v)
	}
	return out
}

// view returns CLUSTER NODES as the first running node that answers sees
// it.
func (c *Cluster) view() []nodeView {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var lastErr error
	for _, n := range c.running() {
		v, err := c.viewFrom(ctx, n)
		if err == nil {
			return v
		}
		lastErr = err
	}
	c.t.Fatalf("redistest: no cluster node answers CLUSTER NODES: %v", lastErr)
	return nil
}

func (c *Cluster) viewFrom(ctx context.Context, n *Server) ([]nodeView, error) {
	text, err := doText(ctx, n.Addr(), "CLUSTER", "NODES")
	if err != nil {
		return nil, fmt.Errorf("CLUSTER NODES on %s: %w", n.Addr(), err)
	}
	return parseNodes(text), nil
}

func (c *Cluster) byID(id string) *Server {
	c.t.Helper()
	for n, nid := range c.ids {
		if nid == id {
			return n
		}
	}
	c.t.Fatalf("redistest: unknown cluster node %s", id)
	return nil
}

// running returns the nodes that can answer: not stopped, killed or frozen.
func (c *Cluster) running() []*Server {
	var out []*Server
	for _, n := range c.nodes {
		if n.answers() {
			out = append(out, n)
		}
	}
	return out
}

func (c *Cluster) logs() string { return logsOf(c.nodes) }
