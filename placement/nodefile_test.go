package placement

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const exampleCSV = `name,compute,storage_gb,bandwidth_gbs,price_per_hour
node1,200,500,10,1000
node2,150,300,5,800
node3,100,200,2,500
`

const exampleJSON = `[
  {"name": "node1", "compute": 200, "storage_gb": 500, "bandwidth_gbs": 10, "price_per_hour": 1000},
  {"name": "node2", "compute": 150, "storage_gb": 300, "bandwidth_gbs": 5, "price_per_hour": 800},
  {"name": "node3", "compute": 100, "storage_gb": 200, "bandwidth_gbs": 2, "price_per_hour": 500}
]
`

func TestParseNodesExample(t *testing.T) {
	want := ExampleNodes()
	for name, parse := range map[string]func() ([]Node, error){
		"csv":        func() ([]Node, error) { return ParseNodesCSV(strings.NewReader(exampleCSV), "x.csv") },
		"json":       func() ([]Node, error) { return ParseNodesJSON(strings.NewReader(exampleJSON), "x.json") },
		"sniff csv":  func() ([]Node, error) { return ParseNodes(strings.NewReader(exampleCSV), "-") },
		"sniff json": func() ([]Node, error) { return ParseNodes(strings.NewReader(exampleJSON), "-") },
	} {
		got, err := parse()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v; want %+v", name, got, want)
		}
	}
}

func TestParseNodesCSVOptionalColumns(t *testing.T) {
	in := "\ufeff# exported from the inventory\n" +
		" Region , NAME,price_per_hour,compute,storage_gb,bandwidth_gbs,gpu_type,gpus\n" +
		"us-east-1, gpu-a , 32.77, 400, 8000, 50, H100, 8\n" +
		"\n" +
		"eu-west-1,cpu-b,0.5,20,100,1,,\n"
	got, err := ParseNodesCSV(strings.NewReader(in), "inv.csv")
	if err != nil {
		t.Fatal(err)
	}
	h100 := Resources{ComputePerHour: 400, StorageGB: 8000, BandwidthGBps: 50, GPUs: 8}
	cpu := Resources{ComputePerHour: 20, StorageGB: 100, BandwidthGBps: 1}
	want := []Node{
		{ID: "gpu-a", Region: "us-east-1", Total: h100, Free: h100, PricePerHour: 32.77, GPUType: "H100"},
		{ID: "cpu-b", Region: "eu-west-1", Total: cpu, Free: cpu, PricePerHour: 0.5},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestParseNodesJSONOptionalKeys(t *testing.T) {
	in := `[{"name":"g","region":"ap-south-1","compute":1,"storage_gb":2,"bandwidth_gbs":3,"price_per_hour":4,"gpu_type":"A100","gpus":2}]`
	got, err := ParseNodesJSON(strings.NewReader(in), "g.json")
	if err != nil {
		t.Fatal(err)
	}
	r := Resources{ComputePerHour: 1, StorageGB: 2, BandwidthGBps: 3, GPUs: 2}
	want := []Node{{ID: "g", Region: "ap-south-1", Total: r, Free: r, PricePerHour: 4, GPUType: "A100"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v; want %+v", got, want)
	}
}

func TestParseNodesCSVErrors(t *testing.T) {
	const header = "name,compute,storage_gb,bandwidth_gbs,price_per_hour\n"
	tests := []struct {
		name, in, want string
	}{
		{"empty file", "", `nodes.csv: empty file: want a header line naming the columns (name, compute, storage_gb, bandwidth_gbs, price_per_hour, region, gpu_type, gpus)`},
		{"header only", header, `nodes.csv: no nodes: the file has a header but no rows`},
		{"zero price", header + "a,1,1,1,1\nb,1,1,1,0\n", `nodes.csv:3: field "price_per_hour": must be greater than zero, got 0`},
		{"negative compute", header + "a,-5,1,1,1\n", `nodes.csv:2: field "compute": must be greater than zero, got -5`},
		{"NaN storage", header + "a,1,NaN,1,1\n", `nodes.csv:2: field "storage_gb": must be a finite number, got NaN`},
		{"infinite bandwidth", header + "a,1,1,+Inf,1\n", `nodes.csv:2: field "bandwidth_gbs": must be a finite number, got +Inf`},
		{"not a number", header + "a,1,1,1,cheap\n", `nodes.csv:2: field "price_per_hour": not a number: "cheap"`},
		{"empty number", header + "a,,1,1,1\n", `nodes.csv:2: field "compute": must not be empty`},
		{"empty name", header + " ,1,1,1,1\n", `nodes.csv:2: field "name": must not be empty`},
		{"duplicate name", header + "a,1,1,1,1\na,2,2,2,2\n", `nodes.csv:3: field "name": node "a" already defined on line 2`},
		{"unknown column", "name,compute,storage_gb,bandwidth_gbs,price_per_hour,colour\n", `nodes.csv:1: field "colour": unknown column (want name, compute, storage_gb, bandwidth_gbs, price_per_hour, region, gpu_type, gpus)`},
		{"missing column", "name,compute,storage_gb,price_per_hour\na,1,1,1\n", `nodes.csv:1: field "bandwidth_gbs": missing column (required: name, compute, storage_gb, bandwidth_gbs, price_per_hour)`},
		{"column twice", "name,compute,compute,storage_gb,bandwidth_gbs,price_per_hour\n", `nodes.csv:1: field "compute": column appears twice`},
		{"short row", header + "a,1,1,1,1\nb,1,1\n", `nodes.csv:3: malformed CSV: wrong number of fields: every row needs one per header column`},
		{"bad quote", header + "a,1,1,1,1\n\"b,1,1,1,1\n", `nodes.csv:3: malformed CSV: extraneous or missing " in quoted-field`},
		{"fractional gpus", "name,compute,storage_gb,bandwidth_gbs,price_per_hour,gpus\na,1,1,1,1,1.5\n", `nodes.csv:2: field "gpus": must be a whole number, got "1.5"`},
		{"negative gpus", "name,compute,storage_gb,bandwidth_gbs,price_per_hour,gpus\na,1,1,1,1,-1\n", `nodes.csv:2: field "gpus": must not be negative, got -1`},
		{"gpu type without gpus", "name,compute,storage_gb,bandwidth_gbs,price_per_hour,gpu_type\na,1,1,1,1,H100\n", `nodes.csv:2: field "gpus": must be greater than zero when gpu_type is set (gpu_type "H100")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes, err := ParseNodesCSV(strings.NewReader(tt.in), "nodes.csv")
			if err == nil {
				t.Fatalf("parsed %+v; want error %q", nodes, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error =\n%s\nwant\n%s", err, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			var fe *FileError
			if !errors.As(err, &fe) || fe.Source != "nodes.csv" {
				t.Errorf("error %v is not a *FileError for nodes.csv", err)
			}
		})
	}
}

func TestParseNodesJSONErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty file", "", `nodes.json: empty file: want a JSON array of node objects`},
		{"empty array", "[]", `nodes.json: no nodes: the array is empty`},
		{"object, not array", `{"name":"a"}`, `nodes.json:1: want a JSON array of node objects, got "{"`},
		{"zero price", "[\n{\"name\":\"a\",\"compute\":1,\"storage_gb\":1,\"bandwidth_gbs\":1,\"price_per_hour\":1},\n{\"name\":\"b\",\"compute\":1,\"storage_gb\":1,\"bandwidth_gbs\":1,\"price_per_hour\":0}\n]",
			`nodes.json:3: field "price_per_hour": must be greater than zero, got 0`},
		{"negative compute", `[{"name":"a","compute":-1,"storage_gb":1,"bandwidth_gbs":1,"price_per_hour":1}]`,
			`nodes.json:1: field "compute": must be greater than zero, got -1`},
		{"missing key", "[\n  {\"name\":\"a\",\"compute\":1,\"storage_gb\":1,\"price_per_hour\":1}\n]",
			`nodes.json:2: field "bandwidth_gbs": missing`},
		{"null value", `[{"name":"a","compute":null,"storage_gb":1,"bandwidth_gbs":1,"price_per_hour":1}]`,
			`nodes.json:1: field "compute": missing`},
		{"unknown key", "[\n\n  {\"name\":\"a\",\"compute\":1,\"storage_gb\":1,\"bandwidth_gbs\":1,\"price_per_hour\":1,\"colour\":\"red\"}]",
			`nodes.json:3: field "colour": unknown field (want name, compute, storage_gb, bandwidth_gbs, price_per_hour, region, gpu_type, gpus)`},
		{"string for number", "[\n{\"name\":\"a\",\n\"compute\":\"lots\",\"storage_gb\":1,\"bandwidth_gbs\":1,\"price_per_hour\":1}]",
			`nodes.json:3: field "compute": want a number, got a JSON string`},
		{"fractional gpus", `[{"name":"a","compute":1,"storage_gb":1,"bandwidth_gbs":1,"price_per_hour":1,"gpus":1.5}]`,
			`nodes.json:1: field "gpus": want a whole number, got a JSON number 1.5`},
		{"number out of range", `[{"name":"a","compute":1e309,"storage_gb":1,"bandwidth_gbs":1,"price_per_hour":1}]`,
			`nodes.json:1: field "compute": number out of range: 1e309`},
		{"not an object", `[1]`, `nodes.json:1: want a node object, got a JSON number`},
		{"truncated", "[\n{\"name\":\"a\",\"compute\":1", `nodes.json:2: malformed JSON: unexpected end of input`},
		{"syntax", "[\n{\"name\":\"a\",,}]", `nodes.json:2: malformed JSON: invalid character ',' looking for beginning of object key string`},
		{"trailing data", `[{"name":"a","compute":1,"storage_gb":1,"bandwidth_gbs":1,"price_per_hour":1}] [`, `nodes.json:1: unexpected "[" after the array of nodes`},
		{"duplicate name", "[{\"name\":\"a\",\"compute\":1,\"storage_gb\":1,\"bandwidth_gbs\":1,\"price_per_hour\":1},\n{\"name\":\"a\",\"compute\":1,\"storage_gb\":1,\"bandwidth_gbs\":1,\"price_per_hour\":1}]",
			`nodes.json:2: field "name": node "a" already defined on line 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes, err := ParseNodesJSON(strings.NewReader(tt.in), "nodes.json")
			if err == nil {
				t.Fatalf("parsed %+v; want error %q", nodes, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error =\n%s\nwant\n%s", err, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestLoadNodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, p := range []string{write("n.csv", exampleCSV), write("N.JSON", exampleJSON)} {
		nodes, err := LoadNodes(p)
		if err != nil || !reflect.DeepEqual(nodes, ExampleNodes()) {
			t.Errorf("LoadNodes(%s) = %+v, %v", p, nodes, err)
		}
	}
	txt := write("n.txt", exampleCSV)
	if _, err := LoadNodes(txt); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `unsupported file extension ".txt" (want .csv or .json)`) {
		t.Errorf("LoadNodes(.txt) error = %v", err)
	}
	if _, err := LoadNodes(filepath.Join(dir, "missing.csv")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadNodes(missing) error = %v; want ErrNotExist", err)
	}
}

func TestParseNodesTooLarge(t *testing.T) {
	r := strings.NewReader(strings.Repeat(" ", MaxNodeFileSize+1))
	if _, err := ParseNodes(r, "big"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "larger than 64 MiB") {
		t.Errorf("ParseNodes(huge) error = %v", err)
	}
}
