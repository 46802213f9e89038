package api

import (
	"errors"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/meridian-mesh/meridian/placement"
)

// Task drivers.
const (
	// DriverSim runs an allocation as a simulated task for its duration.
	DriverSim = "sim"
	// DriverExec runs the job's command as a child process on the chosen node.
	DriverExec = "exec"
)

// Limits on a JobSpec. Values beyond them are refused as absurd: no real job
// asks for them, and letting them through would only hide a unit mistake.
const (
	MaxIDLen          = 128         // job IDs: [A-Za-z0-9._-]{1,128}
	MaxRegionLen      = 64          // region names: [A-Za-z0-9._-]{1,64}
	MaxGPUTypeLen     = 64          // GPU types: [A-Za-z0-9._-]{1,64}
	MaxComputePerHour = 1e9         // demand.compute, tasks per hour
	MaxStorageGB      = 1e8         // demand.storage_gb (100 PB)
	MaxBandwidthGBps  = 1e4         // demand.bandwidth_gbs
	MaxGPUs           = 4096        // demand.gpus
	MaxLatencySLOMs   = 10000       // latency_slo_ms
	MaxPricePerHour   = 1e6         // max_price_per_hour, US dollars
	MinPriority       = 1           // priority, when set
	MaxPriority       = 100         // priority
	DefaultPriority   = 50          // priority when 0 (unset)
	MaxDurationS      = 30 * 86400  // duration_s: 30 days
	MaxCommandArgs    = 256         // len(command)
	MaxArgLen         = 4096        // bytes per command element
	MaxEnvVars        = 128         // len(env)
	MaxEnvNameLen     = 128         // bytes per env name
	MaxEnvValueLen    = 4096        // bytes per env value
	ReservedEnvPrefix = "MERIDIAN_" // env names the runner sets itself
)

// JobSpec is a job as a client submits it (POST /v1/jobs). The zero values of
// the optional fields are the defaults; Normalized applies them.
type JobSpec struct {
	// ID is the client's idempotency key: submitting the same spec twice
	// creates one job. Required; [A-Za-z0-9._-]{1,128}.
	ID string `json:"id"`
	// OriginRegion is where the job's users are; latency is measured from it.
	// Required.
	OriginRegion string `json:"origin_region"`
	// HomeRegion is the region whose ledger owns the job; defaults to
	// OriginRegion.
	HomeRegion string `json:"home_region,omitempty"`
	// Demand is what the job needs; demand.compute (tasks per hour) must be
	// greater than zero.
	Demand placement.Resources `json:"demand"`
	// LatencySLOMs is the highest RTT from the origin region the job
	// tolerates, in milliseconds; 0 means unbounded.
	LatencySLOMs int64 `json:"latency_slo_ms,omitempty"`
	// MaxPricePerHour is the most the job pays for a node, in US dollars per
	// hour; 0 means no limit.
	MaxPricePerHour float64 `json:"max_price_per_hour,omitempty"`
	// Priority orders jobs competing for capacity, 1 to 100, higher first;
	// 0 means DefaultPriority.
	Priority int `json:"priority,omitempty"`
	// DurationS is how long the job runs, in seconds; 0 means until
	// cancelled.
	DurationS int64 `json:"duration_s,omitempty"`
	// GPUType restricts the job to nodes with this accelerator model; it
	// needs demand.gpus ≥ 1.
	GPUType string `json:"gpu_type,omitempty"`
	// Driver is DriverSim (the default) or DriverExec.
	Driver string `json:"driver,omitempty"`
	// Command is the program and its arguments; required with DriverExec and
	// refused with DriverSim.
	Command []string `json:"command,omitempty"`
	// Env is extra environment for an exec task; names must not start with
	// ReservedEnvPrefix.
	Env map[string]string `json:"env,omitempty"`
}

// Validate checks every field of s and returns a *FieldError naming the
// first field at fault, in the order of the JSON document.
func (s JobSpec) Validate() error {
	if err := validName("id", s.ID, MaxIDLen); err != nil {
		return err
	}
	if err := validName("origin_region", s.OriginRegion, MaxRegionLen); err != nil {
		return err
	}
	if s.HomeRegion != "" {
		if err := validName("home_region", s.HomeRegion, MaxRegionLen); err != nil {
			return err
		}
	}
	if err := validDemand(s.Demand); err != nil {
		return err
	}
	if s.LatencySLOMs < 0 || s.LatencySLOMs > MaxLatencySLOMs {
		return fieldErr("latency_slo_ms", "must be between 0 (unbounded) and %d, got %d", MaxLatencySLOMs, s.LatencySLOMs)
	}
	if err := validNumber("max_price_per_hour", s.MaxPricePerHour, MaxPricePerHour); err != nil {
		return err
	}
	if s.Priority != 0 && (s.Priority < MinPriority || s.Priority > MaxPriority) {
		return fieldErr("priority", "must be between %d and %d (0 means the default, %d), got %d", MinPriority, MaxPriority, DefaultPriority, s.Priority)
	}
	if s.DurationS < 0 || s.DurationS > MaxDurationS {
		return fieldErr("duration_s", "must be between 0 (until cancelled) and %d (30 days), got %d", MaxDurationS, s.DurationS)
	}
	if s.GPUType != "" {
		if err := validName("gpu_type", s.GPUType, MaxGPUTypeLen); err != nil {
			return err
		}
		if s.Demand.GPUs < 1 {
			return fieldErr("gpu_type", "needs demand.gpus of at least 1")
		}
	}
	switch s.Driver {
	case "", DriverSim:
		if len(s.Command) > 0 {
			return fieldErr("command", "is only allowed with driver %q", DriverExec)
		}
		if len(s.Env) > 0 {
			return fieldErr("env", "is only allowed with driver %q", DriverExec)
		}
		return nil
	case DriverExec:
		if err := validCommand(s.Command); err != nil {
			return err
		}
		return validEnv(s.Env)
	default:
		return fieldErr("driver", "must be %q or %q, got %q", DriverSim, DriverExec, s.Driver)
	}
}

// Normalized returns s with its defaults applied: the home region is the
// origin region, the driver sim and the priority DefaultPriority when unset;
// an empty command or env becomes nil. Two specs are the same job when their
// normalized forms are Equal.
func (s JobSpec) Normalized() JobSpec {
	if s.HomeRegion == "" {
		s.HomeRegion = s.OriginRegion
	}
	if s.Driver == "" {
		s.Driver = DriverSim
	}
	if s.Priority == 0 {
		s.Priority = DefaultPriority
	}
	if len(s.Command) == 0 {
		s.Command = nil
	} else {
		s.Command = slices.Clone(s.Command)
	}
	if len(s.Env) == 0 {
		s.Env = nil
	} else {
		s.Env = maps.Clone(s.Env)
	}
	return s
}

// Equal reports whether s and o describe the same job once normalized. A
// Service uses it to tell an idempotent retry (same ID, same spec: 200) from
// a conflict (same ID, different spec: ErrConflict).
func (s JobSpec) Equal(o JobSpec) bool {
	a, b := s.Normalized(), o.Normalized()
	return a.ID == b.ID && a.OriginRegion == b.OriginRegion && a.HomeRegion == b.HomeRegion &&
		a.Demand == b.Demand && a.LatencySLOMs == b.LatencySLOMs &&
		a.MaxPricePerHour == b.MaxPricePerHour && a.Priority == b.Priority &&
		a.DurationS == b.DurationS && a.GPUType == b.GPUType && a.Driver == b.Driver &&
		slices.Equal(a.Command, b.Command) && maps.Equal(a.Env, b.Env)
}

// Duration is the job's run time; zero means until cancelled.
func (s JobSpec) Duration() time.Duration { return time.Duration(s.DurationS) * time.Second }

// PlacementJob validates s and converts it, with its defaults, to the job
// placement ranks nodes for. Errors are *FieldError naming the JSON field.
func (s JobSpec) PlacementJob() (placement.Job, error) {
	if err := s.Validate(); err != nil {
		return placement.Job{}, err
	}
	n := s.Normalized()
	j := placement.Job{
		ID:              n.ID,
		OriginRegion:    n.OriginRegion,
		Demand:          n.Demand,
		LatencySLO:      time.Duration(n.LatencySLOMs) * time.Millisecond,
		MaxPricePerHour: n.MaxPricePerHour,
		Priority:        n.Priority,
		Duration:        n.Duration(),
		GPUType:         n.GPUType,
	}
	if err := j.Validate(); err != nil {
		// Validate above is stricter than placement's own checks, so this is
		// a broken invariant; still report it against the wire field.
		var fe *placement.FieldError
		if errors.As(err, &fe) {
			return placement.Job{}, &FieldError{Field: wireField(fe.Field), Message: fe.Reason}
		}
		return placement.Job{}, &FieldError{Message: err.Error()}
	}
	return j, nil
}

// wireField maps a placement.Job field name to the JobSpec JSON field.
func wireField(f string) string {
	switch f {
	case "latency_slo":
		return "latency_slo_ms"
	case "duration":
		return "duration_s"
	}
	return f
}

// validName checks an identifier: 1 to max characters of [A-Za-z0-9._-].
func validName(field, v string, max int) error {
	if v == "" {
		return fieldErr(field, "is required")
	}
	if len(v) > max {
		return fieldErr(field, "must be at most %d characters, got %d", max, len(v))
	}
	if !isName(v) {
		return fieldErr(field, "must contain only letters, digits, '.', '_' and '-', got %q", v)
	}
	if v == "." || v == ".." {
		return fieldErr(field, "must not be %q", v)
	}
	return nil
}

// ValidID reports whether id is a well-formed job ID.
func ValidID(id string) bool { return validName("id", id, MaxIDLen) == nil }

func isName(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validNumber(field string, v, max float64) error {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fieldErr(field, "must be a finite number, got %v", v)
	case v < 0:
		return fieldErr(field, "must not be negative, got %v", v)
	case v > max:
		return fieldErr(field, "must be at most %g, got %g", max, v)
	}
	return nil
}

func validDemand(d placement.Resources) error {
	if err := validNumber("demand.compute", d.ComputePerHour, MaxComputePerHour); err != nil {
		return err
	}
	if d.ComputePerHour == 0 {
		return fieldErr("demand.compute", "must be greater than zero")
	}
	if err := validNumber("demand.storage_gb", d.StorageGB, MaxStorageGB); err != nil {
		return err
	}
	if err := validNumber("demand.bandwidth_gbs", d.BandwidthGBps, MaxBandwidthGBps); err != nil {
		return err
	}
	if d.GPUs < 0 || d.GPUs > MaxGPUs {
		return fieldErr("demand.gpus", "must be between 0 and %d, got %d", MaxGPUs, d.GPUs)
	}
	return nil
}

func validCommand(cmd []string) error {
	if len(cmd) == 0 {
		return fieldErr("command", "is required with driver %q", DriverExec)
	}
	if len(cmd) > MaxCommandArgs {
		return fieldErr("command", "must have at most %d elements, got %d", MaxCommandArgs, len(cmd))
	}
	if cmd[0] == "" {
		return fieldErr("command[0]", "must name the program to run")
	}
	for i, a := range cmd {
		if err := validString(indexField("command", i), a, MaxArgLen); err != nil {
			return err
		}
	}
	return nil
}

func validEnv(env map[string]string) error {
	if len(env) > MaxEnvVars {
		return fieldErr("env", "must have at most %d variables, got %d", MaxEnvVars, len(env))
	}
	// Sorted, so that the error names the same variable every time.
	for _, k := range slices.Sorted(maps.Keys(env)) {
		field := "env." + k
		if !validEnvName(k) {
			return fieldErr(field, "name must match [A-Za-z_][A-Za-z0-9_]* and be at most %d characters", MaxEnvNameLen)
		}
		if strings.HasPrefix(strings.ToUpper(k), ReservedEnvPrefix) {
			return fieldErr(field, "names starting with %s are reserved for the runner", ReservedEnvPrefix)
		}
		if err := validString(field, env[k], MaxEnvValueLen); err != nil {
			return err
		}
	}
	return nil
}

func validEnvName(k string) bool {
	if k == "" || len(k) > MaxEnvNameLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// validString refuses what a process cannot receive: NUL bytes, invalid
// UTF-8, and oversized values.
func validString(field, v string, max int) error {
	switch {
	case len(v) > max:
		return fieldErr(field, "must be at most %d bytes, got %d", max, len(v))
	case strings.IndexByte(v, 0) >= 0:
		return fieldErr(field, "must not contain NUL bytes")
	case !utf8.ValidString(v):
		return fieldErr(field, "must be valid UTF-8")
	}
	return nil
}

func indexField(name string, i int) string {
	return name + "[" + strconv.Itoa(i) + "]"
}
