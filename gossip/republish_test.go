package gossip

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/serf/coordinate"
)

// TestRepublishKeepsConcurrentCapacity re-issues the local record for a
// moving coordinate (as the maintenance loop does) while SetCapacity
// publishes new capacities. The re-issue must carry the capacity current
// when it is made: re-issuing a copy read before a concurrent SetCapacity
// would silently revert it, and the node, which compares with what it last
// set, would never publish it again (a region leader's market claim was
// lost for a whole netsim run this way).
func TestRepublishKeepsConcurrentCapacity(t *testing.T) {
	if testing.Short() {
		t.Skip("uses real sockets")
	}
	a, err := Start(Config{Name: "a", Region: "local", Profile: ProfileLocal, BindAddr: "127.0.0.1", SecretKey: testKey, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := a.Shutdown(); err != nil {
			t.Error(err)
		}
	}()
	// Two coordinates 500 ms apart: each republish sees the published one
	// drift and re-issues the record.
	coords := [2]*coordinate.Coordinate{coordinate.NewCoordinate(coordinate.DefaultConfig()), coordinate.NewCoordinate(coordinate.DefaultConfig())}
	coords[1].Vec[0] = 0.5
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := a.coord.SetCoordinate(coords[i%2]); err != nil {
				t.Error(err)
				return
			}
			a.republish()
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	// The race window is a few instructions wide; a bounded number of
	// rounds (and a deadline for a slow machine) finds it within a
	// fraction of a second on two cores when the re-issue reads early.
	deadline := time.Now().Add(3 * time.Second)
	for i := 1; i <= 5000 && time.Now().Before(deadline); i++ {
		c := testCapacity(i % 50)
		c.QueueLength = i
		if _, err := a.SetCapacity(c); err != nil {
			t.Fatal(err)
		}
		for range 4 {
			r, ok := a.Record("a")
			if !ok || r.QueueLength != i {
				t.Fatalf("round %d: the local record holds queue length %d after SetCapacity set %d: a re-issue reverted it", i, r.QueueLength, i)
			}
			runtime.Gosched()
		}
	}
}
