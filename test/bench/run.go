package bench

import (
	"context"
	"fmt"
	"time"
)

// Baselines returns the three baseline schedulers in report order.
func Baselines() []Scheduler {
	return []Scheduler{LocalOnly(), NearestFirst(), CentralCheapest()}
}

// RunAll runs each scheduler on jobs in turn, timing each with the wall
// clock (meaningless inside a synctest bubble, where it is virtual).
func RunAll(ctx context.Context, w *World, jobs []Job, schedulers []Scheduler) ([]Ran, error) {
	var out []Ran
	for _, s := range schedulers {
		start := time.Now()
		o, err := s.Run(ctx, w, jobs)
		if err != nil {
			return nil, fmt.Errorf("scheduler %s: %w", s.Name(), err)
		}
		out = append(out, Ran{Name: s.Name(), Outcome: o, Wall: time.Since(start)})
	}
	return out, nil
}
