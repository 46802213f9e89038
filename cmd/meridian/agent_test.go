package main

import (
	"testing"
	"time"
)

// TestAgentPolicyReachesTuning checks that the scheduling-policy flags and
// keys land in node.Tuning, and that leaving them out takes node's defaults.
func TestAgentPolicyReachesTuning(t *testing.T) {
	c := defaultAgentConfig()
	c.Region, c.Name, c.DataDir = "us-east-1", "n1", t.TempDir()
	c.LocalReserve, c.OffloadMargin, c.LeaseReach, c.NoPreempt = -1, 0.2, "250ms", true
	cfg, err := agentNodeConfig(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tu := cfg.Tuning; tu.LocalReserve != -1 || tu.OffloadMargin != 0.2 || tu.LeaseReach != 250*time.Millisecond || !tu.NoPreempt {
		t.Fatalf("Tuning = %+v; want local reserve -1, offload margin 0.2, lease reach 250ms, no preemption", tu)
	}
	c.LocalReserve, c.OffloadMargin, c.LeaseReach, c.NoPreempt = 0, 0, "", false
	if cfg, err = agentNodeConfig(c, nil); err != nil {
		t.Fatal(err)
	}
	if tu := cfg.Tuning; tu.LocalReserve != 0 || tu.OffloadMargin != 0 || tu.LeaseReach != 0 || tu.NoPreempt {
		t.Fatalf("Tuning = %+v; want zeros, for node's defaults", tu)
	}
}
