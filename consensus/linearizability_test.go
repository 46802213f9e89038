package consensus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/anishathalye/porcupine"
)

// linOp is one client operation: submit a new job, or count the jobs in a
// consistent read.
type linOp struct {
	submit bool
	id     string
}

// jobCounter is the sequential specification: each submitted job (IDs are
// unique, and a submission is retried with its ID until its outcome is
// known) adds one job; a read returns the number of jobs.
var jobCounter = porcupine.Model{
	Init: func() interface{} { return 0 },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		n := state.(int)
		if input.(linOp).submit {
			return true, n + 1
		}
		return output.(int) == n, n
	},
	DescribeOperation: func(input, output interface{}) string {
		if in := input.(linOp); in.submit {
			return "submit " + in.id
		}
		return fmt.Sprintf("count() = %v", output)
	},
}

// TestConsistentReadsAreLinearizable runs clients that submit jobs and
// read the job count with ConsistentLedger on every server, while servers
// are isolated from and rejoined to the group, and checks the history with
// porcupine.
func TestConsistentReadsAreLinearizable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.HoldTimeout = 2 * time.Second })
		defer c.close()
		c.startAll()
		servers := c.running()

		var (
			clock atomic.Int64 // a logical clock: its order is real-time order
			mu    sync.Mutex
			ops   []porcupine.Operation
			wg    sync.WaitGroup
			stop  = make(chan struct{})
		)
		record := func(client int, in linOp, out interface{}, call int64) {
			ret := clock.Add(1)
			mu.Lock()
			ops = append(ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
			mu.Unlock()
		}
		const clients, perClient = 6, 20
		for cl := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(cl), 3))
				for k := range perClient {
					// Think time spreads the history over several faults.
					time.Sleep(time.Duration(r.IntN(1500)) * time.Millisecond)
					call := clock.Add(1)
					if r.IntN(2) == 0 {
						in := linOp{submit: true, id: fmt.Sprintf("c%d-%d", cl, k)}
						// Retry with the same ID until the outcome is known:
						// the job is then added exactly once.
						for {
							s := servers[r.IntN(len(servers))]
							ctx, cancel := ctxTimeout(3 * time.Second)
							res, err := s.Propose(ctx, SubmitJob{Job: job(in.id, 1, 0)})
							cancel()
							if err == nil && res[0].Err == nil {
								record(cl, in, res[0].Existing, call)
								break
							}
							if err == nil {
								t.Errorf("submit %s: %v", in.id, res[0].Err)
								return
							}
						}
						continue
					}
					s := servers[r.IntN(len(servers))]
					ctx, cancel := ctxTimeout(3 * time.Second)
					l, err := s.ConsistentLedger(ctx)
					cancel()
					if err != nil {
						continue // a failed read has no effect
					}
					record(cl, linOp{}, l.Counts().Jobs, call)
				}
			}()
		}
		// Faults: isolate one server at a time, then heal.
		faultsDone := make(chan struct{})
		go func() {
			defer close(faultsDone)
			r := rand.New(rand.NewPCG(9, 9))
			for {
				select {
				case <-stop:
					c.net.Heal()
					return
				case <-time.After(time.Duration(500+r.IntN(2000)) * time.Millisecond):
				}
				c.net.Isolate(servers[r.IntN(len(servers))].ID())
				select {
				case <-stop:
					c.net.Heal()
					return
				case <-time.After(time.Duration(500+r.IntN(3000)) * time.Millisecond):
				}
				c.net.Heal()
			}
		}()
		wg.Wait()
		close(stop)
		<-faultsDone

		reads := 0
		for _, op := range ops {
			if !op.Input.(linOp).submit {
				reads++
			}
		}
		t.Logf("%d operations (%d consistent reads) over %d faults", len(ops), reads, len(c.net.FaultLog()))
		if reads < 5 {
			t.Fatalf("only %d consistent reads succeeded; the check would be empty", reads)
		}
		if res := porcupine.CheckOperationsTimeout(jobCounter, ops, 30*time.Second); res != porcupine.Ok {
			t.Fatalf("history of %d operations is not linearizable (%v)", len(ops), res)
		}
		// And the ledger agrees with the clients: every submitted job is there.
		l, err := servers[0].ConsistentLedger(context.Background())
		if err != nil && !errors.Is(err, ErrShutdown) {
			t.Fatal(err)
		}
		if l != nil && l.Counts().Jobs != len(ops)-reads {
			t.Fatalf("ledger holds %d jobs, clients submitted %d", l.Counts().Jobs, len(ops)-reads)
		}
	})
}
