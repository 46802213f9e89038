package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// result is what one in-process run of the binary produced.
type result struct {
	code           int
	stdout, stderr string
}

func runMeridian(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errOut)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const exampleCSV = "name,compute,storage_gb,bandwidth_gbs,price_per_hour\n" +
	"node1,200,500,10,1000\nnode2,150,300,5,800\nnode3,100,200,2,500\n"

const exampleJSON = `[
 {"name":"node1","compute":200,"storage_gb":500,"bandwidth_gbs":10,"price_per_hour":1000,"region":"us-east-1"},
 {"name":"node2","compute":150,"storage_gb":300,"bandwidth_gbs":5,"price_per_hour":800,"region":"eu-west-1"},
 {"name":"node3","compute":100,"storage_gb":200,"bandwidth_gbs":2,"price_per_hour":500,"region":"us-east-1"}
]`

// tableRow matches a row of the score table: rank, node, then the score and
// decision columns.
var tableRow = regexp.MustCompile(`(?m)^(\d|-)\s+(node\d)\s.*?\s(\d+(?:\.\d+)?|-)\s+(chosen|outranked|rejected[^ ]*)\s+(.+)$`)

type row struct{ rank, node, score, decision, reason string }

func tableRows(t *testing.T, out string) []row {
	t.Helper()
	var rows []row
	for _, m := range tableRow.FindAllStringSubmatch(out, -1) {
		rows = append(rows, row{m[1], m[2], m[3], m[4], m[5]})
	}
	return rows
}

func TestScoreExample(t *testing.T) {
	r := runMeridian(t, "", "score", "--example")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	want := []row{
		{"1", "node1", "20", "chosen", "highest score 20, tied with node3; won the tie-break on larger total compute (200 > 100 tasks/h)"},
		{"2", "node3", "20", "outranked", "score 20 ties with node1; lost the tie-break on smaller total compute (100 < 200 tasks/h)"},
		{"3", "node2", "18.75", "outranked", "score 18.75 < 20 of node1"},
	}
	got := tableRows(t, r.stdout)
	if len(got) != len(want) {
		t.Fatalf("table rows = %+v; want %d rows in\n%s", got, len(want), r.stdout)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d = %+v; want %+v", i, got[i], want[i])
		}
	}
	for _, s := range []string{"Demand: 100 tasks/h", "Model:  cost-efficiency, E = C·D/c", "Chosen: node1\n",
		"Tie-break: higher score first; scores equal within a relative 1e-9 are ordered by larger total compute, then lower price, then node ID."} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("output lacks %q:\n%s", s, r.stdout)
		}
	}
}

// TestScoreFiles: the same nodes from CSV, JSON and standard input give the
// example's decision.
func TestScoreFiles(t *testing.T) {
	csvPath := writeFile(t, "nodes.csv", exampleCSV)
	jsonPath := writeFile(t, "nodes.json", exampleJSON)
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
	}{
		{"csv", "", []string{"score", "--nodes", csvPath, "--demand", "100"}},
		{"json", "", []string{"score", "--nodes", jsonPath, "--demand", "100"}},
		{"stdin csv", exampleCSV, []string{"score", "--nodes", "-", "--demand", "100"}},
		{"stdin json", exampleJSON, []string{"score", "--nodes", "-", "--demand=100"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runMeridian(t, tc.stdin, tc.args...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			rows := tableRows(t, r.stdout)
			if len(rows) != 3 || rows[0].node != "node1" || rows[0].decision != "chosen" || rows[2].score != "18.75" {
				t.Errorf("rows = %+v", rows)
			}
		})
	}
	r := runMeridian(t, "", "score", "--nodes", jsonPath, "--demand", "100")
	if !strings.Contains(r.stdout, "REGION") || !strings.Contains(r.stdout, "us-east-1") {
		t.Errorf("regions not shown:\n%s", r.stdout)
	}
}

func TestScoreJSON(t *testing.T) {
	r := runMeridian(t, "", "score", "--example", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got struct {
		Model    string `json:"model"`
		Winner   string `json:"winner"`
		TieBreak string `json:"tie_break"`
		Nodes    []struct {
			Rank     int      `json:"rank"`
			Name     string   `json:"name"`
			Score    *float64 `json:"score"`
			Decision string   `json:"decision"`
			Reason   string   `json:"reason"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, r.stdout)
	}
	if got.Model != "cost-efficiency" || got.Winner != "node1" || !strings.Contains(got.TieBreak, "larger total compute") {
		t.Errorf("decision = %+v", got)
	}
	want := []struct {
		name     string
		score    float64
		decision string
	}{{"node1", 20, "chosen"}, {"node3", 20, "outranked"}, {"node2", 18.75, "outranked"}}
	if len(got.Nodes) != len(want) {
		t.Fatalf("nodes = %+v", got.Nodes)
	}
	for i, w := range want {
		n := got.Nodes[i]
		if n.Name != w.name || n.Score == nil || *n.Score != w.score || n.Decision != w.decision || n.Rank != i+1 || n.Reason == "" {
			t.Errorf("nodes[%d] = %+v; want %+v", i, n, w)
		}
	}
	if strings.Contains(r.stdout, `\u003e`) {
		t.Error("JSON escapes > in reasons")
	}
}

// TestScoreWeighted: the model flags reach the pipeline. With saturating
// efficiency every node serves the whole demand, so λ makes the cheapest
// node win.
func TestScoreWeighted(t *testing.T) {
	r := runMeridian(t, "", "score", "--example", "--efficiency", "saturating", "--lambda", "0.01", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got struct {
		Model    string `json:"model"`
		Winner   string `json:"winner"`
		Weighted struct {
			Efficiency string  `json:"efficiency"`
			Lambda     float64 `json:"lambda"`
		} `json:"weighted"`
		Nodes []struct {
			Name  string  `json:"name"`
			Score float64 `json:"score"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err)
	}
	if got.Model != "weighted" || got.Winner != "node3" || got.Weighted.Efficiency != "saturating" || got.Weighted.Lambda != 0.01 {
		t.Errorf("decision = %+v", got)
	}
	if got.Nodes[0].Score != 95 || got.Nodes[1].Score != 92 || got.Nodes[2].Score != 90 {
		t.Errorf("scores = %+v; want 95, 92, 90 (100 − λ·c)", got.Nodes)
	}
}

func TestScorePlot(t *testing.T) {
	dir := t.TempDir()
	svgPath := filepath.Join(dir, "eff.svg")
	r := runMeridian(t, "", "score", "--example", "--plot", svgPath)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	svg, err := os.ReadFile(svgPath)
	if err != nil {
		t.Fatal(err)
	}
	s := string(svg)
	for _, want := range []string{"<svg", "Node efficiency comparison", "Cost efficiency E = C·D/c", "18.75"} {
		if !strings.Contains(s, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	// Bars are labelled in score order: node1, node3, node2.
	i1, i3, i2 := strings.Index(s, ">node1<"), strings.Index(s, ">node3<"), strings.Index(s, ">node2<")
	if i1 < 0 || i3 < 0 || i2 < 0 || !(i1 < i3 && i3 < i2) {
		t.Errorf("node labels at %d, %d, %d; want node1 < node3 < node2", i1, i3, i2)
	}

	pngPath := filepath.Join(dir, "eff.PNG")
	r = runMeridian(t, "", "score", "--example", "--json", "--plot", pngPath)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil || cfg.Width < 500 || cfg.Height < 300 {
		t.Errorf("PNG config = %+v, %v", cfg, err)
	}
	if !json.Valid([]byte(r.stdout)) {
		t.Error("--json with --plot printed more than JSON")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("plot dir holds %d files; want the two charts and no temporary files", len(entries))
	}
}

// TestScoreBadInput: every kind of bad input gives one clear error on
// stderr, exit code 2, nothing on stdout and no chart.
func TestScoreBadInput(t *testing.T) {
	const h = "name,compute,storage_gb,bandwidth_gbs,price_per_hour\n"
	tests := []struct {
		name    string
		file    string // name of the nodes file; "" for none
		content string
		args    []string
		want    string
	}{
		{"malformed CSV", "n.csv", h + "a,1,1,1,1\nb,1,1\n", nil, `n.csv:3: malformed CSV: wrong number of fields`},
		{"unknown column", "n.csv", "name,compute,storage_gb,bandwidth_gbs,price_per_hour,colour\na,1,1,1,1,red\n", nil, `n.csv:1: field "colour": unknown column`},
		{"missing column", "n.csv", "name,compute,storage_gb,price_per_hour\na,1,1,1\n", nil, `n.csv:1: field "bandwidth_gbs": missing column`},
		{"NaN", "n.csv", h + "a,NaN,1,1,1\n", nil, `n.csv:2: field "compute": must be a finite number, got NaN`},
		{"zero price", "n.csv", h + "a,1,1,1,1\nb,1,1,1,0\n", nil, `n.csv:3: field "price_per_hour": must be greater than zero, got 0`},
		{"negative compute", "n.csv", h + "a,-3,1,1,1\n", nil, `n.csv:2: field "compute": must be greater than zero, got -3`},
		{"empty list", "n.csv", h, nil, `n.csv: no nodes`},
		{"empty JSON list", "n.json", "[]", nil, `n.json: no nodes: the array is empty`},
		{"malformed JSON", "n.json", "[{\"name\":\"a\",\n\"compute\":}]", nil, `n.json:2: malformed JSON: invalid character '}'`},
		{"unknown JSON key", "n.json", `[{"name":"a","compute":1,"storage_gb":1,"bandwidth_gbs":1,"price_per_hour":1,"cpu":2}]`, nil, `n.json:1: field "cpu": unknown field`},
		{"bad nodes extension", "n.txt", exampleCSV, nil, `unsupported file extension ".txt" (want .csv or .json)`},
		{"missing file", "", "", []string{"score", "--nodes", "/nonexistent/n.csv", "--demand", "1"}, `no such file or directory`},
		{"demand 0", "", "", []string{"score", "--example", "--demand", "0"}, `--demand: must be greater than zero, got 0`},
		{"demand -1", "", "", []string{"score", "--example", "--demand", "-1"}, `--demand: must be greater than zero, got -1`},
		{"demand NaN", "", "", []string{"score", "--example", "--demand", "NaN"}, `--demand: must be a finite number, got NaN`},
		{"demand not a number", "", "", []string{"score", "--example", "--demand", "lots"}, `invalid argument "lots" for "--demand" flag`},
		{"demand missing", "n.csv", exampleCSV, []string{"score", "--nodes", "FILE"}, `--demand is required with --nodes`},
		{"no nodes", "", "", []string{"score", "--demand", "1"}, `no nodes to score: give --nodes FILE or --example`},
		{"both sources", "n.csv", exampleCSV, []string{"score", "--nodes", "FILE", "--example"}, `--example and --nodes cannot be used together`},
		{"bad plot extension", "", "", []string{"score", "--example", "--plot", "PLOTDIR/chart.gif"}, `--plot: unsupported file extension ".gif" (want .svg or .png)`},
		{"unknown flag", "", "", []string{"score", "--example", "--colour"}, `unknown flag: --colour`},
		{"extra argument", "", "", []string{"score", "--example", "node1"}, `meridian score takes no arguments, got ["node1"]`},
		{"unknown model", "", "", []string{"score", "--example", "--model", "best"}, `--model: field "model": unknown model "best" (want cost-efficiency or weighted)`},
		{"unknown efficiency", "", "", []string{"score", "--example", "--efficiency", "cubic"}, `--efficiency: field "efficiency": unknown efficiency function "cubic"`},
		{"lambda without weighted", "", "", []string{"score", "--example", "--model", "cost-efficiency", "--lambda", "1"}, `--lambda is for --model weighted, not --model cost-efficiency`},
		{"negative lambda", "", "", []string{"score", "--example", "--lambda", "-1"}, `--lambda: must not be negative, got -1`},
		{"negative storage", "", "", []string{"score", "--example", "--storage", "-1"}, `--storage: must not be negative, got -1`},
		{"unknown command", "", "", []string{"frobnicate"}, `unknown command "frobnicate" for "meridian"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plotDir := t.TempDir()
			args := tt.args
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file, tt.content)
			}
			if args == nil {
				args = []string{"score", "--nodes", path, "--demand", "100", "--plot", filepath.Join(plotDir, "chart.svg")}
			}
			args = append([]string(nil), args...)
			for i := range args {
				args[i] = strings.ReplaceAll(args[i], "FILE", path)
				args[i] = strings.ReplaceAll(args[i], "PLOTDIR", plotDir)
			}
			r := runMeridian(t, "", args...)
			if r.code != 2 {
				t.Errorf("exit code %d; want 2 (stderr %q)", r.code, r.stderr)
			}
			first, _, _ := strings.Cut(r.stderr, "\n")
			if !strings.HasPrefix(first, "meridian: ") || !strings.Contains(first, tt.want) {
				t.Errorf("stderr first line = %q; want \"meridian: ...%s...\"", first, tt.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q; want nothing", r.stdout)
			}
			if entries, _ := os.ReadDir(plotDir); len(entries) != 0 {
				t.Errorf("a chart was written for bad input")
			}
		})
	}
}

// TestScoreNoFeasibleNode: a demand no node can serve is reported in full
// and exits 1: the input was fine, the placement failed.
func TestScoreNoFeasibleNode(t *testing.T) {
	r := runMeridian(t, "", "score", "--example", "--demand", "250")
	if r.code != 1 {
		t.Errorf("exit code %d; want 1", r.code)
	}
	rows := tableRows(t, r.stdout)
	if len(rows) != 3 || rows[0].decision != "rejected" || rows[0].score != "-" {
		t.Errorf("rows = %+v", rows)
	}
	if !strings.Contains(r.stdout, "needs 250 tasks/h of compute, 200 free") || !strings.Contains(r.stdout, "Chosen: none") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
	if r.stderr != "meridian: no node can take the demand: no feasible node: 3 rejected by resources\n" {
		t.Errorf("stderr = %q", r.stderr)
	}
}

func TestVersion(t *testing.T) {
	old := version
	t.Cleanup(func() { version = old })
	version = "v1.2.3"
	r := runMeridian(t, "", "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "meridian v1.2.3 (go") {
		t.Errorf("version: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestRootHelp(t *testing.T) {
	r := runMeridian(t, "")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"Meridian", "score", "version"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runMeridian(t, "", "score", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "Tie-break (as in the output): higher score first") || !strings.Contains(r.stdout, "--plot FILE") {
		t.Errorf("score --help: exit %d\n%s", r.code, r.stdout)
	}
}
