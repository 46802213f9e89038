package node

import (
	"reflect"
	"testing"

	"github.com/meridian-mesh/meridian/placement"
)

func compute(c float64) placement.Resources { return placement.Resources{ComputePerHour: c} }

func TestPlanPreemptions(t *testing.T) {
	node := func(id string, free float64) placement.Node {
		return placement.Node{ID: id, Total: compute(100), Free: compute(free)}
	}
	run := func(alloc, node string, prio int, c float64) preemptible {
		return preemptible{allocID: alloc, nodeID: node, priority: prio, resources: compute(c)}
	}
	job := func(id string, prio int, c float64) placement.Job {
		return placement.Job{ID: id, Priority: prio, Demand: compute(c)}
	}
	any := func(placement.Job, placement.Node) bool { return true }
	victims := func(ps []preemption) map[string][]string {
		out := map[string][]string{}
		for _, p := range ps {
			out[p.job.ID] = append([]string{p.nodeID}, p.victims...)
		}
		return out
	}
	cases := []struct {
		name    string
		jobs    []placement.Job
		nodes   []placement.Node
		running []preemptible
		fits    func(placement.Job, placement.Node) bool
		want    map[string][]string
	}{{
		name:    "the smallest single victim that frees enough",
		jobs:    []placement.Job{job("j", 2, 30)},
		nodes:   []placement.Node{node("n1", 10)},
		running: []preemptible{run("a-big", "n1", 1, 60), run("a-fit", "n1", 1, 25), run("a-small", "n1", 1, 5)},
		want:    map[string][]string{"j": {"n1", "a-fit"}},
	}, {
		name:    "never a victim of equal or higher priority",
		jobs:    []placement.Job{job("j", 2, 30)},
		nodes:   []placement.Node{node("n1", 10)},
		running: []preemptible{run("a-peer", "n1", 2, 60), run("a-boss", "n1", 3, 60)},
		want:    map[string][]string{},
	}, {
		name:  "room lent to another region is taken back at the same priority, after lower priorities",
		jobs:  []placement.Job{job("j", 2, 30), job("k", 2, 30)},
		nodes: []placement.Node{node("n1", 0), node("n2", 0)},
		running: []preemptible{
			{allocID: "a-lent", nodeID: "n1", priority: 2, resources: compute(40), lent: true},
			run("a-own-peer", "n2", 2, 40),
			run("a-batch", "n2", 1, 40),
		},
		want: map[string][]string{"j": {"n2", "a-batch"}, "k": {"n1", "a-lent"}},
	}, {
		name:    "several victims when no single one suffices, largest first",
		jobs:    []placement.Job{job("j", 2, 50)},
		nodes:   []placement.Node{node("n1", 0)},
		running: []preemptible{run("a-1", "n1", 1, 20), run("a-2", "n1", 1, 30), run("a-3", "n1", 1, 10), run("a-4", "n1", 1, 40)},
		want:    map[string][]string{"j": {"n1", "a-4", "a-2"}},
	}, {
		name:  "the node whose victims matter least, then the least stopped",
		jobs:  []placement.Job{job("j", 3, 40)},
		nodes: []placement.Node{node("n1", 0), node("n2", 0), node("n3", 0)},
		running: []preemptible{
			run("a-n1", "n1", 2, 40),                             // priority 2
			run("a-n2", "n2", 1, 60),                             // priority 1, 60 stopped
			run("a-n3a", "n3", 1, 20), run("a-n3b", "n3", 1, 20), // priority 1, 40 stopped
		},
		want: map[string][]string{"j": {"n3", "a-n3a", "a-n3b"}},
	}, {
		name:    "the placement's filters have the last word",
		jobs:    []placement.Job{job("j", 2, 30)},
		nodes:   []placement.Node{node("n1", 0), node("n2", 0)},
		running: []preemptible{run("a-1", "n1", 1, 30), run("a-2", "n2", 1, 50)},
		fits:    func(_ placement.Job, n placement.Node) bool { return n.ID != "n1" },
		want:    map[string][]string{"j": {"n2", "a-2"}},
	}, {
		name:    "a job that fits needs no preemption",
		jobs:    []placement.Job{job("j", 2, 30)},
		nodes:   []placement.Node{node("n1", 40)},
		running: []preemptible{run("a-1", "n1", 1, 30)},
		want:    map[string][]string{},
	}, {
		name:    "higher priority first; a victim is stopped for one job only",
		jobs:    []placement.Job{job("low", 2, 30), job("high", 3, 30)},
		nodes:   []placement.Node{node("n1", 0)},
		running: []preemptible{run("a-1", "n1", 1, 35), run("a-2", "n1", 1, 50)},
		want:    map[string][]string{"high": {"n1", "a-1"}, "low": {"n1", "a-2"}},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fits := c.fits
			if fits == nil {
				fits = any
			}
			got := victims(planPreemptions(c.jobs, c.nodes, c.running, fits))
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}
