package consensus

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meridian-mesh/meridian/placement"
)

// cmdGen draws random commands over a small world of IDs, so that
// sequences hit every path: conflicts, overcommits, double allocations,
// expiries, stale epochs, unknown IDs.
type cmdGen struct {
	r   *rand.Rand
	now time.Time
	// onNode, when set, lists the allocations on a node in the ledger the
	// commands go to, so that preemptions name real victims.
	onNode func(node string) []string
}

func (g *cmdGen) pick(prefix string, n int) string { return fmt.Sprintf("%s%d", prefix, g.r.IntN(n)) }

func (g *cmdGen) resources(scale float64) placement.Resources {
	return placement.Resources{
		ComputePerHour: float64(1+g.r.IntN(8)) * scale * 12.5,
		StorageGB:      float64(g.r.IntN(4)) * scale * 100,
		BandwidthGBps:  float64(g.r.IntN(3)) * scale * 0.7,
		GPUs:           g.r.IntN(3),
	}
}

func (g *cmdGen) expiry() time.Time {
	return g.now.Add(time.Duration(1+g.r.IntN(120)) * time.Second)
}

func (g *cmdGen) next() Command {
	region := []string{"us-east-1", "ap-south-1"}[g.r.IntN(2)]
	switch g.r.IntN(20) {
	case 0, 1:
		return RegisterNode{ID: g.pick("n", 4), Total: placement.Resources{ComputePerHour: 200, StorageGB: 800, BandwidthGBps: 2, GPUs: 4}, PricePerHour: float64(1 + g.r.IntN(3))}
	case 2:
		return UpdateNode{ID: g.pick("n", 4), Total: placement.Resources{ComputePerHour: float64(50 * (1 + g.r.IntN(6))), StorageGB: 800, BandwidthGBps: 2, GPUs: 4}, PricePerHour: 2}
	case 3:
		return SetNodeState{ID: g.pick("n", 4), State: NodeState(1 + g.r.IntN(3))}
	case 4:
		return RemoveNode{ID: g.pick("n", 4)}
	case 5, 6:
		return SubmitJob{Job: placement.Job{ID: g.pick("j", 10), Demand: g.resources(1), Priority: g.r.IntN(3)}}
	case 7, 8, 9:
		var epoch uint64
		if g.r.IntN(3) == 0 {
			epoch = uint64(g.r.IntN(4))
		}
		var lease time.Time
		if g.r.IntN(3) == 0 {
			lease = g.expiry()
		}
		c := PlaceJob{JobID: g.pick("j", 10), NodeID: g.pick("n", 4), Epoch: epoch, LeaseExpiry: lease}
		if g.r.IntN(2) == 0 {
			c.Resources = g.resources(1)
		}
		if g.r.IntN(2) == 0 {
			var on []string
			if g.onNode != nil {
				on = g.onNode(c.NodeID)
			}
			for range 1 + g.r.IntN(2) {
				if len(on) > 0 && g.r.IntN(6) > 0 {
					c.Preempt = append(c.Preempt, on[g.r.IntN(len(on))])
				} else {
					c.Preempt = append(c.Preempt, g.pick("a-", 40))
				}
			}
		}
		return c
	case 10:
		return ReplaceAllocation{JobID: g.pick("j", 10), NodeID: g.pick("n", 4)}
	case 11:
		return StopAllocation{AllocID: g.pick("a-", 40), Reason: StopReason(1 + g.r.IntN(5))}
	case 12:
		return SetJobState{JobID: g.pick("j", 10), State: JobState(1 + g.r.IntN(7))}
	case 13:
		c := HoldEscrow{NodeID: g.pick("n", 4), Resources: g.resources(1), BuyerRegion: region,
			AuctionID: g.pick("auc", 3), ItemID: g.pick("it", 3), Expiry: g.expiry(), Priority: g.r.IntN(3)}
		if g.r.IntN(3) == 0 && g.onNode != nil {
			// A seller making room for the buyer (seller-side preemption).
			if on := g.onNode(c.NodeID); len(on) > 0 {
				c.Preempt = append(c.Preempt, on[g.r.IntN(len(on))])
			}
		}
		return c
	case 14:
		return ReleaseEscrow{AuctionID: g.pick("auc", 3), ItemID: g.pick("it", 3)}
	case 15:
		// Other regions' job IDs may be the same as this region's: the
		// live index must keep them apart.
		jobID := g.pick([]string{"rj", "j"}[g.r.IntN(2)], 4)
		return ConvertEscrow{AuctionID: g.pick("auc", 3), ItemID: g.pick("it", 3), JobID: jobID, JobRegion: region, Epoch: uint64(g.r.IntN(5))}
	case 16:
		if g.r.IntN(2) == 0 {
			return BumpEpoch{JobID: g.pick("j", 10)}
		}
		return RecordAward{AuctionID: g.pick("auc", 3), ItemID: g.pick("it", 3), JobID: g.pick("j", 10),
			SellerRegion: region, Resources: g.resources(1), PricePerHour: 2, Epoch: uint64(g.r.IntN(3))}
	case 17:
		return SetTradeState{AuctionID: g.pick("auc", 3), ItemID: g.pick("it", 3), State: TradeState(1 + g.r.IntN(4))}
	case 18:
		if g.r.IntN(4) == 0 {
			return Prune{Before: g.now.Add(-time.Duration(g.r.IntN(300)) * time.Second)}
		}
		return RenewAllocation{AllocID: g.pick("a-", 40), LeaseExpiry: g.expiry()}
	default:
		return Expire{}
	}
}

// checkInvariants verifies the ledger's invariants from its records alone.
func checkInvariants(t *testing.T, l *Ledger, step int) {
	t.Helper()
	used := map[string]placement.Resources{}
	live := map[string]string{}
	for _, a := range l.Allocations() {
		if !a.Live() {
			continue
		}
		k := a.JobRegion + "/" + a.JobID
		if other, dup := live[k]; dup {
			t.Fatalf("step %d: job %s has two live allocations %s and %s", step, k, other, a.ID)
		}
		live[k] = a.ID
		used[a.NodeID] = used[a.NodeID].Add(a.Resources)
		if !a.LeaseExpiry.IsZero() && !a.LeaseExpiry.After(l.Now()) {
			t.Fatalf("step %d: allocation %s outlived its lease", step, a.ID)
		}
	}
	for _, e := range l.Escrows() {
		used[e.NodeID] = used[e.NodeID].Add(e.Resources)
		if !e.Expiry.After(l.Now()) {
			t.Fatalf("step %d: escrow %s outlived its expiry %v (ledger time %v)", step, e.ID, e.Expiry, l.Now())
		}
	}
	for _, n := range l.Nodes() {
		u := used[n.ID]
		if !u.FitsIn(n.Total) {
			t.Fatalf("step %d: node %s overcommitted: %s of %s", step, n.ID, fmtRes(u), fmtRes(n.Total))
		}
		if !u.FitsIn(n.Used) || !n.Used.FitsIn(u) {
			t.Fatalf("step %d: node %s Used %s, but its records sum to %s", step, n.ID, fmtRes(n.Used), fmtRes(u))
		}
		delete(used, n.ID)
	}
	if len(used) != 0 {
		t.Fatalf("step %d: capacity held on unknown nodes %v", step, used)
	}
	for _, j := range l.Jobs() {
		if j.AllocID != "" {
			if live[l.Region()+"/"+j.ID] != j.AllocID {
				t.Fatalf("step %d: job %s names allocation %s, which is not its live one", step, j.ID, j.AllocID)
			}
			if j.Remote != nil {
				t.Fatalf("step %d: job %s is both local and traded", step, j.ID)
			}
		} else if id, ok := live[l.Region()+"/"+j.ID]; ok {
			t.Fatalf("step %d: job %s has live allocation %s it does not name", step, j.ID, id)
		}
		if j.State.Terminal() && j.AllocID != "" {
			t.Fatalf("step %d: %s job %s still holds allocation %s", step, j.State, j.ID, j.AllocID)
		}
	}
	// The live index and the jobs' AllocIDs list exactly the live
	// allocations: by job ID, the region's own first for a shared ID.
	var wantLive []Allocation
	for _, a := range l.Allocations() {
		if a.Live() {
			wantLive = append(wantLive, a)
		}
	}
	slices.SortFunc(wantLive, func(a, b Allocation) int {
		own := func(x Allocation) int {
			if x.JobRegion == l.Region() {
				return 0
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.JobID, b.JobID), cmp.Compare(own(a), own(b)), cmp.Compare(a.JobRegion, b.JobRegion))
	})
	gotLive := l.LiveAllocations()
	if len(gotLive) != len(wantLive) || len(gotLive) > 0 && !reflect.DeepEqual(gotLive, wantLive) {
		t.Fatalf("step %d: LiveAllocations lists %v; the live allocations are %v", step, allocIDs(gotLive), allocIDs(wantLive))
	}
	if n := l.Counts().LiveAllocations; n != len(wantLive) {
		t.Fatalf("step %d: Counts says %d live allocations; there are %d", step, n, len(wantLive))
	}
	for _, a := range wantLive {
		if got, ok := l.JobAllocation(a.JobRegion, a.JobID); !ok || got.ID != a.ID {
			t.Fatalf("step %d: JobAllocation(%s, %s) gives %q, %v; its live allocation is %s", step, a.JobRegion, a.JobID, got.ID, ok, a.ID)
		}
	}
	// The pending index lists exactly the pending jobs, in ID order.
	var want []string
	for _, j := range l.Jobs() {
		if j.State == JobPending {
			want = append(want, j.ID)
		}
	}
	var got []string
	for _, j := range l.PendingJobs() {
		got = append(got, j.ID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("step %d: PendingJobs lists %v; the pending jobs are %v", step, got, want)
	}
}

func resultKey(r Result) string {
	return fmt.Sprintf("%d|%s|%d|%v|%v|%d|%v", r.Index, r.ID, r.Epoch, r.Existing, r.Expired, r.Pruned, r.Err)
}

// TestLedgerProperties feeds seeded random command sequences, packed in
// random batches, to two independent state machines. After every entry
// both must hold the invariants, agree on every result, and be equal; and a
// snapshot/restore at random points must not change anything.
func TestLedgerProperties(t *testing.T) {
	seeds := 40
	steps := 400
	if testing.Short() {
		seeds = 10
	}
	rejected := map[Code]int{}
	preemptions, holdPreemptions := 0, 0
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			g := &cmdGen{r: rand.New(rand.NewPCG(uint64(seed), 7)), now: t0}
			a, b := NewFSM("eu-west-1"), NewFSM("eu-west-1")
			g.onNode = func(node string) []string {
				var ids []string
				for _, al := range a.Ledger().NodeAllocations(node) {
					ids = append(ids, al.ID)
				}
				return ids
			}
			index := uint64(0)
			for step := 0; step < steps; {
				// Time mostly moves forward, sometimes backwards (a new
				// leader with a slower clock).
				g.now = g.now.Add(time.Duration(g.r.IntN(20)-3) * time.Second)
				n := 1 + g.r.IntN(6)
				envs := make([]Envelope, n)
				cmds := make([]Command, n)
				for i := range envs {
					cmds[i] = g.next()
					env, err := EncodeCommand(cmds[i])
					if err != nil {
						t.Fatal(err)
					}
					env.Now = g.now
					envs[i] = env
				}
				data, err := encodeEntry(envs)
				if err != nil {
					t.Fatal(err)
				}
				index++
				log := &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
				ra := a.Apply(log).(*EntryResult)
				rb := b.Apply(log).(*EntryResult)
				if ra.Err != nil || len(ra.Results) != n {
					t.Fatalf("entry %d: %v, %d results", index, ra.Err, len(ra.Results))
				}
				for i := range ra.Results {
					if ka, kb := resultKey(ra.Results[i]), resultKey(rb.Results[i]); ka != kb {
						t.Fatalf("entry %d command %d: replicas disagree: %s vs %s", index, i, ka, kb)
					}
					if err := ra.Results[i].Err; err != nil {
						var ce *CommandError
						if !errors.As(err, &ce) || ce.Code.Sentinel() == nil || !errors.Is(err, ce.Code.Sentinel()) {
							t.Fatalf("entry %d command %d: error %v is not a CommandError with a sentinel", index, i, err)
						}
						rejected[ce.Code]++
					} else if p, ok := cmds[i].(PlaceJob); ok && len(p.Preempt) > 0 {
						preemptions++
					} else if h, ok := cmds[i].(HoldEscrow); ok && len(h.Preempt) > 0 && !ra.Results[i].Existing {
						holdPreemptions++
					}
				}
				step += n
				checkInvariants(t, a.Ledger(), step)
				if sa, sb := a.Ledger().Export(), b.Ledger().Export(); !reflect.DeepEqual(sa, sb) {
					t.Fatalf("entry %d: replicas diverged", index)
				}
				if g.r.IntN(15) == 0 {
					var buf bytes.Buffer
					if err := WriteSnapshot(&buf, a.Ledger()); err != nil {
						t.Fatal(err)
					}
					restored := NewFSM("eu-west-1")
					if err := restored.Restore(readCloser{&buf}); err != nil {
						t.Fatalf("restore at entry %d: %v", index, err)
					}
					if sa, sr := a.Ledger().Export(), restored.Ledger().Export(); !reflect.DeepEqual(sa, sr) {
						t.Fatalf("entry %d: snapshot/restore changed the ledger:\n%+v\n%+v", index, sa, sr)
					}
					a = restored
				}
			}
		})
	}
	t.Logf("rejections by code: %v; %d placements and %d escrow holds by preemption", rejected, preemptions, holdPreemptions)
	if (preemptions == 0 || holdPreemptions == 0) && !testing.Short() {
		t.Errorf("%d placements and %d escrow holds preempted anything: the generator misses a path", preemptions, holdPreemptions)
	}
	// The generator must reach the rejections the invariants are about.
	for _, c := range []Code{CodeOvercommit, CodeDoubleAllocation, CodeConflict, CodeStaleEpoch, CodeNotFound} {
		if rejected[c] == 0 {
			t.Errorf("no command was rejected with %s: the generator misses a path", c)
		}
	}
}

type readCloser struct{ *bytes.Buffer }

func (readCloser) Close() error { return nil }

func TestSnapshotRejectsCorruptAndForeignState(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(SubmitJob{Job: job("j1", 10, 0)})
	r.ok(PlaceJob{JobID: "j1", NodeID: "n1"})
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, r.l); err != nil {
		t.Fatal(err)
	}
	full := buf.Bytes()
	for cut := 0; cut < len(full); cut += 7 {
		if _, err := ReadSnapshot(bytes.NewReader(full[:cut])); err == nil {
			t.Fatalf("truncated snapshot (%d of %d bytes) was accepted", cut, len(full))
		}
	}
	other := NewFSM("us-east-1")
	if err := other.Restore(readCloser{bytes.NewBuffer(full)}); err == nil {
		t.Fatal("a snapshot of another region was restored")
	}
	// A snapshot whose node is overcommitted is refused.
	st := r.l.Export()
	st.Nodes[0].Total = res(1, 1, 1, 0)
	if _, err := Import(st); err == nil {
		t.Fatal("Import accepted an overcommitted node")
	}
}

func TestFSMMalformedEntries(t *testing.T) {
	f := NewFSM("r")
	for i, data := range [][]byte{nil, {0x90}, {0x92, 0x01}, {0x92, 0x02, 0x90}, {0x92, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff}} {
		out, ok := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data}).(*EntryResult)
		if !ok || !errors.Is(out.Err, ErrMalformed) {
			t.Errorf("entry %x: %+v, want ErrMalformed", data, out)
		}
	}
	if got := f.Apply(&raft.Log{Index: 9, Type: raft.LogConfiguration}); got != nil {
		t.Errorf("configuration entry gave %v", got)
	}
}

func allocIDs(as []Allocation) []string {
	ids := make([]string, len(as))
	for i, a := range as {
		ids[i] = a.ID
	}
	return ids
}

// TestEnvelopePathMatchesCommandPath applies seeded random command
// sequences to two ledgers, one through encoded envelopes (as replicas do,
// with PlaceJob on its unboxed fast path, the commands of a batch encoded
// into one shared buffer) and one through Apply with the typed commands:
// every result and the ledgers must be the same.
func TestEnvelopePathMatchesCommandPath(t *testing.T) {
	for seed := range 20 {
		g := &cmdGen{r: rand.New(rand.NewPCG(uint64(seed), 11)), now: t0}
		viaEnv, viaCmd := NewLedger("eu-west-1"), NewLedger("eu-west-1")
		g.onNode = func(node string) []string {
			var ids []string
			for _, al := range viaEnv.NodeAllocations(node) {
				ids = append(ids, al.ID)
			}
			return ids
		}
		placed := 0
		for step := 0; step < 400; {
			g.now = g.now.Add(time.Duration(g.r.IntN(20)-3) * time.Second)
			cmds := make([]Command, 1+g.r.IntN(6))
			for i := range cmds {
				cmds[i] = g.next()
			}
			envs, err := encodeCommands(cmds)
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range cmds {
				envs[i].Now = g.now
				var re, rc Result
				viaEnv, re = viaEnv.ApplyEnvelope(envs[i])
				viaCmd, rc = viaCmd.Apply(g.now, c)
				if ke, kc := resultKey(re), resultKey(rc); ke != kc {
					t.Fatalf("seed %d step %d %T: envelope gives %s, command %s", seed, step, c, ke, kc)
				}
				if _, ok := c.(PlaceJob); ok && re.Err == nil {
					placed++
				}
				step++
			}
			if se, sc := viaEnv.Export(), viaCmd.Export(); !reflect.DeepEqual(se, sc) {
				t.Fatalf("seed %d step %d: the ledgers differ", seed, step)
			}
		}
		if placed == 0 {
			t.Fatalf("seed %d: no placement succeeded: the test checks nothing of the fast path", seed)
		}
	}
}
