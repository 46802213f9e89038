package workload

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// pricesCSV is AWS GPU instance prices per region from the SkyPilot
// catalog; see data/README.md.
//
//go:embed data/gpu-prices-aws.csv
var pricesCSV []byte

// EmbeddedPricesName is the Source of EmbeddedPrices.
const EmbeddedPricesName = "embedded gpu-prices-aws.csv"

// DefaultInstance is the instance type the workload and its throughput
// model assume: 8 × NVIDIA A100 40 GB.
const DefaultInstance = "p4d.24xlarge"

// Errors of price look-ups.
var (
	// ErrUnknownInstance: the price list has no row for the instance type.
	ErrUnknownInstance = errors.New("unknown instance type")
	// ErrNoOnDemandPrice: the instance type (in that region, or anywhere)
	// has a blank on-demand price, as p5e.48xlarge does in the catalog.
	ErrNoOnDemandPrice = errors.New("no on-demand price")
	// ErrNoRegion: the instance type is not offered in that region.
	ErrNoRegion = errors.New("instance type not offered in region")
)

// Price is one row of a price list: an instance type in a region.
type Price struct {
	// InstanceType is the AWS instance type, for example "p4d.24xlarge".
	InstanceType string `json:"instance_type"`
	// Accelerator is the GPU model, for example "A100".
	Accelerator string `json:"accelerator"`
	// AcceleratorCount is the number of GPUs of the instance.
	AcceleratorCount int `json:"accelerator_count"`
	// VCPUs is the number of virtual CPUs.
	VCPUs int `json:"vcpus"`
	// MemoryGiB is the host memory in GiB.
	MemoryGiB float64 `json:"memory_gib"`
	// Region is the AWS region code.
	Region string `json:"region"`
	// OnDemandPerHour is the on-demand price in US dollars per instance-hour;
	// meaningful only when HasOnDemand.
	OnDemandPerHour float64 `json:"on_demand_usd_per_hour"`
	// HasOnDemand reports whether the list has an on-demand price.
	HasOnDemand bool `json:"has_on_demand"`
	// SpotMinPerHour is the lowest spot price over the region's zones;
	// meaningful only when HasSpot.
	SpotMinPerHour float64 `json:"spot_min_usd_per_hour"`
	// SpotMaxPerHour is the highest spot price over the region's zones.
	SpotMaxPerHour float64 `json:"spot_max_usd_per_hour"`
	// HasSpot reports whether the list has spot prices.
	HasSpot bool `json:"has_spot"`
}

// Prices is a price list indexed by (instance type, region). It is
// immutable and safe for concurrent use.
type Prices struct {
	source string
	rows   []Price // sorted by instance type, then region
	index  map[[2]string]int
}

// Price list columns.
const (
	colInstance    = "instance_type"
	colAccelerator = "accelerator"
	colAccelCount  = "accelerator_count"
	colVCPUs       = "vcpus"
	colMemory      = "memory_gib"
	colRegion      = "region"
	colOnDemand    = "on_demand_usd_per_hour"
	colSpotMin     = "spot_min_usd_per_hour"
	colSpotMax     = "spot_max_usd_per_hour"
)

// ParsePrices reads a price list with the columns of gpu-prices-aws.csv:
// instance_type, accelerator, accelerator_count, vcpus, memory_gib, region,
// on_demand_usd_per_hour, spot_min_usd_per_hour, spot_max_usd_per_hour.
// Prices are US dollars per instance-hour; a blank price means the catalog
// has none (spot min and max must then both be blank). Each (instance type,
// region) may appear once, and an instance type must have the same
// accelerator count everywhere. Errors are *ParseError values naming source,
// line and column.
func ParsePrices(r io.Reader, source string) (*Prices, error) {
	t, err := openTable(r, source, []string{colInstance, colAccelerator, colAccelCount, colVCPUs, colMemory, colRegion, colOnDemand, colSpotMin, colSpotMax})
	if err != nil {
		return nil, err
	}
	p := &Prices{source: source, index: map[[2]string]int{}}
	firstLine := map[[2]string]int{}
	accel := map[string]int{} // instance → accelerator count
	for {
		if err := t.next(); err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
		var row Price
		row.InstanceType, row.Region, row.Accelerator = t.cell(colInstance), t.cell(colRegion), t.cell(colAccelerator)
		if row.InstanceType == "" {
			return nil, t.errAt(colInstance, "must not be blank")
		}
		if row.Region == "" {
			return nil, t.errAt(colRegion, "must not be blank")
		}
		if row.AcceleratorCount, err = t.nonNegInt(colAccelCount); err != nil {
			return nil, err
		}
		if row.VCPUs, err = t.nonNegInt(colVCPUs); err != nil {
			return nil, err
		}
		mem := t.cell(colMemory)
		if row.MemoryGiB, err = strconv.ParseFloat(mem, 64); err != nil || math.IsNaN(row.MemoryGiB) || math.IsInf(row.MemoryGiB, 0) || row.MemoryGiB < 0 {
			return nil, t.errAt(colMemory, "%q is not a number ≥ 0", mem)
		}
		if row.OnDemandPerHour, row.HasOnDemand, err = t.optPrice(colOnDemand); err != nil {
			return nil, err
		}
		lo, hasLo, err := t.optPrice(colSpotMin)
		if err != nil {
			return nil, err
		}
		hi, hasHi, err := t.optPrice(colSpotMax)
		if err != nil {
			return nil, err
		}
		switch {
		case hasLo != hasHi && hasLo:
			return nil, t.errAt(colSpotMax, "blank while %s is %v", colSpotMin, lo)
		case hasLo != hasHi:
			return nil, t.errAt(colSpotMin, "blank while %s is %v", colSpotMax, hi)
		case hasLo && lo > hi:
			return nil, t.errAt(colSpotMin, "%v is above %s %v", lo, colSpotMax, hi)
		}
		row.SpotMinPerHour, row.SpotMaxPerHour, row.HasSpot = lo, hi, hasLo
		key := [2]string{row.InstanceType, row.Region}
		if line, dup := firstLine[key]; dup {
			return nil, t.errAt(colRegion, "%s in %s already listed on line %d", row.InstanceType, row.Region, line)
		}
		firstLine[key] = t.line
		if n, seen := accel[row.InstanceType]; seen && n != row.AcceleratorCount {
			return nil, t.errAt(colAccelCount, "%d, but %s has %d elsewhere", row.AcceleratorCount, row.InstanceType, n)
		}
		accel[row.InstanceType] = row.AcceleratorCount
		p.rows = append(p.rows, row)
	}
	if len(p.rows) == 0 {
		return nil, &ParseError{Source: source, Err: ErrNoRows}
	}
	slices.SortFunc(p.rows, func(a, b Price) int {
		if c := strings.Compare(a.InstanceType, b.InstanceType); c != 0 {
			return c
		}
		return strings.Compare(a.Region, b.Region)
	})
	for i, row := range p.rows {
		p.index[[2]string{row.InstanceType, row.Region}] = i
	}
	return p, nil
}

// LoadPrices reads a price list file; see ParsePrices.
func LoadPrices(path string) (*Prices, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load prices: %w", err)
	}
	defer f.Close()
	return ParsePrices(f, path)
}

var embeddedPrices = mustParse(ParsePrices, pricesCSV, EmbeddedPricesName)

// EmbeddedPrices returns the embedded AWS GPU price list (SkyPilot catalog).
func EmbeddedPrices() *Prices { return embeddedPrices }

// Source names where the price list came from.
func (p *Prices) Source() string { return p.source }

// All returns every row, sorted by instance type then region.
func (p *Prices) All() []Price { return slices.Clone(p.rows) }

// InstanceTypes returns the instance types listed, sorted.
func (p *Prices) InstanceTypes() []string {
	var out []string
	for _, r := range p.rows {
		if len(out) == 0 || out[len(out)-1] != r.InstanceType {
			out = append(out, r.InstanceType)
		}
	}
	return out
}

// Lookup returns the row of instance in region.
func (p *Prices) Lookup(instance, region string) (Price, bool) {
	i, ok := p.index[[2]string{instance, region}]
	if !ok {
		return Price{}, false
	}
	return p.rows[i], true
}

// RegionsWithPrice returns, sorted, the regions where instance has an
// on-demand price. It fails with ErrUnknownInstance when the list has no
// such instance type and with ErrNoOnDemandPrice when none of its regions
// has an on-demand price (p5e.48xlarge in the embedded list), so a flag
// that picks such an instance gets a clear error instead of no regions.
func (p *Prices) RegionsWithPrice(instance string) ([]string, error) {
	var out, listed []string
	for _, r := range p.rows {
		if r.InstanceType != instance {
			continue
		}
		listed = append(listed, r.Region)
		if r.HasOnDemand {
			out = append(out, r.Region)
		}
	}
	if len(listed) == 0 {
		return nil, fmt.Errorf("%s: %w %q (listed: %s)", p.source, ErrUnknownInstance, instance, strings.Join(p.InstanceTypes(), ", "))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w for %s in any of its regions (%s); choose another instance type or give a price list that has one",
			p.source, ErrNoOnDemandPrice, instance, strings.Join(listed, ", "))
	}
	return out, nil
}

// OnDemand returns the on-demand price of instance in region, in US dollars
// per instance-hour.
func (p *Prices) OnDemand(instance, region string) (float64, error) {
	row, ok := p.Lookup(instance, region)
	if !ok {
		if _, err := p.RegionsWithPrice(instance); errors.Is(err, ErrUnknownInstance) {
			return 0, err
		}
		return 0, fmt.Errorf("%s: %w: %s in %s", p.source, ErrNoRegion, instance, region)
	}
	if !row.HasOnDemand {
		return 0, fmt.Errorf("%s: %w for %s in %s", p.source, ErrNoOnDemandPrice, instance, region)
	}
	return row.OnDemandPerHour, nil
}

// CheapestOnDemand returns the lowest on-demand price of instance over all
// regions, and the first region (in name order) that has it.
func (p *Prices) CheapestOnDemand(instance string) (float64, string, error) {
	regions, err := p.RegionsWithPrice(instance)
	if err != nil {
		return 0, "", err
	}
	best, where := math.Inf(1), ""
	for _, r := range regions {
		if v, _ := p.OnDemand(instance, r); v < best {
			best, where = v, r
		}
	}
	return best, where, nil
}
