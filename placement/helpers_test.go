package placement

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// This file holds the generators shared by the property tests and the
// benchmarks. Everything is drawn from a seeded source, so a failure
// replays from the seed it reports.

var testRegions = []string{"us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1", "ap-northeast-1", "sa-east-1", "af-south-1"}

// testRTT returns a region matrix with a few RTTs missing, so the
// "no RTT estimate" path is exercised too.
func testRTT(r *rand.Rand) *RTTMatrix {
	m := NewRTTMatrix()
	for i, a := range testRegions {
		mustSet(m, a, a, time.Duration(1+r.IntN(4))*time.Millisecond)
		for _, b := range testRegions[i+1:] {
			if r.IntN(10) == 0 {
				continue // unknown pair
			}
			d := time.Duration(10+r.IntN(300)) * time.Millisecond
			mustSet(m, a, b, d)
			mustSet(m, b, a, d+time.Duration(r.IntN(5))*time.Millisecond)
		}
	}
	return m
}

func mustSet(m *RTTMatrix, a, b string, d time.Duration) {
	if err := m.Set(a, b, d); err != nil {
		panic(err) // generator bug, not input
	}
}

// genOpts shapes a random cluster.
type genOpts struct {
	// quantized draws capacities and prices from a few round values, so that
	// equal scores, and thus tie-breaks, are common.
	quantized bool
	// partlyUsed makes free smaller than total on some nodes.
	partlyUsed bool
}

func randomNodes(r *rand.Rand, n int, o genOpts) []Node {
	gpuTypes := []string{"", "", "A100", "H100"}
	nodes := make([]Node, n)
	for i := range nodes {
		var total Resources
		var price float64
		if o.quantized {
			total = Resources{
				ComputePerHour: float64(50 * (1 + r.IntN(8))),
				StorageGB:      float64(100 * (1 + r.IntN(5))),
				BandwidthGBps:  float64(1 + r.IntN(10)),
			}
			price = float64(100 * (1 + r.IntN(10)))
		} else {
			total = Resources{
				ComputePerHour: 20 + r.Float64()*400,
				StorageGB:      50 + r.Float64()*500,
				BandwidthGBps:  0.5 + r.Float64()*10,
			}
			price = 50 + r.Float64()*1000
		}
		g := gpuTypes[r.IntN(len(gpuTypes))]
		if g != "" {
			total.GPUs = 1 + r.IntN(8)
		}
		free := total
		if o.partlyUsed && r.IntN(3) == 0 {
			free.ComputePerHour *= r.Float64()
			free.StorageGB *= r.Float64()
			free.GPUs = r.IntN(total.GPUs + 1)
		}
		nodes[i] = Node{
			ID:           fmt.Sprintf("n%05d", i),
			Region:       testRegions[r.IntN(len(testRegions))],
			Total:        total,
			Free:         free,
			PricePerHour: price,
			GPUType:      g,
		}
	}
	return nodes
}

func randomJobs(r *rand.Rand, n int, o genOpts) []Job {
	jobs := make([]Job, n)
	for i := range jobs {
		j := Job{
			ID:           fmt.Sprintf("j%05d", i),
			OriginRegion: testRegions[r.IntN(len(testRegions))],
			Priority:     r.IntN(3),
			Duration:     time.Duration(1+r.IntN(24)) * time.Hour,
		}
		if o.quantized {
			j.Demand = Resources{
				ComputePerHour: float64(10 * (1 + r.IntN(20))),
				StorageGB:      float64(10 * r.IntN(10)),
				BandwidthGBps:  0.5 * float64(r.IntN(4)),
			}
		} else {
			j.Demand = Resources{
				ComputePerHour: 1 + r.Float64()*40,
				StorageGB:      r.Float64() * 40,
				BandwidthGBps:  r.Float64(),
			}
		}
		switch r.IntN(4) {
		case 0:
			j.GPUType = []string{"A100", "H100"}[r.IntN(2)]
			j.Demand.GPUs = 1 + r.IntN(2)
		case 1:
			j.Demand.GPUs = r.IntN(2) // any GPU type, or none
		}
		if r.IntN(2) == 0 {
			j.LatencySLO = time.Duration(30+r.IntN(250)) * time.Millisecond
		}
		if r.IntN(3) == 0 {
			j.MaxPricePerHour = 200 + r.Float64()*800
		}
		jobs[i] = j
	}
	return jobs
}

func newTestPipeline(t testing.TB, cfg Config) *Pipeline {
	t.Helper()
	p, err := NewPipeline(cfg)
	if err != nil {
		t.Fatalf("NewPipeline(%+v): %v", cfg, err)
	}
	return p
}

func computeJob(id string, d float64) Job {
	return Job{ID: id, Demand: Resources{ComputePerHour: d}}
}

func node(id string, c, s, b, price float64) Node {
	r := Resources{ComputePerHour: c, StorageGB: s, BandwidthGBps: b}
	return Node{ID: id, Total: r, Free: r, PricePerHour: price}
}

func rankedIDs(d Decision) []string {
	ids := make([]string, len(d.Ranked()))
	for i, c := range d.Ranked() {
		ids[i] = c.NodeID
	}
	return ids
}

// permutations returns every ordering of nodes (for small slices).
func permutations(nodes []Node) [][]Node {
	if len(nodes) <= 1 {
		return [][]Node{append([]Node(nil), nodes...)}
	}
	var out [][]Node
	for i := range nodes {
		rest := make([]Node, 0, len(nodes)-1)
		rest = append(rest, nodes[:i]...)
		rest = append(rest, nodes[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]Node{nodes[i]}, p...))
		}
	}
	return out
}
