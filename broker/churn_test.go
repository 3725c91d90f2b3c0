package broker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// churned is one subscription made while the channel was busy: after is
// where it started (its head, or its since), and stayed says it was open
// until publishing ended, so it must hold everything after after.
type churned struct {
	rec    *recorder
	after  backlog.ID
	stayed bool
	sub    *broker.Subscription
}

// TestChurnDuringFanout subscribes and unsubscribes on a hot channel while
// it is published to and fanned out: subscribers that stay throughout,
// live-only and resuming ones that come and go, and ones that come and
// stay. Every subscriber must get, exactly once and in order, every
// message of the interval it was subscribed for: all of them for those
// that stayed, a gap-free start of it for those that left.
func TestChurnDuringFanout(t *testing.T) {
	h, _ := newHub(t, broker.Config{ReplayPage: 7, ReplayBuffer: 5, ReplayOvertakes: 1 << 30})
	create(t, h, "hot", 1_000_000)
	ctx := context.Background()

	const steady, churners, rounds = 200, 4, 30
	steadyRecs := make([]*recorder, steady)
	for i := range steadyRecs {
		steadyRecs[i] = newRecorder()
		subscribe(t, h, "hot", broker.From{}, steadyRecs[i])
	}

	var (
		mu        sync.Mutex
		published []backlog.ID
	)
	stop := make(chan struct{})
	publisherDone := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				publisherDone <- nil
				return
			default:
			}
			id, err := h.Publish(ctx, "hot", fmt.Appendf(nil, "%d", i))
			if err != nil {
				publisherDone <- err
				return
			}
			mu.Lock()
			published = append(published, id)
			mu.Unlock()
			// Publishing faster than the fan-out would leave the reader
			// ever further behind the subscribers' heads: keep within a
			// few messages of a steady subscriber.
		wait:
			for len(steadyRecs[0].snapshot()) < i-10 {
				select {
				case <-steadyRecs[0].got:
				case <-stop:
					break wait
				}
			}
		}
	}()

	// Each churner subscribes in turn live-only, resuming from a recent
	// message, and resuming from an older one; it waits for a message
	// before leaving (so that every round overlaps the fan-out) except
	// every fourth round, which leaves at once, its replay maybe still
	// running. Its last subscription stays until the end.
	results := make([][]churned, churners)
	errs := make(chan error, churners)
	var wg sync.WaitGroup
	for c := range churners {
		wg.Go(func() {
			errs <- func() error {
				for r := range rounds {
					var from broker.From
					mu.Lock()
					if n := len(published); n > 0 && r%3 > 0 {
						since := published[n-1-(n-1)*(r%3-1)/2]
						from.Since = &since
					}
					mu.Unlock()
					rec := newRecorder()
					sub, res, err := h.Subscribe(ctx, "hot", from, rec)
					if err != nil {
						return err
					}
					after := res.Head
					if from.Since != nil {
						if !res.Resumed {
							return fmt.Errorf("resume from %v held in the backlog: resumed false", *from.Since)
						}
						after = *from.Since
					}
					if err := sub.Replay(ctx); err != nil {
						return err
					}
					ch := churned{rec: rec, after: after, stayed: r == rounds-1, sub: sub}
					results[c] = append(results[c], ch)
					if ch.stayed {
						break
					}
					if r%4 != 3 {
						if err := waitAny(rec); err != nil {
							return err
						}
					}
					sub.Close()
				}
				return nil
			}()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Once every stayer has had a message, publishing may end.
	for _, rs := range results {
		if err := waitAny(rs[len(rs)-1].rec); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-publisherDone; err != nil {
		t.Fatal(err)
	}

	for i, rec := range steadyRecs {
		t.Run(fmt.Sprintf("steady%d", i), func(t *testing.T) {
			checkSequence(t, rec.waitFor(t, len(published)), published)
		})
	}
	for c, rs := range results {
		for r, ch := range rs {
			t.Run(fmt.Sprintf("churner%d/round%d", c, r), func(t *testing.T) {
				want := slices.DeleteFunc(slices.Clone(published), func(id backlog.ID) bool { return !ch.after.Less(id) })
				if ch.stayed {
					checkSequence(t, ch.rec.waitFor(t, len(want)), want)
					ch.sub.Close()
					return
				}
				got := ch.rec.snapshot()
				if len(got) > len(want) {
					t.Fatalf("got %d publications, more than the %d published after %v", len(got), len(want), ch.after)
				}
				checkSequence(t, got, want[:len(got)])
			})
		}
	}
}

// waitAny waits until rec holds a publication.
func waitAny(rec *recorder) error {
	deadline := time.After(10 * time.Second)
	for len(rec.snapshot()) == 0 {
		select {
		case <-rec.got:
		case <-deadline:
			return errors.New("no publication within 10s")
		}
	}
	return nil
}
