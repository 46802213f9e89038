package workload

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestEmbeddedPrices(t *testing.T) {
	p := EmbeddedPrices()
	if n := len(p.All()); n != 96 {
		t.Fatalf("embedded prices have %d rows; want 96", n)
	}
	if got := p.InstanceTypes(); len(got) != 10 || !slices.Contains(got, "p5e.48xlarge") {
		t.Errorf("InstanceTypes() = %v; want the 10 types of the catalog", got)
	}
	regions, err := p.RegionsWithPrice(DefaultInstance)
	want := []string{"ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-2", "eu-central-1", "eu-west-1", "us-east-1", "us-east-2", "us-west-2"}
	if err != nil || !slices.Equal(regions, want) {
		t.Errorf("RegionsWithPrice(p4d) = %v, %v; want %v", regions, err, want)
	}
	for _, tc := range []struct {
		instance, region string
		want             float64
	}{
		{"p4d.24xlarge", "us-east-1", 32.7726},
		{"p4d.24xlarge", "ap-northeast-2", 45.38848},
		{"p5.48xlarge", "eu-west-2", 127.816},
		{"g5.xlarge", "eu-north-1", 1.067},
	} {
		if got, err := p.OnDemand(tc.instance, tc.region); err != nil || got != tc.want {
			t.Errorf("OnDemand(%s, %s) = %v, %v; want %v", tc.instance, tc.region, got, err, tc.want)
		}
	}
	if v, where, err := p.CheapestOnDemand(DefaultInstance); err != nil || v != 32.7726 || where != "us-east-1" {
		t.Errorf("CheapestOnDemand(p4d) = %v, %s, %v; want 32.7726 in us-east-1", v, where, err)
	}
	if row, ok := p.Lookup("p4d.24xlarge", "ap-south-1"); !ok || row.HasSpot || !row.HasOnDemand || row.AcceleratorCount != 8 || row.Accelerator != "A100" {
		t.Errorf("Lookup(p4d, ap-south-1) = %+v, %v; want on-demand, no spot, 8 × A100", row, ok)
	}
	if row, _ := p.Lookup("p4d.24xlarge", "us-east-1"); row.SpotMinPerHour != 6.8179 || row.SpotMaxPerHour != 9.8722 || row.MemoryGiB != 1152 || row.VCPUs != 96 {
		t.Errorf("Lookup(p4d, us-east-1) = %+v; want spot 6.8179–9.8722, 1152 GiB, 96 vCPUs", row)
	}
}

func TestPriceLookupErrors(t *testing.T) {
	p := EmbeddedPrices()
	_, err := p.RegionsWithPrice("p5e.48xlarge")
	if !errors.Is(err, ErrNoOnDemandPrice) || !strings.Contains(err.Error(), "p5e.48xlarge") || !strings.Contains(err.Error(), "us-west-2") {
		t.Errorf("RegionsWithPrice(p5e) = %v; want ErrNoOnDemandPrice naming the instance and its regions", err)
	}
	if _, err := p.RegionsWithPrice("p9.huge"); !errors.Is(err, ErrUnknownInstance) || !strings.Contains(err.Error(), "p4d.24xlarge") {
		t.Errorf("RegionsWithPrice(unknown) = %v; want ErrUnknownInstance listing the known types", err)
	}
	if _, err := p.OnDemand("p5e.48xlarge", "us-east-2"); !errors.Is(err, ErrNoOnDemandPrice) {
		t.Errorf("OnDemand(p5e, us-east-2) = %v; want ErrNoOnDemandPrice", err)
	}
	if _, err := p.OnDemand("p4d.24xlarge", "sa-east-1"); !errors.Is(err, ErrNoRegion) {
		t.Errorf("OnDemand(p4d, sa-east-1) = %v; want ErrNoRegion", err)
	}
	if _, err := p.OnDemand("p9.huge", "us-east-1"); !errors.Is(err, ErrUnknownInstance) {
		t.Errorf("OnDemand(unknown, us-east-1) = %v; want ErrUnknownInstance", err)
	}
	if _, _, err := p.CheapestOnDemand("p5e.48xlarge"); !errors.Is(err, ErrNoOnDemandPrice) {
		t.Errorf("CheapestOnDemand(p5e) = %v; want ErrNoOnDemandPrice", err)
	}
}

func TestParsePricesErrors(t *testing.T) {
	const h = "instance_type,accelerator,accelerator_count,vcpus,memory_gib,region,on_demand_usd_per_hour,spot_min_usd_per_hour,spot_max_usd_per_hour\n"
	const ok = "p4d.24xlarge,A100,8,96,1152,us-east-1,32.7726,6.8179,9.8722\n"
	for _, tc := range []struct {
		name         string
		in           string
		sentinel     error
		line, column int
		text         string
	}{
		{"missing column", "instance_type,region\nx,y\n", ErrMissingColumn, 1, 0, `"accelerator"`},
		{"header only", h, ErrNoRows, 0, 0, "no data rows"},
		{"negative on-demand", h + "p4d.24xlarge,A100,8,96,1152,us-east-1,-1,,\n", ErrBadValue, 2, 7, "negative"},
		{"not a number", h + "p4d.24xlarge,A100,8,96,1152,us-east-1,abc,,\n", ErrBadValue, 2, 7, `"abc" is not a number`},
		{"NaN price", h + "p4d.24xlarge,A100,8,96,1152,us-east-1,NaN,,\n", ErrBadValue, 2, 7, "not a number"},
		{"spot max blank", h + "p4d.24xlarge,A100,8,96,1152,us-east-1,1,2,\n", ErrBadValue, 2, 9, "blank while"},
		{"spot min blank", h + "p4d.24xlarge,A100,8,96,1152,us-east-1,1,,2\n", ErrBadValue, 2, 8, "blank while"},
		{"spot min above max", h + "p4d.24xlarge,A100,8,96,1152,us-east-1,1,3,2\n", ErrBadValue, 2, 8, "above"},
		{"duplicate row", h + ok + ok, ErrBadValue, 3, 6, "already listed on line 2"},
		{"blank region", h + "p4d.24xlarge,A100,8,96,1152,,1,,\n", ErrBadValue, 2, 6, "blank"},
		{"blank instance", h + ",A100,8,96,1152,us-east-1,1,,\n", ErrBadValue, 2, 1, "blank"},
		{"bad accelerator count", h + "p4d.24xlarge,A100,eight,96,1152,us-east-1,1,,\n", ErrBadValue, 2, 3, "not an integer"},
		{"inconsistent accelerator count", h + ok + "p4d.24xlarge,A100,4,96,1152,us-west-2,1,,\n", ErrBadValue, 3, 3, "has 8 elsewhere"},
		{"negative memory", h + "p4d.24xlarge,A100,8,96,-1,us-east-1,1,,\n", ErrBadValue, 2, 5, "not a number ≥ 0"},
		{"extra field", h + "p4d.24xlarge,A100,8,96,1152,us-east-1,1,,,\n", ErrBadValue, 2, 0, "10 fields"},
	} {
		_, err := ParsePrices(strings.NewReader(tc.in), "prices.csv")
		var pe *ParseError
		if !errors.As(err, &pe) || !errors.Is(err, tc.sentinel) || pe.Line != tc.line || pe.Column != tc.column || !strings.Contains(err.Error(), tc.text) || !strings.HasPrefix(err.Error(), "prices.csv") {
			t.Errorf("%s: error %q; want %v at prices.csv line %d column %d mentioning %q", tc.name, err, tc.sentinel, tc.line, tc.column, tc.text)
		}
	}
}

func TestLoadPrices(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.csv")
	body := "instance_type,accelerator,accelerator_count,vcpus,memory_gib,region,on_demand_usd_per_hour,spot_min_usd_per_hour,spot_max_usd_per_hour\n" +
		"x.large,T4,1,4,16,r2,2.5,,\nx.large,T4,1,4,16,r1,,1,1.5\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPrices(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.RegionsWithPrice("x.large"); err != nil || !slices.Equal(got, []string{"r2"}) || p.Source() != path {
		t.Errorf("RegionsWithPrice = %v, %v; want [r2] only (r1 has no on-demand price)", got, err)
	}
	if rows := p.All(); rows[0].Region != "r1" || !rows[0].HasSpot || rows[0].HasOnDemand {
		t.Errorf("All()[0] = %+v; want r1 first, spot only", rows[0])
	}
	if _, err := LoadPrices(filepath.Join(t.TempDir(), "none.csv")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadPrices(missing) = %v; want a not-exist error", err)
	}
}
