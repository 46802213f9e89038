package placement

import (
	"reflect"
	"testing"
)

func TestPlanPreemptions(t *testing.T) {
	node := func(id string, free float64) Node {
		return Node{ID: id, Total: cpu(100), Free: cpu(free)}
	}
	run := func(alloc, node string, prio int, c float64) Preemptible {
		return Preemptible{AllocID: alloc, NodeID: node, Priority: prio, Resources: cpu(c)}
	}
	job := func(id string, prio int, c float64) Job {
		return Job{ID: id, Priority: prio, Demand: cpu(c)}
	}
	any := func(Job, Node) bool { return true }
	victims := func(ps []Preemption) map[string][]string {
		out := map[string][]string{}
		for _, p := range ps {
			out[p.Job.ID] = append([]string{p.NodeID}, p.Victims...)
		}
		return out
	}
	cases := []struct {
		name    string
		jobs    []Job
		nodes   []Node
		running []Preemptible
		fits    func(Job, Node) bool
		want    map[string][]string
	}{{
		name:    "the smallest single victim that frees enough",
		jobs:    []Job{job("j", 2, 30)},
		nodes:   []Node{node("n1", 10)},
		running: []Preemptible{run("a-big", "n1", 1, 60), run("a-fit", "n1", 1, 25), run("a-small", "n1", 1, 5)},
		want:    map[string][]string{"j": {"n1", "a-fit"}},
	}, {
		name:    "never a victim of equal or higher priority",
		jobs:    []Job{job("j", 2, 30)},
		nodes:   []Node{node("n1", 10)},
		running: []Preemptible{run("a-peer", "n1", 2, 60), run("a-boss", "n1", 3, 60)},
		want:    map[string][]string{},
	}, {
		name:  "room lent to another region is taken back at the same priority, after lower priorities",
		jobs:  []Job{job("j", 2, 30), job("k", 2, 30)},
		nodes: []Node{node("n1", 0), node("n2", 0)},
		running: []Preemptible{
			{AllocID: "a-lent", NodeID: "n1", Priority: 2, Resources: cpu(40), Lent: true},
			run("a-own-peer", "n2", 2, 40),
			run("a-batch", "n2", 1, 40),
		},
		want: map[string][]string{"j": {"n2", "a-batch"}, "k": {"n1", "a-lent"}},
	}, {
		name:    "several victims when no single one suffices, largest first",
		jobs:    []Job{job("j", 2, 50)},
		nodes:   []Node{node("n1", 0)},
		running: []Preemptible{run("a-1", "n1", 1, 20), run("a-2", "n1", 1, 30), run("a-3", "n1", 1, 10), run("a-4", "n1", 1, 40)},
		want:    map[string][]string{"j": {"n1", "a-4", "a-2"}},
	}, {
		name:  "the node whose victims matter least, then the least stopped",
		jobs:  []Job{job("j", 3, 40)},
		nodes: []Node{node("n1", 0), node("n2", 0), node("n3", 0)},
		running: []Preemptible{
			run("a-n1", "n1", 2, 40),                             // priority 2
			run("a-n2", "n2", 1, 60),                             // priority 1, 60 stopped
			run("a-n3a", "n3", 1, 20), run("a-n3b", "n3", 1, 20), // priority 1, 40 stopped
		},
		want: map[string][]string{"j": {"n3", "a-n3a", "a-n3b"}},
	}, {
		name:    "the placement's filters have the last word",
		jobs:    []Job{job("j", 2, 30)},
		nodes:   []Node{node("n1", 0), node("n2", 0)},
		running: []Preemptible{run("a-1", "n1", 1, 30), run("a-2", "n2", 1, 50)},
		fits:    func(_ Job, n Node) bool { return n.ID != "n1" },
		want:    map[string][]string{"j": {"n2", "a-2"}},
	}, {
		name:    "a job that fits needs no Preemption",
		jobs:    []Job{job("j", 2, 30)},
		nodes:   []Node{node("n1", 40)},
		running: []Preemptible{run("a-1", "n1", 1, 30)},
		want:    map[string][]string{},
	}, {
		name:    "higher priority first; a victim is stopped for one job only",
		jobs:    []Job{job("low", 2, 30), job("high", 3, 30)},
		nodes:   []Node{node("n1", 0)},
		running: []Preemptible{run("a-1", "n1", 1, 35), run("a-2", "n1", 1, 50)},
		want:    map[string][]string{"high": {"n1", "a-1"}, "low": {"n1", "a-2"}},
	}, {
		name:    "no more victims than the limit",
		jobs:    []Job{job("j", 2, 90)},
		nodes:   []Node{node("n1", 0)},
		running: []Preemptible{run("a-1", "n1", 1, 10), run("a-2", "n1", 1, 10), run("a-3", "n1", 1, 10), run("a-4", "n1", 1, 10), run("a-5", "n1", 1, 10), run("a-6", "n1", 1, 10), run("a-7", "n1", 1, 10), run("a-8", "n1", 1, 10), run("a-9", "n1", 1, 10)},
		want:    map[string][]string{},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fits := c.fits
			if fits == nil {
				fits = any
			}
			got := victims(PlanPreemptions(c.jobs, c.nodes, c.running, 8, fits))
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

func cpu(c float64) Resources { return Resources{ComputePerHour: c} }
