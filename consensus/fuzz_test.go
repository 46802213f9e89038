package consensus

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/vmihailenco/msgpack/v5"
)

// seedEntries are valid log entries that reach most of Apply; the fuzzers
// mutate them.
func seedEntries(t testing.TB) [][]byte {
	mk := func(cmds ...Command) []byte {
		envs := make([]Envelope, len(cmds))
		for i, c := range cmds {
			env, err := EncodeCommand(c)
			if err != nil {
				t.Fatal(err)
			}
			env.Now = t0.Add(time.Duration(i) * time.Second)
			envs[i] = env
		}
		data, err := encodeEntry(envs)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	return [][]byte{
		mk(gpuNode("n1"), SubmitJob{Job: job("j1", 10, 1)}, PlaceJob{JobID: "j1", NodeID: "n1"}),
		mk(HoldEscrow{NodeID: "n1", Resources: res(5, 0, 0, 0), BuyerRegion: "us-east-1", AuctionID: "a", ItemID: "i", Expiry: t0.Add(time.Minute)},
			ConvertEscrow{AuctionID: "a", ItemID: "i", JobID: "rj", JobRegion: "us-east-1", Epoch: 1}),
		mk(RecordAward{AuctionID: "a", ItemID: "i", JobID: "j1", SellerRegion: "us-east-1", Resources: res(1, 0, 0, 0), Epoch: 1},
			SetTradeState{AuctionID: "a", ItemID: "i", State: TradeCancelled}),
		mk(AddLease{Lease: Lease{ID: "l", Direction: LeaseBought, PeerRegion: "p", Start: t0, End: t0.Add(time.Hour)}}, Expire{}, Prune{Before: t0}),
		mk(StopAllocation{AllocID: "a-1", Reason: StopFailed}, SetJobState{JobID: "j1", State: JobCancelled}, RemoveNode{ID: "n1"}),
	}
}

// fuzzFSM returns a state machine with some state for Apply to act on.
func fuzzFSM(t testing.TB) *FSM {
	f := NewFSM("eu-west-1")
	for i, data := range seedEntries(t)[:2] {
		f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data})
	}
	return f
}

func FuzzDecodeCommand(f *testing.F) {
	for _, s := range seedEntries(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		envs, err := decodeEntry(data)
		if err == nil {
			for _, env := range envs {
				if _, err := DecodeCommand(env); err == nil {
					continue
				}
			}
		}
		if len(data) > 0 {
			// The same bytes as the body of every kind.
			for k := Kind(0); k <= maxKind+1; k++ {
				DecodeCommand(Envelope{Version: CommandVersion, Kind: k, Body: data[1:]})
			}
		}
	})
}

func FuzzApply(f *testing.F) {
	for _, s := range seedEntries(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := fuzzFSM(t)
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		out := fsm.Apply(&raft.Log{Index: 10, Type: raft.LogCommand, Data: data})
		runtime.ReadMemStats(&m1)
		// Lengths in hostile bytes must not size allocations.
		if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 16<<20+512*uint64(len(data)) {
			t.Fatalf("Apply of %d bytes allocated %d MiB", len(data), alloc>>20)
		}
		if _, ok := out.(*EntryResult); !ok {
			t.Fatalf("Apply returned %T", out)
		}
		checkInvariants(t, fsm.Ledger(), 0)
	})
}

func FuzzReadSnapshot(f *testing.F) {
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, fuzzFSM(f).Ledger()); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		if l, err := ReadSnapshot(bytes.NewReader(data)); err == nil {
			checkInvariants(t, l, 0)
		}
	})
}

// FuzzCheckStructure checks the structure scanner against the msgpack
// decoder: what the scanner accepts, the decoder can skip, to the byte.
func FuzzCheckStructure(f *testing.F) {
	for _, s := range seedEntries(f) {
		f.Add(s)
	}
	f.Add([]byte{0x91, 0xc0})
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		if checkStructure(data) != nil {
			return
		}
		r := bytes.NewReader(data)
		if err := msgpack.NewDecoder(r).Skip(); err != nil {
			t.Fatalf("scanner accepted %x, decoder's Skip failed: %v", data, err)
		}
		if r.Len() != 0 {
			t.Fatalf("scanner accepted %x whole, decoder's Skip left %d bytes", data, r.Len())
		}
	})
}

func FuzzRPCMessages(f *testing.F) {
	req, _ := encodeRequest(rpcRequest{Op: opPropose, Region: "r", From: "n", Timeout: time.Second, Payload: seedEntries(f)[0]})
	f.Add(req)
	results, _ := encodeResults([]Result{{Index: 3, ID: "a-1", Epoch: 2, Expired: []string{"e-1"}},
		{Err: cmdErr(CodeOvercommit, "n1", "full")}})
	resp, _ := encodeResponse(rpcResponse{Payload: results})
	f.Add(resp)
	f.Add(results)
	f.Fuzz(func(t *testing.T, data []byte) {
		decodeRequest(data)
		decodeResponse(data)
		decodeResults(data)
	})
}

// TestWriteFuzzCorpus writes the seeds to testdata/fuzz when
// MERIDIAN_WRITE_FUZZ_CORPUS is set (run it after changing the formats).
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("MERIDIAN_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set MERIDIAN_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz")
	}
	write := func(target string, seeds [][]byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	seeds := seedEntries(t)
	write("FuzzDecodeCommand", seeds)
	write("FuzzApply", seeds)
	write("FuzzCheckStructure", append(seeds, []byte{0x91, 0xc0}, []byte{0xdd, 0xff, 0xff, 0xff, 0xff}))
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, fuzzFSM(t).Ledger()); err != nil {
		t.Fatal(err)
	}
	write("FuzzReadSnapshot", [][]byte{buf.Bytes()})
	req, _ := encodeRequest(rpcRequest{Op: opPropose, Region: "r", From: "n", Timeout: time.Second, Payload: seeds[0]})
	results, _ := encodeResults([]Result{{Index: 3, ID: "a-1", Expired: []string{"e-1"}}, {Err: cmdErr(CodeOvercommit, "n1", "full")}})
	resp, _ := encodeResponse(rpcResponse{Payload: results})
	write("FuzzRPCMessages", [][]byte{req, resp, results})
}
