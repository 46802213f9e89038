package chaos

import (
	"fmt"
	"slices"
	"time"

	"github.com/meridian-mesh/meridian/gossip"
)

// GossipView is what one agent's gossip says about the mesh at one instant.
type GossipView struct {
	// Node is the agent whose view this is.
	Node string
	// Members maps every member the agent knows to its state.
	Members map[string]gossip.MemberState
	// Versions maps every capacity record the agent holds to its version.
	Versions map[string]uint64
}

// ViewOf reads an agent's gossip view.
func ViewOf(node string, g *gossip.Agent) GossipView {
	v := GossipView{Node: node, Members: map[string]gossip.MemberState{}, Versions: map[string]uint64{}}
	for _, m := range g.Members() {
		v.Members[m.Name] = m.State
	}
	for _, r := range g.Records() {
		v.Versions[r.Node] = r.Version
	}
	return v
}

// Converged reports whether the views of the running nodes have converged
// (checker 4), in two senses:
//
//   - members: every running node sees every other running node alive;
//   - records: every running node holds every running node's capacity
//     record at least at the version that node itself had when the mesh
//     healed (baseline: node → its own record's version then). This proves
//     that what a node said before or during the fault reached everyone; it
//     does not ask the views to be equal at one instant, which a mesh under
//     load never is.
//
// The reasons say what is missing, for the report.
func Converged(views []GossipView, running []string, baseline map[string]uint64) (members, records bool, reasons []string) {
	members, records = true, true
	have := map[string]bool{}
	for _, v := range views {
		have[v.Node] = true
	}
	for _, n := range running {
		if !have[n] {
			members = false
			reasons = append(reasons, fmt.Sprintf("no view from running node %s", n))
		}
	}
	for _, v := range views {
		if !slices.Contains(running, v.Node) {
			continue
		}
		for _, n := range running {
			if n == v.Node {
				continue
			}
			st, ok := v.Members[n]
			if !ok {
				members = false
				reasons = append(reasons, fmt.Sprintf("%s does not know %s", v.Node, n))
			} else if st != gossip.StateAlive {
				members = false
				reasons = append(reasons, fmt.Sprintf("%s sees %s %s", v.Node, n, st))
			}
			if want, ok := baseline[n]; ok && v.Versions[n] < want {
				records = false
				reasons = append(reasons, fmt.Sprintf("%s holds %s's record at version %d, older than its version %d at heal", v.Node, n, v.Versions[n], want))
			}
		}
	}
	slices.Sort(reasons)
	return members, records, reasons
}

// Convergence is one measurement of checker 4: from a moment the mesh was
// whole again to the moments every view had converged.
type Convergence struct {
	// Healed is when the last fault was undone.
	Healed time.Time `json:"healed"`
	// Converged is when every node was first seen to see every other alive
	// (zero if never); RecordsConverged when every node first held every
	// record at least as new as at the heal.
	Converged        time.Time `json:"converged,omitzero"`
	RecordsConverged time.Time `json:"records_converged,omitzero"`
	// Interrupted is set when a new fault began before convergence: the
	// measurement does not count.
	Interrupted bool `json:"interrupted,omitempty"`
	// Final marks the measurement after the end-of-run heal, which must
	// converge.
	Final bool `json:"final,omitempty"`
	// Missing is what was still missing at the last look, when it did not
	// converge.
	Missing []string `json:"missing,omitempty"`
}

// Seconds returns the time the members took to converge, or -1 if they
// did not.
func (c Convergence) Seconds() float64 {
	if c.Converged.IsZero() {
		return -1
	}
	return c.Converged.Sub(c.Healed).Seconds()
}

// RecordSeconds returns the time the capacity records took to converge, or
// -1 if they did not.
func (c Convergence) RecordSeconds() float64 {
	if c.RecordsConverged.IsZero() {
		return -1
	}
	return c.RecordsConverged.Sub(c.Healed).Seconds()
}

// ConvergeVerdict judges the measurements of a run: every measurement that
// completed, and the final one, which must complete, saw the members
// converge within bound. It returns the worst membership time in seconds
// (-1 if the final measurement never converged), the worst record time
// (-1 if the records of a measurement whose members converged never did
// within the run; reported, not judged), and the violations.
func ConvergeVerdict(ms []Convergence, bound time.Duration) (worst, worstRecords float64, bad []string) {
	sawFinal := false
	for _, m := range ms {
		if m.Final {
			sawFinal = true
		}
		if m.Interrupted && m.Converged.IsZero() {
			continue
		}
		s := m.Seconds()
		if s < 0 {
			if m.Final {
				worst = -1
				bad = append(bad, fmt.Sprintf("gossip views did not converge after the final heal at %s: %v", m.Healed.Format("15:04:05"), m.Missing))
			}
			continue
		}
		if worst >= 0 && s > worst {
			worst = s
		}
		if time.Duration(s*float64(time.Second)) > bound {
			bad = append(bad, fmt.Sprintf("gossip views took %.1fs to converge after the heal at %s, more than the bound %v", s, m.Healed.Format("15:04:05"), bound))
		}
		switch r := m.RecordSeconds(); {
		case r < 0 && !m.Interrupted:
			worstRecords = -1
		case worstRecords >= 0 && r > worstRecords:
			worstRecords = r
		}
	}
	if !sawFinal {
		bad = append(bad, "no convergence measured after the final heal")
	}
	return worst, worstRecords, bad
}
