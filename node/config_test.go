package node

import (
	"math"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/placement"
)

func TestConfigErrorsNameTheField(t *testing.T) {
	ok := Config{Name: "n1", Region: "r", DataDir: "/tmp/x", Network: TCPNetwork(TCPConfig{})}
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Name = "" }, `"name"`},
		{func(c *Config) { c.Region = "" }, `"region"`},
		{func(c *Config) { c.DataDir = "" }, `"data_dir"`},
		{func(c *Config) { c.Network = nil }, `"network"`},
		{func(c *Config) { c.BootstrapExpect = -1 }, `"bootstrap_expect"`},
		{func(c *Config) { c.BootstrapExpect = 1 }, `only applies to servers`},
		{func(c *Config) { c.Server, c.BootstrapExpect = true, 5 }, `exceeds max_voters 3`},
		{func(c *Config) { c.MaxVoters = 4 }, `"max_voters"`},
		{func(c *Config) { c.PricePerHour = -1 }, `"price_per_hour"`},
		{func(c *Config) { c.Resources = placement.Resources{ComputePerHour: -3} }, `resources`},
		{func(c *Config) { c.Tuning.OffloadMargin = math.NaN() }, `"tuning.offload_margin"`},
		{func(c *Config) { c.Tuning.LocalReserve = math.NaN() }, `"tuning.local_reserve"`},
		{func(c *Config) { c.Tuning.LocalReserve = 1 }, `"tuning.local_reserve"`},
		{func(c *Config) { c.Tuning.LocalReserve = math.Inf(-1) }, `"tuning.local_reserve"`},
	} {
		c := ok
		tc.mut(&c)
		err := c.validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("validate() = %v, want an error naming %s", err, tc.want)
		}
	}
	c := ok
	if err := c.validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	if c.MaxVoters != 3 || c.Tuning.PlaceInterval == 0 || c.Tuning.OffloadMargin != 0 || c.Tuning.WorkWait == 0 || c.Logger == nil {
		t.Errorf("defaults not filled: %+v", c)
	}
}

func TestExitCodeSurvivesTheLedger(t *testing.T) {
	code := 3
	msg := taskReport{ExitCode: &code, Reason: "exited"}.message()
	if got := exitCodeOf(msg); got == nil || *got != 3 {
		t.Fatalf("exitCodeOf(%q) = %v, want 3", msg, got)
	}
	if exitCodeOf("lease expired") != nil {
		t.Error("an exit code was read from a message without one")
	}
}
