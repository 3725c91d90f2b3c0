package redistest_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/internal/redistest"
)

// keysOnEveryMaster returns one key per master of c, and the masters.
func keysOnEveryMaster(t *testing.T, c *redistest.Cluster) map[*redistest.Server]string {
	t.Helper()
	masters := c.Masters()
	if len(masters) != 3 {
		t.Fatalf("%d masters, want 3", len(masters))
	}
	keys := make(map[*redistest.Server]string)
	for i := 0; len(keys) < len(masters) && i < 1000; i++ {
		k := fmt.Sprintf("key%d", i)
		m := c.MasterOf(c.Slot(k))
		if _, ok := keys[m]; !ok {
			keys[m] = k
		}
	}
	if len(keys) != len(masters) {
		t.Fatalf("no key found for every master: %v", keys)
	}
	return keys
}

// eventually retries op until it succeeds or 15s pass: a client meets
// errors while a failover is under way, and must get through after it.
func eventually(t *testing.T, what string, op func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := op(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 15s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClusterCoversEverySlot(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	ctx := t.Context()
	client := c.Client()

	slots, err := client.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	covered := make([]bool, redistest.ClusterSlots)
	for _, r := range slots {
		if len(r.Nodes) != 2 {
			t.Errorf("slots %d-%d served by %d nodes, want a master and a replica", r.Start, r.End, len(r.Nodes))
		}
		for s := r.Start; s <= r.End; s++ {
			covered[s] = true
		}
	}
	if i := slices.Index(covered, false); i >= 0 {
		t.Fatalf("slot %d is not covered", i)
	}

	// A write to each master's slots goes through the one client.
	keys := keysOnEveryMaster(t, c)
	for m, k := range keys {
		if err := client.Set(ctx, k, m.Addr(), 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
	for m, k := range keys {
		// Read from the master directly: the client did route by slot.
		got, err := m.Client().Get(ctx, k).Result()
		if err != nil || got != m.Addr() {
			t.Errorf("GET %s on its master %s = %q, %v", k, m.Addr(), got, err)
		}
	}

	opt, err := redis.ParseClusterURL(c.URL())
	if err != nil {
		t.Fatalf("ParseClusterURL(%q): %v", c.URL(), err)
	}
	if !slices.Equal(opt.Addrs, c.Addrs()) {
		t.Errorf("URL seeds %v, want %v", opt.Addrs, c.Addrs())
	}
}

func TestClusterFailover(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	ctx := t.Context()
	client := c.Client()
	keys := keysOnEveryMaster(t, c)
	for _, k := range keys {
		if err := client.Set(ctx, k, "before", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	masters := c.Masters()

	// A coordinated failover: the replica takes over, the client follows.
	old := masters[0]
	promoted := c.Failover(old)
	if promoted == old || !slices.Contains(c.Masters(), promoted) || slices.Contains(c.Masters(), old) {
		t.Fatalf("after Failover(%s): masters %v, promoted %s", old.Addr(), addrs(c.Masters()), promoted.Addr())
	}
	eventually(t, "write after the failover", func(ctx context.Context) error {
		return client.Set(ctx, keys[old], "after", 0).Err()
	})
	if got, err := promoted.Client().Get(ctx, keys[old]).Result(); err != nil || got != "after" {
		t.Errorf("GET on the promoted master = %q, %v; want the write after the failover", got, err)
	}

	// A crash: the replica is elected, the client follows, and what was
	// replicated before the crash is still there.
	victim := masters[1]
	if n, err := victim.Client().Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d, %v", n, err)
	}
	elected := c.KillMaster(victim)
	if elected == victim || slices.Contains(c.Masters(), victim) {
		t.Fatalf("after KillMaster(%s): masters %v", victim.Addr(), addrs(c.Masters()))
	}
	var got string
	eventually(t, "read after the crash", func(ctx context.Context) (err error) {
		got, err = client.Get(ctx, keys[victim]).Result()
		return err
	})
	if got != "before" {
		t.Errorf("GET %s after the crash = %q, want the replicated write", keys[victim], got)
	}
	eventually(t, "write after the crash", func(ctx context.Context) error {
		return client.Set(ctx, keys[victim], "after", 0).Err()
	})

	// The crashed node comes back as the new master's replica.
	victim.Start()
	c.WaitHealthy()
	if r := c.ReplicaOf(elected); r != victim {
		t.Errorf("replica of the elected master is %s, want the restarted %s", r.Addr(), victim.Addr())
	}
}

func TestClusterMoveSlot(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	ctx := t.Context()
	client := c.Client()

	// Keys sharing a hash tag share a slot.
	var keys []string
	for i := range 10 {
		k := fmt.Sprintf("{moving}.%d", i)
		if err := client.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	slot := c.Slot(keys[0])
	from := c.MasterOf(slot)
	to := c.Masters()[0]
	if to == from {
		to = c.Masters()[1]
	}

	// Half-way, the client is sent on with ASK for the keys moved.
	move := c.BeginSlotMove(slot, to)
	if n := move.MigrateKeys(5); n != 5 {
		t.Fatalf("migrated %d keys, want 5", n)
	}
	for i, k := range keys {
		if got, err := client.Get(ctx, k).Int(); err != nil || got != i {
			t.Errorf("mid-move GET %s = %d, %v; want %d", k, got, err, i)
		}
	}
	move.Finish()

	if got := c.MasterOf(slot); got != to {
		t.Fatalf("slot %d served by %s after the move, want %s", slot, got.Addr(), to.Addr())
	}
	if n, err := to.Client().Do(ctx, "CLUSTER", "COUNTKEYSINSLOT", slot).Int(); err != nil || n != len(keys) {
		t.Errorf("keys of slot %d on the new master: %d, %v; want %d", slot, n, err, len(keys))
	}
	for i, k := range keys {
		if got, err := client.Get(ctx, k).Int(); err != nil || got != i {
			t.Errorf("GET %s after the move = %d, %v; want %d", k, got, err, i)
		}
	}
}

func addrs(servers []*redistest.Server) []string {
	out := make([]string, len(servers))
	for i, s := range servers {
		out[i] = s.Addr()
	}
	return out
}
