package placement

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// The fuzz targets hold the node-file parsers to their contract on any
// input: no panic; either a non-empty list of valid nodes with unique names
// and nothing allocated, or an error that wraps ErrInvalid and names the
// file. The seed corpus is in testdata/fuzz/; run longer with
//
//	go test -run '^$' -fuzz FuzzParseNodesCSV -fuzztime 1m ./placement/

func FuzzParseNodesCSV(f *testing.F) {
	f.Add([]byte(exampleCSV))
	f.Add([]byte("name,compute,storage_gb,bandwidth_gbs,price_per_hour,region,gpu_type,gpus\na,1,2,3,4,us-east-1,H100,8\n"))
	f.Add([]byte("name,compute\n"))
	f.Add([]byte("price_per_hour,name,compute,storage_gb,bandwidth_gbs\n0,a,1,1,1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		nodes, err := ParseNodesCSV(bytes.NewReader(data), "fuzz.csv")
		checkParsed(t, nodes, err, "fuzz.csv")
	})
}

func FuzzParseNodesJSON(f *testing.F) {
	f.Add([]byte(exampleJSON))
	f.Add([]byte(`[{"name":"g","region":"ap-south-1","compute":1,"storage_gb":2,"bandwidth_gbs":3,"price_per_hour":4,"gpu_type":"A100","gpus":2}]`))
	f.Add([]byte(`[{"name":"a","compute":1e309}]`))
	f.Add([]byte(`[1, "x", null, {}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		nodes, err := ParseNodesJSON(bytes.NewReader(data), "fuzz.json")
		checkParsed(t, nodes, err, "fuzz.json")
		// Sniffing must pick the same parser for an input that starts with '['.
		if trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff"); len(trimmed) > 0 && trimmed[0] == '[' {
			n2, err2 := ParseNodes(bytes.NewReader(data), "fuzz.json")
			if (err == nil) != (err2 == nil) || len(nodes) != len(n2) {
				t.Fatalf("ParseNodes = %d nodes, %v; ParseNodesJSON = %d nodes, %v", len(n2), err2, len(nodes), err)
			}
		}
	})
}

func checkParsed(t *testing.T, nodes []Node, err error, source string) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v does not wrap ErrInvalid", err)
		}
		if !strings.HasPrefix(err.Error(), source+":") {
			t.Fatalf("error %q does not start with %q", err, source+":")
		}
		if nodes != nil {
			t.Fatalf("error %v came with %d nodes", err, len(nodes))
		}
		return
	}
	if len(nodes) == 0 {
		t.Fatal("no error and no nodes")
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		if err := n.Validate(); err != nil {
			t.Fatalf("parsed an invalid node %+v: %v", n, err)
		}
		if n.Free != n.Total {
			t.Fatalf("node %q: free %+v != total %+v", n.ID, n.Free, n.Total)
		}
		if !(n.Total.StorageGB > 0) || !(n.Total.BandwidthGBps > 0) || n.ID != strings.TrimSpace(n.ID) {
			t.Fatalf("node %+v: storage and bandwidth must be positive, the name trimmed", n)
		}
		if seen[n.ID] {
			t.Fatalf("node %q parsed twice", n.ID)
		}
		seen[n.ID] = true
	}
}
