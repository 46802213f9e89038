package chaos

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/gossip"
)

func view(node string, members map[string]gossip.MemberState, versions map[string]uint64) GossipView {
	return GossipView{Node: node, Members: members, Versions: versions}
}

func TestConverged(t *testing.T) {
	alive := gossip.StateAlive
	running := []string{"a", "b", "c"}
	base := map[string]uint64{"a": 5, "b": 7, "c": 1}
	good := []GossipView{
		view("a", map[string]gossip.MemberState{"a": alive, "b": alive, "c": alive}, map[string]uint64{"a": 5, "b": 7, "c": 2}),
		view("b", map[string]gossip.MemberState{"a": alive, "b": alive, "c": alive, "d": gossip.StateFailed}, map[string]uint64{"a": 6, "b": 7, "c": 1}),
		view("c", map[string]gossip.MemberState{"a": alive, "b": alive, "c": alive}, map[string]uint64{"a": 5, "b": 7, "c": 1}),
	}
	if m, r, why := Converged(good, running, base); !m || !r {
		t.Fatalf("converged views: %v", why)
	}
	cases := []struct {
		name             string
		mut              func(vs []GossipView) []GossipView
		members, records bool
		want             string
	}{
		{"a member still suspect", func(vs []GossipView) []GossipView {
			vs[0].Members["b"] = gossip.StateSuspect
			return vs
		}, false, true, "a sees b suspect"},
		{"a member still failed", func(vs []GossipView) []GossipView {
			vs[2].Members["a"] = gossip.StateFailed
			return vs
		}, false, true, "c sees a failed"},
		{"a member unknown", func(vs []GossipView) []GossipView {
			delete(vs[1].Members, "c")
			return vs
		}, false, true, "b does not know c"},
		{"an old record", func(vs []GossipView) []GossipView {
			vs[2].Versions["b"] = 6
			return vs
		}, true, false, "c holds b's record at version 6"},
		{"a missing view", func(vs []GossipView) []GossipView { return vs[:2] }, false, true, "no view from running node c"},
	}
	for _, c := range cases {
		vs := make([]GossipView, len(good))
		for i, v := range good {
			vs[i] = view(v.Node, clone(v.Members), clone(v.Versions))
		}
		m, r, why := Converged(c.mut(vs), running, base)
		if m != c.members || r != c.records || !strings.Contains(strings.Join(why, "; "), c.want) {
			t.Errorf("%s: Converged = %v, %v, %v; want %v, %v and a reason %q", c.name, m, r, why, c.members, c.records, c.want)
		}
	}
}

func clone[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestConvergeVerdict(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	bound := time.Minute
	ms := []Convergence{
		{Healed: at(0), Converged: at(12), RecordsConverged: at(80)},
		{Healed: at(100), Interrupted: true},
		{Healed: at(150), Converged: at(160), Interrupted: true}, // records cut short by a fault
		{Healed: at(200), Converged: at(230), RecordsConverged: at(240), Final: true},
	}
	worst, records, bad := ConvergeVerdict(ms, bound)
	if worst != 30 || records != 80 || len(bad) > 0 {
		t.Errorf("ConvergeVerdict = %v, %v, %v; want 30, 80, none", worst, records, bad)
	}
	slow := append([]Convergence{{Healed: at(0), Converged: at(75)}}, ms...)
	if worst, records, bad := ConvergeVerdict(slow, bound); worst != 75 || records != -1 || len(bad) != 1 || !strings.Contains(bad[0], "75.0s") {
		t.Errorf("slow: %v, %v, %v", worst, records, bad)
	}
	never := []Convergence{{Healed: at(0), Converged: at(3)}, {Healed: at(200), Final: true, Missing: []string{"a sees b failed"}}}
	if worst, _, bad := ConvergeVerdict(never, bound); worst != -1 || len(bad) != 1 || !strings.Contains(bad[0], "a sees b failed") {
		t.Errorf("never: %v, %v", worst, bad)
	}
	if _, _, bad := ConvergeVerdict(ms[:2], bound); len(bad) != 1 || !strings.Contains(bad[0], "final") {
		t.Errorf("no final measurement: %v", bad)
	}
}
