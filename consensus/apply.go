package consensus

import (
	"cmp"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/meridian-mesh/meridian/placement"
)

// Result is the outcome of one command, the same on every replica.
type Result struct {
	// Index is the Raft log index of the entry that carried the command
	// (zero when applied outside Raft).
	Index uint64
	// ID names what the command created or acted on: the node, job,
	// allocation, escrow or lease ID.
	ID string
	// Epoch is the job's placement epoch after the command, for commands
	// about a job.
	Epoch uint64
	// Existing reports that the command was a repeat of one already
	// applied (an idempotent resubmission): nothing changed.
	Existing bool
	// Created reports, for SubmitJob, that the job was created by this
	// command or by an earlier one of the same submission (a retry).
	Created bool
	// Expired lists the escrows released and the allocations stopped
	// because the command's time passed their expiry.
	Expired []string
	// Pruned counts the records a Prune command deleted.
	Pruned int
	// Err is why the command was rejected, or nil. It is a *CommandError
	// that unwraps to a sentinel (ErrOvercommit, ErrDoubleAllocation...).
	// A rejected command changes nothing (but time still advances).
	Err error
}

// Apply applies one command at time now and returns the new version of the
// ledger with the command's result. l is unchanged (and may be read, or
// applied to, by other goroutines meanwhile). Apply is deterministic: the
// same ledger, time and command give the same result and the same new
// ledger, on any machine.
//
// The ledger's time first advances to now (it never goes back, so a leader
// whose clock is behind its predecessor's cannot un-expire anything), which
// expires escrows and allocation leases; then the command is validated
// against the ledger and applied whole, or rejected with no effect.
func (l *Ledger) Apply(now time.Time, cmd Command) (*Ledger, Result) {
	tx := l.begin()
	r := tx.apply(now, cmd)
	return tx.commit(), r
}

// ApplyEnvelope decodes and applies one envelope; a version, kind or body
// the ledger cannot read gives an error result, never a panic.
func (l *Ledger) ApplyEnvelope(env Envelope) (*Ledger, Result) {
	tx := l.begin()
	r := tx.applyEnvelope(env)
	return tx.commit(), r
}

// ledgerTx is a private, mutable copy of a ledger that commands are applied
// to in place. Each command's writes are logged so that a rejected command
// is undone whole. commit turns the copy into an immutable *Ledger.
type ledgerTx struct {
	region string
	index  uint64
	now    time.Time
	seq    uint64
	t      *tables
	undo   []undoRec
	// logging is off while time advances: expiry is not part of the
	// command and is never undone.
	logging bool
}

// begin returns a working copy of l; l is not changed.
func (l *Ledger) begin() *ledgerTx {
	return &ledgerTx{region: l.region, index: l.index, now: l.now, seq: l.seq, t: l.t.clone()}
}

// commit returns the working copy as an immutable ledger. The transaction
// must not be used afterwards.
func (tx *ledgerTx) commit() *Ledger {
	l := &Ledger{region: tx.region, index: tx.index, now: tx.now, seq: tx.seq, t: tx.t}
	tx.t = nil
	return l
}

// publish returns the current state as an immutable ledger and goes on
// with a fresh copy of it, for a writer that applies entry after entry.
func (tx *ledgerTx) publish() *Ledger {
	l := &Ledger{region: tx.region, index: tx.index, now: tx.now, seq: tx.seq, t: tx.t}
	tx.t = l.t.clone()
	return l
}

func (tx *ledgerTx) applyEnvelope(env Envelope) Result {
	expired := tx.advance(env.Now)
	if env.Version == CommandVersion && env.Kind == KindPlaceJob {
		// The commonest command, applied as DecodeCommand and run would,
		// without putting it in a Command (an allocation per placement,
		// on every replica).
		if c, ok := decodePlaceJob(env.Body); ok {
			m := tx.startCmd()
			res, err := tx.placeJob(c)
			r := tx.endCmd(m, res, err)
			r.Expired = expired
			return r
		}
	}
	cmd, err := DecodeCommand(env)
	if err != nil {
		return Result{Expired: expired, Err: err}
	}
	r := tx.run(cmd)
	r.Expired = expired
	return r
}

func (tx *ledgerTx) apply(now time.Time, cmd Command) Result {
	expired := tx.advance(now)
	r := tx.run(cmd)
	r.Expired = expired
	return r
}

// advance moves the ledger's time to now (if later) and expires what is due.
func (tx *ledgerTx) advance(now time.Time) []string {
	now = canon(now)
	if !now.After(tx.now) {
		return nil
	}
	tx.now = now
	var due []string
	tx.t.expiry.each(func(k string, _ struct{}) bool {
		t, id, ok := parseExpiryKey(k)
		if !ok || t.After(now) {
			return false
		}
		due = append(due, id)
		return true
	})
	for _, id := range due {
		if e, ok := tx.t.escrows.get(id); ok {
			tx.releaseEscrow(e)
		} else if a, ok := tx.alloc(id); ok && a.Live() {
			tx.stopAlloc(a, StopExpired, "lease expired at "+a.LeaseExpiry.Format(time.RFC3339Nano), true)
		}
	}
	return due
}

// run applies one command, or undoes every write it made if it is rejected.
func (tx *ledgerTx) run(cmd Command) Result {
	m := tx.startCmd()
	res, err := tx.dispatch(cmd)
	return tx.endCmd(m, res, err)
}

// cmdMark is what a rejected command restores besides its logged writes.
type cmdMark struct {
	seq     uint64
	ownLive int
}

// startCmd starts logging a command's writes.
func (tx *ledgerTx) startCmd() cmdMark {
	tx.undo = tx.undo[:0]
	tx.logging = true
	return cmdMark{seq: tx.seq, ownLive: tx.t.ownLive}
}

// endCmd stops logging, and undoes the command's writes if err is set.
func (tx *ledgerTx) endCmd(m cmdMark, res Result, err *CommandError) Result {
	tx.logging = false
	if err != nil {
		for i := len(tx.undo) - 1; i >= 0; i-- {
			u := tx.undo[i]
			u.t.restore(u.k, u.old, u.had)
		}
		tx.seq, tx.t.ownLive = m.seq, m.ownLive
		res = Result{Err: err}
	}
	clear(tx.undo)
	tx.undo = tx.undo[:0]
	return res
}

func (tx *ledgerTx) dispatch(cmd Command) (Result, *CommandError) {
	switch c := cmd.(type) {
	case RegisterNode:
		return tx.registerNode(c)
	case UpdateNode:
		return tx.updateNode(c)
	case SetNodeState:
		return tx.setNodeState(c)
	case RemoveNode:
		return tx.removeNode(c)
	case SubmitJob:
		return tx.submitJob(c)
	case PlaceJob:
		return tx.placeJob(c)
	case ReplaceAllocation:
		return tx.replaceAllocation(c)
	case StopAllocation:
		return tx.stopAllocation(c)
	case RenewAllocation:
		return tx.renewAllocation(c)
	case SetJobState:
		return tx.setJobState(c)
	case BumpEpoch:
		return tx.bumpEpoch(c)
	case HoldEscrow:
		return tx.holdEscrow(c)
	case ReleaseEscrow:
		return tx.releaseEscrowCmd(c)
	case ConvertEscrow:
		return tx.convertEscrow(c)
	case Expire:
		// Advancing time was the whole of it.
		return Result{}, nil
	case RecordAward:
		return tx.recordAward(c)
	case SetTradeState:
		return tx.setTradeState(c)
	case AddLease:
		return tx.addLease(c)
	case RemoveLease:
		return tx.removeLease(c)
	case Prune:
		return tx.prune(c)
	case DrawLease:
		return tx.drawLease(c)
	case EndTrade:
		return tx.endTrade(c)
	case MarkReported:
		return tx.markReported(c)
	case nil:
		return Result{}, invalid("command", "must not be nil")
	}
	return Result{}, cmdErr(CodeUnsupported, "", "command type %T", cmd)
}

// undoRec is one logged write: the table, the key and what the key held
// before. It is a plain value (the table is a single pointer and the
// records are pointers, which an interface holds without allocating), so
// that logging the writes of a command costs no allocation.
type undoRec struct {
	t   undoer
	k   string
	old any
	had bool
}

type undoer interface {
	// restore puts back what the key held: old if had, else nothing.
	restore(k string, old any, had bool)
}

func (t table[V]) restore(k string, old any, had bool) {
	if had {
		t.set(k, old.(V))
	} else {
		t.del(k)
	}
}

// set and del write a table, logging the undo while a command runs.
func set[V any](tx *ledgerTx, t table[V], k string, v V) {
	old, had := t.set(k, v)
	if tx.logging {
		tx.undo = append(tx.undo, undoRec{t: t, k: k, old: old, had: had})
	}
}

// insert writes a key that must be new, and reports false (leaving the
// undo to run) if it was there already.
func insert[V any](tx *ledgerTx, t table[V], k string, v V) bool {
	old, had := t.set(k, v)
	if tx.logging {
		tx.undo = append(tx.undo, undoRec{t: t, k: k, old: old, had: had})
	}
	return !had
}

func del[V any](tx *ledgerTx, t table[V], k string) bool {
	old, had := t.del(k)
	if had && tx.logging {
		tx.undo = append(tx.undo, undoRec{t: t, k: k, old: old, had: true})
	}
	return had
}

// nextID returns a new ID: the prefix, a dash and the next number of a
// counter in the ledger, so that every replica makes the same ones
// (allocations "a-N", escrows "e-N", leases "l-N").
func (tx *ledgerTx) nextID(prefix string) string {
	tx.seq++
	b := make([]byte, 0, 24)
	b = append(append(b, prefix...), '-')
	return string(strconv.AppendUint(b, tx.seq, 10))
}

// nextIDOn returns a new ID (as nextID) for an allocation or escrow on
// node nodeID, with its key in the onNode index. The ID is the tail of the
// key, in one allocation: a region holds an allocation for each of its
// placed jobs, and one string for the collector to mark is cheaper than
// two. (Once the allocation stops and the key leaves the index, the ID
// keeps the node ID's few bytes alive with it.)
func (tx *ledgerTx) nextIDOn(nodeID, prefix string) (id, onNodeKey string) {
	tx.seq++
	var buf [64]byte
	b := append(append(buf[:0], nodeID...), 0)
	b = append(append(b, prefix...), '-')
	k := string(strconv.AppendUint(b, tx.seq, 10))
	return k[len(nodeID)+1:], k
}

// node returns the node's record as the nodes table holds it: its Used is
// always zero there (and Free() its Total), since Used lives in the used
// table; read it with tx.used.
func (tx *ledgerTx) node(id string) (*Node, bool) { return tx.t.nodes.get(id) }
func (tx *ledgerTx) job(id string) (*Job, bool)   { return tx.t.jobs.get(id) }
func (tx *ledgerTx) alloc(id string) (*Allocation, bool) {
	r, ok := tx.t.allocs.get(id)
	if !ok {
		return nil, false
	}
	a := r.alloc()
	return &a, true
}

func (tx *ledgerTx) putNode(n *Node) { set(tx, tx.t.nodes, n.ID, n) }
func (tx *ledgerTx) putJob(j *Job) {
	set(tx, tx.t.jobs, j.ID, j)
	if j.State == JobPending {
		set(tx, tx.t.pending, j.ID, struct{}{})
	} else {
		del(tx, tx.t.pending, j.ID)
	}
}
func (tx *ledgerTx) putAlloc(a *Allocation) { set(tx, tx.t.allocs, a.ID, packAlloc(a)) }

// used is what a node's allocations and escrows hold (its Used). It lives
// in a table of its own, by value, so that a placement changes one B-tree
// slot instead of copying the node's record (the node records in the
// tables keep Used zero).
func (tx *ledgerTx) used(nodeID string) placement.Resources {
	u, _ := tx.t.used.get(nodeID)
	return u
}

// addUsed and subUsed change a node's Used by res.
func (tx *ledgerTx) addUsed(nodeID string, res placement.Resources) {
	set(tx, tx.t.used, nodeID, tx.used(nodeID).Add(res))
}

func (tx *ledgerTx) subUsed(nodeID string, res placement.Resources) {
	if !tx.t.nodes.has(nodeID) {
		return
	}
	if tx.holdsNothing(nodeID) {
		// Nothing left on the node: reset Used exactly, so that rounding
		// drift from long add/subtract chains cannot accumulate.
		del(tx, tx.t.used, nodeID)
		return
	}
	set(tx, tx.t.used, nodeID, tx.used(nodeID).Sub(res))
}

func (tx *ledgerTx) holdsNothing(nodeID string) bool {
	empty := true
	tx.t.onNode.prefix(key(nodeID, ""), func(string, struct{}) bool { empty = false; return false })
	return empty
}

// --- validation helpers ---

const (
	maxIDLen   = 256
	maxTextLen = 1024
)

var (
	minTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

func checkID(field, s string) *CommandError {
	if s == "" {
		return invalid(field, "must not be empty")
	}
	if len(s) > maxIDLen {
		return invalid(field, "is %d bytes long, at most %d are allowed", len(s), maxIDLen)
	}
	return checkChars(field, s)
}

func checkText(field, s string) *CommandError {
	if len(s) > maxTextLen {
		return invalid(field, "is %d bytes long, at most %d are allowed", len(s), maxTextLen)
	}
	if !utf8.ValidString(s) {
		return invalid(field, "must be valid UTF-8")
	}
	return nil
}

func checkChars(field, s string) *CommandError {
	if !utf8.ValidString(s) {
		return invalid(field, "must be valid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return invalid(field, "must not contain control characters")
		}
	}
	return nil
}

func checkResources(field string, r placement.Resources) *CommandError {
	if err := r.Validate(field + "."); err != nil {
		return fromFieldError("", err)
	}
	return nil
}

func checkPrice(field string, p float64) *CommandError {
	if math.IsNaN(p) || math.IsInf(p, 0) || p < 0 {
		return invalid(field, "must be a finite number not below zero, got %v", p)
	}
	return nil
}

func checkFinite(field string, v float64) *CommandError {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return invalid(field, "must be a finite number, got %v", v)
	}
	return nil
}

func checkTimeRange(field string, t time.Time) *CommandError {
	if t.Before(minTime) || !t.Before(maxTime) {
		return invalid(field, "%s is outside the years 1970 to 2199", t.Format(time.RFC3339))
	}
	return nil
}

// checkExpiry accepts zero when zero is allowed, and otherwise a time after
// the ledger's time.
func (tx *ledgerTx) checkExpiry(field string, t time.Time, zeroOK bool) *CommandError {
	if t.IsZero() {
		if zeroOK {
			return nil
		}
		return invalid(field, "must be set")
	}
	if err := checkTimeRange(field, t); err != nil {
		return err
	}
	if !t.After(tx.now) {
		return invalid(field, "%s is not after the command time %s",
			t.Format(time.RFC3339Nano), tx.now.Format(time.RFC3339Nano))
	}
	return nil
}

func firstErr(errs ...*CommandError) *CommandError {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// --- nodes ---

func (tx *ledgerTx) checkNodeSpec(id string, total placement.Resources, price float64, gpu string) *CommandError {
	if err := firstErr(checkID("id", id), checkText("gpu_type", gpu), checkChars("gpu_type", gpu)); err != nil {
		return err
	}
	pn := placement.Node{ID: id, Region: tx.region, Total: total, Free: total, PricePerHour: price, GPUType: gpu}
	if err := pn.Validate(); err != nil {
		return fromFieldError("", err)
	}
	return nil
}

func (tx *ledgerTx) registerNode(c RegisterNode) (Result, *CommandError) {
	if c.Region != "" && c.Region != tx.region {
		return Result{}, invalid("region", "node of region %q cannot register in the ledger of region %q", c.Region, tx.region)
	}
	if err := tx.checkNodeSpec(c.ID, c.Total, c.PricePerHour, c.GPUType); err != nil {
		return Result{}, err
	}
	if n, ok := tx.node(c.ID); ok {
		if n.Total == c.Total && n.PricePerHour == c.PricePerHour && n.GPUType == c.GPUType {
			return Result{ID: c.ID, Existing: true}, nil
		}
		return Result{}, cmdErr(CodeConflict, c.ID, "node %q is registered with a different description; use UpdateNode", c.ID)
	}
	now := tx.now
	tx.putNode(&Node{ID: c.ID, Region: tx.region, Total: canonRes(c.Total), PricePerHour: c.PricePerHour,
		GPUType: c.GPUType, State: NodeReady, Registered: now, Updated: now})
	return Result{ID: c.ID}, nil
}

// canonRes turns −0 into 0 so that records compare equal byte for byte.
func canonRes(r placement.Resources) placement.Resources {
	r.ComputePerHour += 0
	r.StorageGB += 0
	r.BandwidthGBps += 0
	return r
}

func (tx *ledgerTx) updateNode(c UpdateNode) (Result, *CommandError) {
	if err := tx.checkNodeSpec(c.ID, c.Total, c.PricePerHour, c.GPUType); err != nil {
		return Result{}, err
	}
	n, ok := tx.node(c.ID)
	if !ok {
		return Result{}, cmdErr(CodeNotFound, c.ID, "node %q is not registered", c.ID)
	}
	if n.Total == c.Total && n.PricePerHour == c.PricePerHour && n.GPUType == c.GPUType {
		return Result{ID: c.ID, Existing: true}, nil
	}
	if used := tx.used(c.ID); !used.FitsIn(c.Total) {
		return Result{}, cmdErr(CodeOvercommit, c.ID, "node %q uses %s, more than the new capacity %s",
			c.ID, fmtRes(used), fmtRes(c.Total))
	}
	u := *n
	u.Total, u.PricePerHour, u.GPUType, u.Updated = canonRes(c.Total), c.PricePerHour, c.GPUType, tx.now
	tx.putNode(&u)
	return Result{ID: c.ID}, nil
}

func (tx *ledgerTx) setNodeState(c SetNodeState) (Result, *CommandError) {
	if err := firstErr(checkID("id", c.ID), checkText("reason", c.Reason)); err != nil {
		return Result{}, err
	}
	if !c.State.valid() {
		return Result{}, invalid("state", "%s is not a node state", c.State)
	}
	n, ok := tx.node(c.ID)
	if !ok {
		return Result{}, cmdErr(CodeNotFound, c.ID, "node %q is not registered", c.ID)
	}
	if n.State == c.State && n.StateReason == c.Reason {
		return Result{ID: c.ID, Existing: true}, nil
	}
	u := *n
	u.State, u.StateReason, u.Updated = c.State, c.Reason, tx.now
	tx.putNode(&u)
	return Result{ID: c.ID}, nil
}

func (tx *ledgerTx) removeNode(c RemoveNode) (Result, *CommandError) {
	if err := checkID("id", c.ID); err != nil {
		return Result{}, err
	}
	if _, ok := tx.node(c.ID); !ok {
		return Result{ID: c.ID, Existing: true}, nil
	}
	if !tx.holdsNothing(c.ID) {
		return Result{}, cmdErr(CodeConflict, c.ID, "node %q still holds live allocations or escrows; stop or move them first", c.ID)
	}
	del(tx, tx.t.nodes, c.ID)
	del(tx, tx.t.used, c.ID)
	return Result{ID: c.ID}, nil
}

// --- jobs and allocations ---

func (tx *ledgerTx) submitJob(c SubmitJob) (Result, *CommandError) {
	if err := c.Job.Validate(); err != nil {
		return Result{}, fromFieldError("job.", err)
	}
	if err := firstErr(checkID("job.id", c.Job.ID), checkChars("job.origin_region", c.Job.OriginRegion),
		checkText("job.origin_region", c.Job.OriginRegion), checkText("job.gpu_type", c.Job.GPUType)); err != nil {
		return Result{}, err
	}
	if err := checkTask(c.Task); err != nil {
		return Result{}, err
	}
	if c.Submission != "" {
		if err := checkID("submission", c.Submission); err != nil {
			return Result{}, err
		}
	}
	if j, ok := tx.job(c.Job.ID); ok {
		if reflect.DeepEqual(j.Spec, c.Job) && reflect.DeepEqual(j.Task, c.Task) {
			return Result{ID: j.ID, Epoch: j.Epoch, Existing: true,
				Created: c.Submission != "" && c.Submission == j.Submission}, nil
		}
		return Result{}, cmdErr(CodeConflict, c.Job.ID, "job %q was submitted before with a different spec", c.Job.ID)
	}
	now := tx.now
	spec := c.Job
	spec.Demand = canonRes(spec.Demand)
	tx.putJob(&Job{ID: c.Job.ID, Spec: spec, Task: c.Task, State: JobPending, Submission: c.Submission, Submitted: now, Updated: now})
	return Result{ID: c.Job.ID, Created: true}, nil
}

// placeable returns the job if a new placement may be made for it under
// epoch (0: the next one).
func (tx *ledgerTx) placeable(jobID string, epoch uint64) (*Job, *CommandError) {
	j, ok := tx.job(jobID)
	if !ok {
		return nil, cmdErr(CodeNotFound, jobID, "job %q is not owned by region %q", jobID, tx.region)
	}
	if j.State.Terminal() {
		return nil, cmdErr(CodeInvalidTransition, jobID, "job %q is %s", jobID, j.State)
	}
	if epoch != 0 && epoch != j.Epoch+1 {
		return nil, cmdErr(CodeStaleEpoch, jobID, "job %q is at epoch %d, so the next placement is epoch %d, not %d",
			jobID, j.Epoch, j.Epoch+1, epoch)
	}
	return j, nil
}

// placedErr reports a job that already has a live placement: a live local
// allocation (its AllocID, which is the only record of it outside the
// allocation itself) or a trade.
func placedErr(j *Job) *CommandError {
	if j.AllocID != "" {
		return cmdErr(CodeDoubleAllocation, j.ID, "job %q already has live allocation %q", j.ID, j.AllocID)
	}
	if j.Remote != nil {
		return cmdErr(CodeDoubleAllocation, j.ID, "job %q was traded to region %q (auction %q, item %q)",
			j.ID, j.Remote.Region, j.Remote.AuctionID, j.Remote.ItemID)
	}
	return nil
}

// readyNode returns the node if it is ready and has room for res.
func (tx *ledgerTx) readyNode(nodeID string, res placement.Resources) (*Node, *CommandError) {
	n, ok := tx.node(nodeID)
	if !ok {
		return nil, cmdErr(CodeNotFound, nodeID, "node %q is not registered", nodeID)
	}
	if n.State != NodeReady {
		return nil, cmdErr(CodeNodeNotReady, nodeID, "node %q is %s", nodeID, n.State)
	}
	return n, fits(n, tx.used(nodeID), res)
}

// fits checks that res fits on n beside what it already holds (used).
func fits(n *Node, used, res placement.Resources) *CommandError {
	if !used.Add(res).FitsIn(n.Total) {
		return cmdErr(CodeOvercommit, n.ID, "node %q has %s free, %s asked", n.ID, fmtRes(clampFree(n.Total.Sub(used))), fmtRes(res))
	}
	return nil
}

func (tx *ledgerTx) allocResources(field string, res placement.Resources, j *Job) (placement.Resources, *CommandError) {
	if res.IsZero() {
		return j.Spec.Demand, nil
	}
	if err := checkResources(field, res); err != nil {
		return res, err
	}
	return canonRes(res), nil
}

// createAlloc makes a live allocation on n (whose room was checked). For
// another region's job it fails with ErrDoubleAllocation if the job already
// has a live allocation here (the caller, run, then undoes the writes made
// so far). For one of the region's own jobs the caller has checked that
// the job has none (placedErr), and then sets the job's AllocID.
func (tx *ledgerTx) createAlloc(n *Node, jobRegion, jobID string, res placement.Resources, epoch uint64, lease time.Time, auctionID, itemID string) (Allocation, *CommandError) {
	id, onNodeKey := tx.nextIDOn(n.ID, "a")
	a := Allocation{
		ID: id, JobID: jobID, JobRegion: jobRegion, NodeID: n.ID, Resources: res,
		Epoch: epoch, Start: tx.now, LeaseExpiry: canon(lease), State: AllocLive,
		AuctionID: auctionID, ItemID: itemID,
	}
	if jobRegion == tx.region {
		tx.t.ownLive++
	} else if !insert(tx, tx.t.live, liveKey(jobID, jobRegion), a.ID) {
		return Allocation{}, cmdErr(CodeDoubleAllocation, jobID, "job %q of region %q already has a live allocation", jobID, jobRegion)
	}
	tx.putAlloc(&a)
	set(tx, tx.t.onNode, onNodeKey, struct{}{})
	if !a.LeaseExpiry.IsZero() {
		set(tx, tx.t.expiry, expiryKey(a.LeaseExpiry, a.ID), struct{}{})
	}
	tx.addUsed(n.ID, res)
	return a, nil
}

// stopAlloc stops a live allocation and frees its resources. With
// updateJob, the job this region owns that runs on it is updated: completed
// for StopCompleted, pending otherwise.
func (tx *ledgerTx) stopAlloc(a *Allocation, reason StopReason, msg string, updateJob bool) {
	if a.Kind == ItemLease {
		// The jobs drawn on a lease lose their capacity with it.
		tx.stopDraws(a, reason)
		if cur, ok := tx.alloc(a.ID); ok {
			a = cur
		}
	}
	s := *a
	s.State, s.StopReason, s.StopMessage, s.Stopped = AllocStopped, reason, msg, tx.now
	tx.putAlloc(&s)
	if a.JobRegion == tx.region {
		tx.t.ownLive--
	} else {
		del(tx, tx.t.live, liveKey(a.JobID, a.JobRegion))
	}
	del(tx, tx.t.onNode, key(a.NodeID, a.ID))
	if !a.LeaseExpiry.IsZero() {
		del(tx, tx.t.expiry, expiryKey(a.LeaseExpiry, a.ID))
	}
	if a.InLease != "" {
		tx.returnToLease(a)
	} else {
		tx.subUsed(a.NodeID, a.Resources)
	}
	if !updateJob || a.JobRegion != tx.region {
		return
	}
	j, ok := tx.job(a.JobID)
	if !ok || j.AllocID != a.ID {
		return
	}
	u := *j
	u.AllocID, u.Updated = "", tx.now
	switch {
	case reason == StopCompleted && !u.State.Terminal():
		u.State, u.Reason = JobCompleted, msg
	case !u.State.Terminal():
		u.State = JobPending
		u.Reason = "allocation " + a.ID + " " + reason.String()
		if msg != "" {
			u.Reason += ": " + msg
		}
	}
	tx.putJob(&u)
}

func (tx *ledgerTx) placeJob(c PlaceJob) (Result, *CommandError) {
	if err := firstErr(checkID("job_id", c.JobID), checkID("node_id", c.NodeID), tx.checkExpiry("lease_expiry", c.LeaseExpiry, true)); err != nil {
		return Result{}, err
	}
	j, err := tx.placeable(c.JobID, c.Epoch)
	if err != nil {
		return Result{}, err
	}
	if err := placedErr(j); err != nil {
		return Result{}, err
	}
	res, err := tx.allocResources("resources", c.Resources, j)
	if err != nil {
		return Result{}, err
	}
	if len(c.Preempt) > 0 {
		// Lower priorities yield, and room sold to another region at the
		// same one: a region takes back the room it lent for its own work.
		yields := func(a *Allocation, p int) bool { return p < j.Spec.Priority || p == j.Spec.Priority && a.Sold() }
		msg := fmt.Sprintf("preempted by job %s (priority %d)", j.ID, j.Spec.Priority)
		if err := tx.preempt(c.NodeID, c.Preempt, res, yields, j.ID, j.Spec.Priority, msg); err != nil {
			return Result{}, err
		}
	}
	n, err := tx.readyNode(c.NodeID, res)
	if err != nil {
		return Result{}, err
	}
	epoch := j.Epoch + 1
	a, err := tx.createAlloc(n, tx.region, j.ID, res, epoch, c.LeaseExpiry, "", "")
	if err != nil {
		return Result{}, err
	}
	u := *j
	u.State, u.Epoch, u.AllocID, u.Reason, u.Updated = JobPlaced, epoch, a.ID, "", tx.now
	u.Attempts++
	tx.putJob(&u)
	return Result{ID: a.ID, Epoch: epoch}, nil
}

// MaxPreempt bounds PlaceJob.Preempt and HoldEscrow.Preempt: a placement
// that needs more allocations stopped than this is not worth the
// disruption.
const MaxPreempt = 8

// preempt stops the allocations ids on nodeID (StopPreempted, with msg) to
// make room for res, for a job (named job, of priority prio) they must
// yield to, or fails having stopped none.
func (tx *ledgerTx) preempt(nodeID string, ids []string, res placement.Resources, yields func(a *Allocation, p int) bool, job string, prio int, msg string) *CommandError {
	if len(ids) > MaxPreempt {
		return invalid("preempt", "%d allocations; at most %d may be preempted for one placement", len(ids), MaxPreempt)
	}
	n, ok := tx.node(nodeID)
	if !ok {
		return cmdErr(CodeNotFound, nodeID, "node %q is not registered", nodeID)
	}
	if n.State != NodeReady {
		return cmdErr(CodeNodeNotReady, n.ID, "node %q is %s", n.ID, n.State)
	}
	victims := make([]*Allocation, 0, len(ids))
	var freed placement.Resources
	for i, id := range ids {
		field := fmt.Sprintf("preempt[%d]", i)
		if err := checkID(field, id); err != nil {
			return err
		}
		if slices.Contains(ids[:i], id) {
			return invalid(field, "allocation %q is named twice", id)
		}
		a, ok := tx.alloc(id)
		switch {
		case !ok:
			return cmdErr(CodeNotFound, id, "allocation %q does not exist", id)
		case !a.Live():
			return cmdErr(CodeInvalidTransition, id, "allocation %q is already stopped (%s)", id, a.StopReason)
		case a.NodeID != n.ID:
			return invalid(field, "allocation %q is on node %q, not %q", id, a.NodeID, n.ID)
		case a.Kind == ItemLease || a.InLease != "":
			return invalid(field, "allocation %q is a lease or drawn on one; a lease is preempted only with its terms", id)
		}
		if p := tx.allocPriority(a); !yields(a, p) {
			return invalid(field, "allocation %q runs a job of priority %d, which does not yield to job %q's %d", id, p, job, prio)
		}
		victims = append(victims, a)
		freed = freed.Add(a.Resources)
	}
	if used := tx.used(n.ID); !used.Add(res).FitsIn(n.Total.Add(freed)) {
		return cmdErr(CodeOvercommit, n.ID, "node %q has %s free and preempting frees %s, %s asked",
			n.ID, fmtRes(clampFree(n.Total.Sub(used))), fmtRes(freed), fmtRes(res))
	}
	for _, a := range victims {
		tx.stopAlloc(a, StopPreempted, msg, true)
	}
	return nil
}

// allocPriority is the priority of the job a live allocation runs.
func (tx *ledgerTx) allocPriority(a *Allocation) int {
	if a.JobRegion == tx.region {
		if j, ok := tx.job(a.JobID); ok {
			return j.Spec.Priority
		}
	}
	return a.Priority
}

func (tx *ledgerTx) replaceAllocation(c ReplaceAllocation) (Result, *CommandError) {
	if err := firstErr(checkID("job_id", c.JobID), checkID("node_id", c.NodeID),
		tx.checkExpiry("lease_expiry", c.LeaseExpiry, true), checkText("reason", c.Reason)); err != nil {
		return Result{}, err
	}
	j, err := tx.placeable(c.JobID, c.Epoch)
	if err != nil {
		return Result{}, err
	}
	old, ok := tx.alloc(j.AllocID)
	if j.AllocID == "" || !ok || !old.Live() {
		return Result{}, cmdErr(CodeNotFound, c.JobID, "job %q has no live local allocation to replace", c.JobID)
	}
	res, err := tx.allocResources("resources", c.Resources, j)
	if err != nil {
		return Result{}, err
	}
	// Stop first, then check room: when the new node is the old one, the
	// freed capacity counts. A rejection drops the whole transaction.
	tx.stopAlloc(old, StopReplaced, c.Reason, false)
	n, err := tx.readyNode(c.NodeID, res)
	if err != nil {
		return Result{}, err
	}
	epoch := j.Epoch + 1
	a, err := tx.createAlloc(n, tx.region, j.ID, res, epoch, c.LeaseExpiry, "", "")
	if err != nil {
		return Result{}, err
	}
	u := *j
	u.State, u.Epoch, u.AllocID, u.Reason, u.Updated = JobPlaced, epoch, a.ID, "", tx.now
	u.Attempts++
	tx.putJob(&u)
	return Result{ID: a.ID, Epoch: epoch}, nil
}

func (tx *ledgerTx) stopAllocation(c StopAllocation) (Result, *CommandError) {
	if err := firstErr(checkID("alloc_id", c.AllocID), checkText("message", c.Message)); err != nil {
		return Result{}, err
	}
	if c.Reason < StopCompleted || c.Reason > StopLost {
		return Result{}, invalid("reason", "%s is not a reason a command may give", c.Reason)
	}
	a, ok := tx.alloc(c.AllocID)
	if !ok {
		return Result{}, cmdErr(CodeNotFound, c.AllocID, "allocation %q does not exist", c.AllocID)
	}
	res := Result{ID: a.ID, Epoch: a.Epoch}
	if !a.Live() {
		res.Existing = true
		return res, nil
	}
	tx.stopAlloc(a, c.Reason, c.Message, true)
	return res, nil
}

func (tx *ledgerTx) renewAllocation(c RenewAllocation) (Result, *CommandError) {
	if err := firstErr(checkID("alloc_id", c.AllocID), tx.checkExpiry("lease_expiry", c.LeaseExpiry, true)); err != nil {
		return Result{}, err
	}
	a, ok := tx.alloc(c.AllocID)
	if !ok {
		return Result{}, cmdErr(CodeNotFound, c.AllocID, "allocation %q does not exist", c.AllocID)
	}
	if !a.Live() {
		return Result{}, cmdErr(CodeInvalidTransition, c.AllocID, "allocation %q is stopped (%s)", c.AllocID, a.StopReason)
	}
	lease := canon(c.LeaseExpiry)
	if lease.Equal(a.LeaseExpiry) {
		return Result{ID: a.ID, Epoch: a.Epoch, Existing: true}, nil
	}
	if !a.LeaseExpiry.IsZero() {
		del(tx, tx.t.expiry, expiryKey(a.LeaseExpiry, a.ID))
	}
	if !lease.IsZero() {
		set(tx, tx.t.expiry, expiryKey(lease, a.ID), struct{}{})
	}
	u := *a
	u.LeaseExpiry = lease
	tx.putAlloc(&u)
	return Result{ID: a.ID, Epoch: a.Epoch}, nil
}

func (tx *ledgerTx) setJobState(c SetJobState) (Result, *CommandError) {
	if err := firstErr(checkID("job_id", c.JobID), checkText("reason", c.Reason)); err != nil {
		return Result{}, err
	}
	if !c.State.valid() {
		return Result{}, invalid("state", "%s is not a job state", c.State)
	}
	j, ok := tx.job(c.JobID)
	if !ok {
		return Result{}, cmdErr(CodeNotFound, c.JobID, "job %q is not owned by region %q", c.JobID, tx.region)
	}
	res := Result{ID: j.ID, Epoch: j.Epoch}
	if j.State == c.State {
		if c.State == JobPending && c.Reason != j.Reason {
			// Why a job is still pending changes without a placement.
			u := *j
			u.Reason, u.Updated = c.Reason, tx.now
			tx.putJob(&u)
			return res, nil
		}
		res.Existing = true
		return res, nil
	}
	if j.State.Terminal() {
		return Result{}, cmdErr(CodeInvalidTransition, j.ID, "job %q is %s and cannot become %s", j.ID, j.State, c.State)
	}
	u := *j
	switch {
	case c.State == JobRunning:
		if j.AllocID == "" && j.Remote == nil {
			return Result{}, cmdErr(CodeInvalidTransition, j.ID, "job %q has no live placement to run on", j.ID)
		}
	case c.State.Terminal():
		if a, ok := tx.alloc(j.AllocID); ok && a.Live() {
			tx.stopAlloc(a, stopReasonFor(c.State), c.Reason, false)
		}
		u.AllocID = ""
	default:
		return Result{}, cmdErr(CodeInvalidTransition, j.ID, "job state %s is set by placement and trade commands, not SetJobState", c.State)
	}
	u.State, u.Reason, u.Updated = c.State, c.Reason, tx.now
	tx.putJob(&u)
	return res, nil
}

func stopReasonFor(s JobState) StopReason {
	switch s {
	case JobCompleted:
		return StopCompleted
	case JobFailed:
		return StopFailed
	}
	return StopCancelled
}

func (tx *ledgerTx) bumpEpoch(c BumpEpoch) (Result, *CommandError) {
	if err := firstErr(checkID("job_id", c.JobID), checkText("reason", c.Reason)); err != nil {
		return Result{}, err
	}
	j, err := tx.placeable(c.JobID, c.Epoch)
	if err != nil {
		return Result{}, err
	}
	if j.AllocID != "" || j.Remote != nil {
		return Result{}, cmdErr(CodeInvalidTransition, j.ID, "job %q still has a live placement under epoch %d; stop, replace or cancel it first", j.ID, j.Epoch)
	}
	u := *j
	u.Epoch, u.Reason, u.Updated = j.Epoch+1, c.Reason, tx.now
	tx.putJob(&u)
	return Result{ID: j.ID, Epoch: u.Epoch}, nil
}

// --- escrows ---

func checkItem(auctionID, itemID string) *CommandError {
	return firstErr(checkID("auction_id", auctionID), checkID("item_id", itemID))
}

func (tx *ledgerTx) holdEscrow(c HoldEscrow) (Result, *CommandError) {
	if err := firstErr(checkID("node_id", c.NodeID), checkItem(c.AuctionID, c.ItemID),
		checkID("buyer_region", c.BuyerRegion), checkResources("resources", c.Resources),
		tx.checkExpiry("expiry", c.Expiry, false), checkOptionalID("job_id", c.JobID),
		checkPrice("price_per_hour", c.PricePerHour), checkKindDuration(c.ItemKind, c.Duration)); err != nil {
		return Result{}, err
	}
	if c.Resources.IsZero() {
		return Result{}, invalid("resources", "must not be zero")
	}
	if err := firstErr(checkOptionalID("origin", c.Origin), checkPrice("max_price_per_hour", c.MaxPricePerHour)); err != nil {
		return Result{}, err
	}
	switch {
	case c.Priority < 0:
		return Result{}, invalid("priority", "%d is negative", c.Priority)
	case c.LatencySLO < 0:
		return Result{}, invalid("latency_slo", "%v is negative", c.LatencySLO)
	}
	if c.BuyerRegion == tx.region {
		return Result{}, invalid("buyer_region", "a region cannot sell to itself (%q)", c.BuyerRegion)
	}
	expiry := canon(c.Expiry)
	res := canonRes(c.Resources)
	if ref, ok := tx.t.items.get(key(c.AuctionID, c.ItemID)); ok {
		if ref.allocID != "" {
			return Result{}, cmdErr(CodeConflict, c.ItemID, "auction %q item %q was already converted into allocation %q", c.AuctionID, c.ItemID, ref.allocID)
		}
		e, _ := tx.t.escrows.get(ref.escrowID)
		if e != nil && e.NodeID == c.NodeID && e.Resources == res && e.BuyerRegion == c.BuyerRegion && e.Expiry.Equal(expiry) &&
			e.Kind == c.ItemKind && e.JobID == c.JobID && e.Duration == c.Duration && e.PricePerHour == c.PricePerHour &&
			e.Priority == c.Priority && e.Origin == c.Origin && e.LatencySLO == c.LatencySLO && e.MaxPricePerHour == c.MaxPricePerHour {
			return Result{ID: e.ID, Existing: true}, nil
		}
		return Result{}, cmdErr(CodeConflict, c.ItemID, "auction %q item %q already holds escrow %q with different terms", c.AuctionID, c.ItemID, ref.escrowID)
	}
	if len(c.Preempt) > 0 {
		if c.ItemKind == ItemLease {
			return Result{}, invalid("preempt", "a lease is not sold by preemption: it holds room whether used or not")
		}
		// Only lower priorities yield to another region's job: the room a
		// region sold is taken back for its own work, never for a third
		// region's.
		yields := func(_ *Allocation, p int) bool { return p < c.Priority }
		msg := fmt.Sprintf("preempted by region %s's job %s (priority %d)", c.BuyerRegion, cmp.Or(c.JobID, c.ItemID), c.Priority)
		if err := tx.preempt(c.NodeID, c.Preempt, res, yields, cmp.Or(c.JobID, c.ItemID), c.Priority, msg); err != nil {
			return Result{}, err
		}
	}
	n, err := tx.readyNode(c.NodeID, res)
	if err != nil {
		return Result{}, err
	}
	id, onNodeKey := tx.nextIDOn(n.ID, "e")
	e := &Escrow{ID: id, NodeID: n.ID, Resources: res, BuyerRegion: c.BuyerRegion,
		AuctionID: c.AuctionID, ItemID: c.ItemID, Created: tx.now, Expiry: expiry,
		Kind: c.ItemKind, JobID: c.JobID, Duration: c.Duration, PricePerHour: c.PricePerHour,
		Priority: c.Priority, Origin: c.Origin, LatencySLO: c.LatencySLO, MaxPricePerHour: c.MaxPricePerHour}
	set(tx, tx.t.escrows, e.ID, e)
	set(tx, tx.t.items, key(e.AuctionID, e.ItemID), itemRef{escrowID: e.ID})
	set(tx, tx.t.onNode, onNodeKey, struct{}{})
	set(tx, tx.t.expiry, expiryKey(e.Expiry, e.ID), struct{}{})
	tx.addUsed(n.ID, res)
	return Result{ID: e.ID}, nil
}

// releaseEscrow deletes a live escrow and frees its capacity.
func (tx *ledgerTx) releaseEscrow(e *Escrow) {
	del(tx, tx.t.escrows, e.ID)
	del(tx, tx.t.items, key(e.AuctionID, e.ItemID))
	del(tx, tx.t.onNode, key(e.NodeID, e.ID))
	del(tx, tx.t.expiry, expiryKey(e.Expiry, e.ID))
	tx.subUsed(e.NodeID, e.Resources)
}

func (tx *ledgerTx) releaseEscrowCmd(c ReleaseEscrow) (Result, *CommandError) {
	if err := firstErr(checkItem(c.AuctionID, c.ItemID), checkText("reason", c.Reason)); err != nil {
		return Result{}, err
	}
	ref, ok := tx.t.items.get(key(c.AuctionID, c.ItemID))
	if !ok || ref.escrowID == "" {
		return Result{Existing: true}, nil
	}
	e, ok := tx.t.escrows.get(ref.escrowID)
	if !ok {
		return Result{Existing: true}, nil
	}
	tx.releaseEscrow(e)
	return Result{ID: e.ID}, nil
}

func (tx *ledgerTx) convertEscrow(c ConvertEscrow) (Result, *CommandError) {
	if err := firstErr(checkItem(c.AuctionID, c.ItemID), checkOptionalID("job_id", c.JobID),
		checkID("job_region", c.JobRegion), tx.checkExpiry("lease_expiry", c.LeaseExpiry, true),
		checkPrice("price_per_hour", c.PricePerHour)); err != nil {
		return Result{}, err
	}
	if c.JobRegion == tx.region {
		return Result{}, invalid("job_region", "a region cannot buy from itself (%q)", c.JobRegion)
	}
	ref, ok := tx.t.items.get(key(c.AuctionID, c.ItemID))
	if !ok {
		return Result{}, cmdErr(CodeNotFound, c.ItemID, "no live escrow for auction %q item %q (never held, released or expired)", c.AuctionID, c.ItemID)
	}
	if ref.allocID != "" {
		a, _ := tx.alloc(ref.allocID)
		if a != nil && (c.JobID == "" || a.JobID == c.JobID) && a.JobRegion == c.JobRegion {
			if !a.Live() && a.StopReason == StopCancelled {
				return Result{}, cmdErr(CodeInvalidTransition, c.ItemID, "auction %q item %q was allocated, then cancelled (%s)", c.AuctionID, c.ItemID, a.StopMessage)
			}
			return Result{ID: a.ID, Epoch: a.Epoch, Existing: true}, nil
		}
		return Result{}, cmdErr(CodeConflict, c.ItemID, "auction %q item %q was converted for another job", c.AuctionID, c.ItemID)
	}
	e, ok := tx.t.escrows.get(ref.escrowID)
	if !ok {
		return Result{}, cmdErr(CodeNotFound, c.ItemID, "no live escrow for auction %q item %q", c.AuctionID, c.ItemID)
	}
	if e.BuyerRegion != c.JobRegion {
		return Result{}, cmdErr(CodeConflict, c.ItemID, "escrow %q is held for region %q, not %q", e.ID, e.BuyerRegion, c.JobRegion)
	}
	jobID := c.JobID
	switch {
	case jobID == "" && e.JobID == "":
		return Result{}, invalid("job_id", "must be set: escrow %q does not name the job", e.ID)
	case jobID == "":
		jobID = e.JobID
	case e.JobID != "" && e.JobID != jobID:
		return Result{}, cmdErr(CodeConflict, c.ItemID, "escrow %q is held for job %q, not %q", e.ID, e.JobID, jobID)
	}
	if err := tx.supersede(c.JobRegion, jobID, e.Kind, c.Epoch, c.AuctionID); err != nil {
		return Result{}, err
	}
	n, ok := tx.node(e.NodeID)
	if !ok {
		return Result{}, cmdErr(CodeNotFound, e.NodeID, "node %q of escrow %q is not registered", e.NodeID, e.ID)
	}
	if n.State == NodeDown {
		return Result{}, cmdErr(CodeNodeNotReady, n.ID, "node %q is down", n.ID)
	}
	lease := c.LeaseExpiry
	if lease.IsZero() && e.Kind == ItemLease && e.Duration > 0 {
		lease = tx.now.Add(e.Duration)
		if err := checkTimeRange("duration", lease); err != nil {
			return Result{}, err
		}
	}
	tx.releaseEscrow(e)
	n, _ = tx.node(e.NodeID)
	a, err := tx.createAlloc(n, c.JobRegion, jobID, e.Resources, c.Epoch, lease, c.AuctionID, c.ItemID)
	if err != nil {
		return Result{}, err
	}
	sold := a
	sold.Kind, sold.PricePerHour = e.Kind, c.PricePerHour
	sold.Priority, sold.Origin, sold.LatencySLO, sold.MaxPricePerHour = e.Priority, e.Origin, e.LatencySLO, e.MaxPricePerHour
	if sold.PricePerHour == 0 {
		sold.PricePerHour = e.PricePerHour
	}
	if e.Kind != ItemLease {
		sold.Duration = e.Duration
	}
	tx.putAlloc(&sold)
	set(tx, tx.t.items, key(c.AuctionID, c.ItemID), itemRef{allocID: a.ID})
	return Result{ID: a.ID, Epoch: a.Epoch}, nil
}

// --- trades and leases ---

func (tx *ledgerTx) recordAward(c RecordAward) (Result, *CommandError) {
	if err := firstErr(checkItem(c.AuctionID, c.ItemID), checkID("job_id", c.JobID),
		checkID("seller_region", c.SellerRegion), checkResources("resources", c.Resources),
		checkPrice("price_per_hour", c.PricePerHour), checkFinite("score", c.Score), checkKindDuration(c.ItemKind, c.Duration),
		checkOptionalID("node_id", c.NodeID), checkText("gpu_type", c.GPUType), checkChars("gpu_type", c.GPUType),
		checkOptionalTime("awarded_at", c.AwardedAt), checkOptionalID("lease_auction_id", c.LeaseAuctionID),
		checkOptionalID("lease_item_id", c.LeaseItemID)); err != nil {
		return Result{}, err
	}
	if c.SellerRegion == tx.region {
		return Result{}, invalid("seller_region", "a region cannot buy from itself (%q)", c.SellerRegion)
	}
	draw := c.LeaseAuctionID != ""
	switch {
	case draw != (c.LeaseItemID != ""):
		return Result{}, invalid("lease_item_id", "lease_auction_id and lease_item_id go together")
	case draw && c.ItemKind == ItemLease:
		return Result{}, invalid("lease_auction_id", "a lease cannot be drawn on a lease")
	case c.ItemKind == ItemLease && c.Duration <= 0:
		return Result{}, invalid("duration", "a lease needs a positive duration")
	}
	res := canonRes(c.Resources)
	if t, ok := tx.t.trades.get(key(c.AuctionID, c.ItemID)); ok {
		if t.JobID == c.JobID && t.SellerRegion == c.SellerRegion && t.Resources == res &&
			t.PricePerHour == c.PricePerHour && t.Score == c.Score && t.Epoch == c.Epoch && t.Kind == c.ItemKind && t.NodeID == c.NodeID &&
			t.Duration == c.Duration && t.LeaseAuctionID == c.LeaseAuctionID && t.LeaseItemID == c.LeaseItemID {
			return Result{ID: t.JobID, Epoch: t.Epoch, Existing: true}, nil
		}
		return Result{}, cmdErr(CodeConflict, c.ItemID, "auction %q item %q was awarded before with different terms", c.AuctionID, c.ItemID)
	}
	now := tx.now
	trade := &Trade{
		AuctionID: c.AuctionID, ItemID: c.ItemID, JobID: c.JobID, SellerRegion: c.SellerRegion,
		Resources: res, PricePerHour: c.PricePerHour, Score: c.Score, Epoch: c.Epoch, State: TradeAwarded,
		Created: now, Updated: now, Kind: c.ItemKind, NodeID: c.NodeID, GPUType: c.GPUType, Duration: c.Duration,
		AwardedAt: canon(c.AwardedAt), LeaseAuctionID: c.LeaseAuctionID, LeaseItemID: c.LeaseItemID,
	}
	if c.ItemKind == ItemLease {
		// A lease is capacity, not a job: no job moves.
		set(tx, tx.t.trades, key(c.AuctionID, c.ItemID), trade)
		return Result{ID: c.JobID, Epoch: c.Epoch}, nil
	}
	j, ok := tx.job(c.JobID)
	if !ok {
		return Result{}, cmdErr(CodeNotFound, c.JobID, "job %q is not owned by region %q", c.JobID, tx.region)
	}
	if j.State.Terminal() {
		return Result{}, cmdErr(CodeInvalidTransition, j.ID, "job %q is %s", j.ID, j.State)
	}
	if err := placedErr(j); err != nil {
		return Result{}, err
	}
	if c.Epoch != j.Epoch {
		return Result{}, cmdErr(CodeStaleEpoch, j.ID, "job %q is at epoch %d, the award is for epoch %d", j.ID, j.Epoch, c.Epoch)
	}
	if draw {
		ls, ok := tx.boughtLease(c.LeaseAuctionID, c.LeaseItemID)
		switch {
		case !ok:
			return Result{}, cmdErr(CodeNotFound, c.LeaseItemID, "region %q holds no lease bought in auction %q item %q", tx.region, c.LeaseAuctionID, c.LeaseItemID)
		case ls.PeerRegion != c.SellerRegion:
			return Result{}, cmdErr(CodeConflict, c.LeaseItemID, "lease %q was bought from %q, not %q", ls.ID, ls.PeerRegion, c.SellerRegion)
		case !ls.End.After(now):
			return Result{}, cmdErr(CodeExpired, ls.ID, "lease %q ended at %s", ls.ID, ls.End.Format(time.RFC3339Nano))
		case !ls.Used.Add(res).FitsIn(ls.Resources):
			return Result{}, cmdErr(CodeOvercommit, ls.ID, "lease %q has %s unused, %s asked", ls.ID, fmtRes(clampFree(ls.Resources.Sub(ls.Used))), fmtRes(res))
		}
		u := *ls
		u.Used = u.Used.Add(res)
		set(tx, tx.t.leases, u.ID, &u)
	}
	set(tx, tx.t.trades, key(c.AuctionID, c.ItemID), trade)
	u := *j
	u.State, u.Reason, u.Updated = JobTraded, "", now
	u.Remote = &RemotePlacement{Region: c.SellerRegion, AuctionID: c.AuctionID, ItemID: c.ItemID}
	u.Attempts++
	tx.putJob(&u)
	return Result{ID: j.ID, Epoch: j.Epoch}, nil
}

var tradeTransitions = map[TradeState][]TradeState{
	TradeAwarded:   {TradeAcked, TradeInDoubt, TradeCancelled, TradeFailed, TradeAbandoned},
	TradeInDoubt:   {TradeAcked, TradeCancelled, TradeFailed, TradeAbandoned},
	TradeAcked:     {TradeCancelled, TradeFailed, TradeAbandoned},
	TradeFailed:    {TradeSettled},
	TradeAbandoned: {TradeSettled},
}

func (tx *ledgerTx) setTradeState(c SetTradeState) (Result, *CommandError) {
	if err := firstErr(checkItem(c.AuctionID, c.ItemID), checkText("reason", c.Reason), checkText("seller_alloc_id", c.SellerAllocID)); err != nil {
		return Result{}, err
	}
	if c.State < TradeAwarded || c.State > TradeSettled {
		return Result{}, invalid("state", "%s is not a trade state SetTradeState sets", c.State)
	}
	t, ok := tx.t.trades.get(key(c.AuctionID, c.ItemID))
	if !ok {
		return Result{}, cmdErr(CodeNotFound, c.ItemID, "no trade for auction %q item %q", c.AuctionID, c.ItemID)
	}
	j := tx.jobUnder(t)
	res := Result{ID: t.JobID, Epoch: tx.jobEpoch(t)}
	if t.State == c.State || (t.State == TradeEnded && c.State == TradeAcked) {
		// Acking a trade whose allocation already ran and ended is late
		// news, not a conflict.
		res.Existing = true
		return res, nil
	}
	allowed := false
	for _, s := range tradeTransitions[t.State] {
		allowed = allowed || s == c.State
	}
	if !allowed {
		if c.State == TradeAcked && (t.State == TradeFailed || t.State == TradeAbandoned || t.State == TradeSettled) {
			return Result{}, cmdErr(CodeStaleEpoch, c.ItemID, "trade of auction %q item %q is %s: the job was placed again meanwhile", c.AuctionID, c.ItemID, t.State)
		}
		return Result{}, cmdErr(CodeInvalidTransition, c.ItemID, "trade of auction %q item %q is %s and cannot become %s", c.AuctionID, c.ItemID, t.State, c.State)
	}
	if c.State == TradeAcked && t.Kind != ItemLease && (j == nil || j.Epoch != t.Epoch) {
		return Result{}, cmdErr(CodeStaleEpoch, c.ItemID, "job %q no longer runs under auction %q item %q (epoch %d)", t.JobID, c.AuctionID, c.ItemID, t.Epoch)
	}
	now := tx.now
	u := *t
	u.State, u.Reason, u.Updated = c.State, c.Reason, now
	if c.State == TradeAcked && c.SellerAllocID != "" {
		u.SellerAllocID = c.SellerAllocID
	}
	set(tx, tx.t.trades, key(c.AuctionID, c.ItemID), &u)
	why := "trade of auction " + t.AuctionID + " item " + t.ItemID + " " + c.State.String()
	if c.Reason != "" {
		why += ": " + c.Reason
	}
	switch c.State {
	case TradeAcked:
		if t.Kind == ItemLease {
			tx.openBoughtLease(&u)
		}
	case TradeCancelled:
		tx.tradeGone(t, j, false, why)
	case TradeFailed, TradeAbandoned:
		tx.tradeGone(t, j, true, why)
	}
	res.Epoch = tx.jobEpoch(t)
	return res, nil
}

func (tx *ledgerTx) addLease(c AddLease) (Result, *CommandError) {
	ls := c.Lease
	if err := firstErr(checkID("lease.id", ls.ID), checkID("lease.peer_region", ls.PeerRegion),
		checkResources("lease.resources", ls.Resources), checkPrice("lease.price_per_hour", ls.PricePerHour),
		checkTimeRange("lease.start", ls.Start), checkTimeRange("lease.end", ls.End),
		checkText("lease.auction_id", ls.AuctionID), checkText("lease.item_id", ls.ItemID)); err != nil {
		return Result{}, err
	}
	if ls.Direction != LeaseBought && ls.Direction != LeaseSold {
		return Result{}, invalid("lease.direction", "%s is not bought or sold", ls.Direction)
	}
	if !ls.End.After(ls.Start) {
		return Result{}, invalid("lease.end", "must be after lease.start")
	}
	if ls.PeerRegion == tx.region {
		return Result{}, invalid("lease.peer_region", "a region cannot lease from itself (%q)", ls.PeerRegion)
	}
	ls.Start, ls.End, ls.Resources, ls.Added = canon(ls.Start), canon(ls.End), canonRes(ls.Resources), tx.now
	if old, ok := tx.t.leases.get(ls.ID); ok {
		cmp := *old
		cmp.Added = ls.Added
		if cmp == ls {
			return Result{ID: ls.ID, Existing: true}, nil
		}
		return Result{}, cmdErr(CodeConflict, ls.ID, "lease %q was added before with different terms", ls.ID)
	}
	set(tx, tx.t.leases, ls.ID, &ls)
	return Result{ID: ls.ID}, nil
}

func (tx *ledgerTx) removeLease(c RemoveLease) (Result, *CommandError) {
	if err := checkID("id", c.ID); err != nil {
		return Result{}, err
	}
	if !del(tx, tx.t.leases, c.ID) {
		return Result{ID: c.ID, Existing: true}, nil
	}
	return Result{ID: c.ID}, nil
}

func (tx *ledgerTx) prune(c Prune) (Result, *CommandError) {
	if err := checkTimeRange("before", c.Before); err != nil {
		return Result{}, err
	}
	if c.Before.After(tx.now) {
		return Result{}, invalid("before", "%s is after the command time %s", c.Before.Format(time.RFC3339Nano), tx.now.Format(time.RFC3339Nano))
	}
	var (
		jobs, allocs, trades, leases, items []string
		goneJobs                            = map[string]bool{}
	)
	tx.t.jobs.each(func(id string, j *Job) bool {
		if j.State.Terminal() && j.Updated.Before(c.Before) {
			jobs = append(jobs, id)
			goneJobs[id] = true
		}
		return true
	})
	before := stampOf(c.Before)
	tx.t.allocs.each(func(id string, a *allocRecord) bool {
		if !a.live() && a.stopped.before(before) {
			allocs = append(allocs, id)
			if a.terms != nil && a.terms.auctionID != "" {
				items = append(items, key(a.terms.auctionID, a.terms.itemID))
			}
		}
		return true
	})
	tx.t.trades.each(func(k string, t *Trade) bool {
		if !t.Updated.Before(c.Before) {
			return true
		}
		j, ok := tx.t.jobs.get(t.JobID)
		closed := t.State == TradeCancelled || t.State == TradeFailed || t.State == TradeSettled || t.State == TradeEnded
		if closed || (t.Kind != ItemLease && (!ok || goneJobs[t.JobID] || (t.State == TradeAcked && j.State.Terminal()))) {
			trades = append(trades, k)
		}
		return true
	})
	tx.t.leases.each(func(id string, ls *Lease) bool {
		if ls.End.Before(c.Before) {
			leases = append(leases, id)
		}
		return true
	})
	for _, k := range items {
		del(tx, tx.t.items, k)
	}
	pruned := 0
	for _, k := range jobs {
		if del(tx, tx.t.jobs, k) {
			pruned++
		}
		del(tx, tx.t.pending, k)
	}
	for _, k := range allocs {
		if del(tx, tx.t.allocs, k) {
			pruned++
		}
	}
	for _, k := range trades {
		if del(tx, tx.t.trades, k) {
			pruned++
		}
	}
	for _, k := range leases {
		if del(tx, tx.t.leases, k) {
			pruned++
		}
	}
	return Result{Pruned: pruned}, nil
}

// Bounds of a job's task, so one command cannot bloat every replica.
const (
	maxTaskArgs   = 256
	maxTaskEnv    = 128
	maxTaskArgLen = 4096
)

func checkTask(t *TaskSpec) *CommandError {
	if t == nil {
		return nil
	}
	switch t.Driver {
	case "", "sim":
		if len(t.Command) > 0 {
			return invalid("task.command", "is only used by the exec driver")
		}
	case "exec":
		if len(t.Command) == 0 {
			return invalid("task.command", "must not be empty with the exec driver")
		}
	default:
		return invalid("task.driver", "%q is not a driver (want sim or exec)", t.Driver)
	}
	if len(t.Command) > maxTaskArgs {
		return invalid("task.command", "has %d arguments, at most %d are allowed", len(t.Command), maxTaskArgs)
	}
	for i, a := range t.Command {
		if len(a) > maxTaskArgLen || !utf8.ValidString(a) {
			return invalid(fmt.Sprintf("task.command[%d]", i), "must be valid UTF-8 of at most %d bytes", maxTaskArgLen)
		}
	}
	if len(t.Env) > maxTaskEnv {
		return invalid("task.env", "has %d variables, at most %d are allowed", len(t.Env), maxTaskEnv)
	}
	for k, v := range t.Env {
		if k == "" || len(k)+len(v) > maxTaskArgLen || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return invalid("task.env", "variable %q must be a non-empty valid UTF-8 name and value of at most %d bytes", k, maxTaskArgLen)
		}
	}
	return nil
}

// --- the market: sold leases, draws, reports (see docs/market.md) ---

// maxItemDuration bounds how long a traded job or lease may run, so that
// start plus duration stays a valid time.
const maxItemDuration = 10 * 365 * 24 * time.Hour

func checkOptionalID(field, s string) *CommandError {
	if s == "" {
		return nil
	}
	return checkID(field, s)
}

func checkOptionalTime(field string, t time.Time) *CommandError {
	if t.IsZero() {
		return nil
	}
	return checkTimeRange(field, t)
}

func checkKindDuration(k ItemKind, d time.Duration) *CommandError {
	if !k.valid() {
		return invalid("kind", "%d is not an item kind (1 job, 2 lease)", uint8(k))
	}
	if d < 0 || d > maxItemDuration {
		return invalid("duration", "must be between 0 and %v, got %v", maxItemDuration, d)
	}
	return nil
}

// supersede makes room for a placement of another region's job under
// epoch: a live allocation of the job made under an older epoch is stale
// (the buyer abandoned that trade and placed the job again) and is stopped
// as cancelled; one under the same or a newer epoch is a double
// allocation.
func (tx *ledgerTx) supersede(jobRegion, jobID string, kind ItemKind, epoch uint64, by string) *CommandError {
	old, ok := tx.alloc(liveAllocID(tx.t, tx.region, jobRegion, jobID))
	if !ok || !old.Live() {
		return nil
	}
	if old.Kind == ItemLease || kind == ItemLease {
		// Leases have no epochs: a live one is never stale.
		return cmdErr(CodeDoubleAllocation, jobID, "region %q already holds live %s %q here as allocation %q", jobRegion, old.Kind, jobID, old.ID)
	}
	if old.Epoch >= epoch {
		return cmdErr(CodeDoubleAllocation, jobID, "job %q of region %q already has live allocation %q here under epoch %d (this one is for epoch %d)",
			jobID, jobRegion, old.ID, old.Epoch, epoch)
	}
	tx.stopAlloc(old, StopCancelled, fmt.Sprintf("superseded by epoch %d (auction %s)", epoch, by), false)
	return nil
}

// stopDraws stops the live jobs drawn on a lease allocation.
func (tx *ledgerTx) stopDraws(lease *Allocation, reason StopReason) {
	var draws []*Allocation
	p := key(lease.NodeID, "")
	tx.t.onNode.prefix(p, func(k string, _ struct{}) bool {
		if d, ok := tx.t.allocs.get(k[len(p):]); ok && d.inLease() == lease.ID && d.live() {
			a := d.alloc()
			draws = append(draws, &a)
		}
		return true
	})
	for _, d := range draws {
		tx.stopAlloc(d, reason, "lease "+lease.ID+" "+reason.String(), true)
	}
}

// hasDraws reports whether a lease allocation has live draws left.
func (tx *ledgerTx) hasDraws(lease *Allocation) bool {
	found := false
	p := key(lease.NodeID, "")
	tx.t.onNode.prefix(p, func(k string, _ struct{}) bool {
		if d, ok := tx.t.allocs.get(k[len(p):]); ok && d.inLease() == lease.ID {
			found = true
			return false
		}
		return true
	})
	return found
}

// returnToLease gives a stopped draw's resources back to its lease (the
// draw's node entry is already gone).
func (tx *ledgerTx) returnToLease(draw *Allocation) {
	la, ok := tx.alloc(draw.InLease)
	if !ok || !la.Live() {
		return
	}
	u := *la
	if tx.hasDraws(la) {
		u.LeaseUsed = clampFree(u.LeaseUsed.Sub(draw.Resources))
	} else {
		// Reset exactly, so that rounding cannot accumulate.
		u.LeaseUsed = placement.Resources{}
	}
	tx.putAlloc(&u)
}

func (tx *ledgerTx) drawLease(c DrawLease) (Result, *CommandError) {
	if err := firstErr(checkItem(c.AuctionID, c.ItemID), checkID("lease_auction_id", c.LeaseAuctionID),
		checkID("lease_item_id", c.LeaseItemID), checkID("job_region", c.JobRegion), checkID("job_id", c.JobID),
		checkResources("resources", c.Resources), checkPrice("price_per_hour", c.PricePerHour),
		checkKindDuration(ItemJob, c.Duration)); err != nil {
		return Result{}, err
	}
	if c.JobRegion == tx.region {
		return Result{}, invalid("job_region", "a region cannot buy from itself (%q)", c.JobRegion)
	}
	if c.Resources.IsZero() {
		return Result{}, invalid("resources", "must not be zero")
	}
	if ref, ok := tx.t.items.get(key(c.AuctionID, c.ItemID)); ok {
		if a, _ := tx.alloc(ref.allocID); a != nil && a.JobID == c.JobID && a.JobRegion == c.JobRegion && a.InLease != "" {
			if !a.Live() && a.StopReason == StopCancelled {
				return Result{}, cmdErr(CodeInvalidTransition, c.ItemID, "draw %q item %q was allocated, then cancelled (%s)", c.AuctionID, c.ItemID, a.StopMessage)
			}
			return Result{ID: a.ID, Epoch: a.Epoch, Existing: true}, nil
		}
		return Result{}, cmdErr(CodeConflict, c.ItemID, "auction %q item %q is already used by another trade", c.AuctionID, c.ItemID)
	}
	lease, err := tx.soldLease(c)
	if err != nil {
		return Result{}, err
	}
	if err := tx.supersede(c.JobRegion, c.JobID, ItemJob, c.Epoch, c.AuctionID); err != nil {
		return Result{}, err
	}
	// Superseding may have stopped a draw on this very lease.
	lease, _ = tx.alloc(lease.ID)
	if !lease.Live() {
		return Result{}, cmdErr(CodeNotFound, c.LeaseItemID, "lease %q has ended", lease.ID)
	}
	res := canonRes(c.Resources)
	if !lease.LeaseUsed.Add(res).FitsIn(lease.Resources) {
		return Result{}, cmdErr(CodeOvercommit, lease.ID, "lease %q has %s unused, %s asked", lease.ID,
			fmtRes(clampFree(lease.Resources.Sub(lease.LeaseUsed))), fmtRes(res))
	}
	if n, ok := tx.node(lease.NodeID); !ok || n.State == NodeDown {
		return Result{}, cmdErr(CodeNodeNotReady, lease.NodeID, "node %q of lease %q is down or gone", lease.NodeID, lease.ID)
	}
	id, onNodeKey := tx.nextIDOn(lease.NodeID, "a")
	a := &Allocation{
		ID: id, JobID: c.JobID, JobRegion: c.JobRegion, NodeID: lease.NodeID, Resources: res,
		Epoch: c.Epoch, Start: tx.now, State: AllocLive, AuctionID: c.AuctionID, ItemID: c.ItemID,
		Kind: ItemJob, PricePerHour: c.PricePerHour, InLease: lease.ID, Duration: c.Duration,
	}
	tx.putAlloc(a)
	set(tx, tx.t.live, liveKey(a.JobID, a.JobRegion), a.ID)
	set(tx, tx.t.onNode, onNodeKey, struct{}{})
	set(tx, tx.t.items, key(c.AuctionID, c.ItemID), itemRef{allocID: a.ID})
	u := *lease
	u.LeaseUsed = u.LeaseUsed.Add(res)
	tx.putAlloc(&u)
	return Result{ID: a.ID, Epoch: a.Epoch}, nil
}

// soldLease returns the live lease allocation a draw names, sold to the
// draw's buyer.
func (tx *ledgerTx) soldLease(c DrawLease) (*Allocation, *CommandError) {
	ref, ok := tx.t.items.get(key(c.LeaseAuctionID, c.LeaseItemID))
	var la *Allocation
	if ok && ref.allocID != "" {
		la, _ = tx.alloc(ref.allocID)
	}
	switch {
	case la == nil || la.Kind != ItemLease:
		return nil, cmdErr(CodeNotFound, c.LeaseItemID, "no lease was sold in auction %q item %q", c.LeaseAuctionID, c.LeaseItemID)
	case la.JobRegion != c.JobRegion:
		return nil, cmdErr(CodeNotFound, c.LeaseItemID, "lease %q was sold to region %q, not %q", la.ID, la.JobRegion, c.JobRegion)
	case !la.Live():
		return nil, cmdErr(CodeNotFound, c.LeaseItemID, "lease %q has ended (%s)", la.ID, la.StopReason)
	}
	return la, nil
}

// jobUnder returns the job that runs under trade t (the job's remote
// placement is t), or nil.
func (tx *ledgerTx) jobUnder(t *Trade) *Job {
	if t.Kind == ItemLease {
		return nil
	}
	j, ok := tx.job(t.JobID)
	if !ok || j.Remote == nil || j.Remote.AuctionID != t.AuctionID || j.Remote.ItemID != t.ItemID {
		return nil
	}
	return j
}

// jobEpoch is the current epoch of the job a trade is about (the trade's own
// epoch for a lease or a job the ledger no longer holds).
func (tx *ledgerTx) jobEpoch(t *Trade) uint64 {
	if t.Kind != ItemLease {
		if j, ok := tx.job(t.JobID); ok {
			return j.Epoch
		}
	}
	return t.Epoch
}

// tradeGone undoes what a trade placed, once it is void: a job that runs
// under it goes back to pending (under a new epoch when bump, so the old
// placement is recognisably stale), a draw's resources go back to its
// lease, a lost lease is closed.
func (tx *ledgerTx) tradeGone(t *Trade, j *Job, bump bool, why string) {
	if t.Kind == ItemLease {
		if ls, ok := tx.boughtLease(t.AuctionID, t.ItemID); ok {
			del(tx, tx.t.leases, ls.ID)
		}
		return
	}
	if t.Draw() {
		if ls, ok := tx.boughtLease(t.LeaseAuctionID, t.LeaseItemID); ok {
			u := *ls
			u.Used = clampFree(u.Used.Sub(t.Resources))
			set(tx, tx.t.leases, u.ID, &u)
		}
	}
	if j == nil {
		return
	}
	u := *j
	u.Remote, u.Updated = nil, tx.now
	if !u.State.Terminal() {
		u.State, u.Reason = JobPending, why
		if bump && u.Epoch == t.Epoch {
			u.Epoch++
		}
	}
	tx.putJob(&u)
}

// boughtLease returns the lease this region bought in an auction item.
func (tx *ledgerTx) boughtLease(auctionID, itemID string) (*Lease, bool) {
	var found *Lease
	tx.t.leases.each(func(_ string, ls *Lease) bool {
		if ls.Direction == LeaseBought && ls.AuctionID == auctionID && ls.ItemID == itemID {
			found = ls
			return false
		}
		return true
	})
	return found, found != nil
}

// openBoughtLease records an acknowledged lease trade as a bought lease,
// open for draws until the award time plus its duration (the seller's
// lease starts later, when it converts its escrow, so this end is
// conservative).
func (tx *ledgerTx) openBoughtLease(t *Trade) {
	if _, ok := tx.boughtLease(t.AuctionID, t.ItemID); ok {
		return
	}
	start := t.AwardedAt
	if start.IsZero() {
		start = t.Created
	}
	ls := &Lease{
		ID: tx.nextID("l"), Direction: LeaseBought, PeerRegion: t.SellerRegion, Resources: t.Resources,
		Start: start, End: start.Add(t.Duration), PricePerHour: t.PricePerHour, AuctionID: t.AuctionID,
		ItemID: t.ItemID, Added: tx.now, NodeID: t.NodeID, GPUType: t.GPUType,
	}
	set(tx, tx.t.leases, ls.ID, ls)
}

func (tx *ledgerTx) endTrade(c EndTrade) (Result, *CommandError) {
	if err := firstErr(checkItem(c.AuctionID, c.ItemID), checkText("message", c.Message)); err != nil {
		return Result{}, err
	}
	if c.Outcome < StopCompleted || c.Outcome > StopPreempted {
		return Result{}, invalid("outcome", "%s is not a stop reason", c.Outcome)
	}
	t, ok := tx.t.trades.get(key(c.AuctionID, c.ItemID))
	if !ok {
		return Result{}, cmdErr(CodeNotFound, c.ItemID, "no trade for auction %q item %q", c.AuctionID, c.ItemID)
	}
	res := Result{ID: t.JobID, Epoch: tx.jobEpoch(t)}
	if c.Epoch != t.Epoch || !(t.State == TradeAwarded || t.State == TradeInDoubt || t.State == TradeAcked) {
		// Ended already, or void: the report changes nothing.
		res.Existing = true
		return res, nil
	}
	u := *t
	u.State, u.EndReason, u.Reason, u.Updated = TradeEnded, c.Outcome, c.Message, tx.now
	set(tx, tx.t.trades, key(c.AuctionID, c.ItemID), &u)
	j := tx.jobUnder(t)
	if c.Outcome == StopCompleted && j != nil && j.Epoch == t.Epoch && !j.State.Terminal() {
		// The work is done; the job keeps its remote placement as history.
		uj := *j
		uj.State, uj.Reason, uj.Updated = JobCompleted, c.Message, tx.now
		tx.putJob(&uj)
		if t.Draw() {
			tx.tradeGone(t, nil, false, "")
		}
	} else {
		why := fmt.Sprintf("allocation in region %s %s", t.SellerRegion, c.Outcome)
		if c.Message != "" {
			why += ": " + c.Message
		}
		if j != nil && j.Epoch != t.Epoch {
			j = nil
		}
		tx.tradeGone(t, j, true, why)
	}
	res.Epoch = tx.jobEpoch(t)
	return res, nil
}

func (tx *ledgerTx) markReported(c MarkReported) (Result, *CommandError) {
	if err := checkID("alloc_id", c.AllocID); err != nil {
		return Result{}, err
	}
	a, ok := tx.alloc(c.AllocID)
	if !ok {
		return Result{}, cmdErr(CodeNotFound, c.AllocID, "allocation %q does not exist", c.AllocID)
	}
	if a.Live() || !a.Sold() {
		return Result{}, cmdErr(CodeInvalidTransition, c.AllocID, "allocation %q is live or not sold to another region", c.AllocID)
	}
	res := Result{ID: a.ID, Epoch: a.Epoch}
	if a.Reported {
		res.Existing = true
		return res, nil
	}
	u := *a
	u.Reported = true
	tx.putAlloc(&u)
	return res, nil
}
