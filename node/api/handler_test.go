package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/node/api/apitest"
	"github.com/meridian-mesh/meridian/placement"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return t0 }

const validJob = `{"id":"train-1","origin_region":"us-east-1","demand":{"compute":100,"storage_gb":50,"bandwidth_gbs":1}}`

// fixture is a handler over an in-memory service, with its registry and log.
type fixture struct {
	svc *apitest.Service
	h   http.Handler
	reg *prometheus.Registry
	log *bytes.Buffer
}

func newFixture(t *testing.T, opts api.Options) *fixture {
	t.Helper()
	f := &fixture{
		svc: apitest.New(fixedNow, "us-east-1", "eu-west-1", "ap-south-1"),
		reg: prometheus.NewRegistry(),
		log: &bytes.Buffer{},
	}
	if opts.Metrics == nil {
		opts.Metrics = f.reg
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f.h = api.NewHandler(f.svc, opts)
	return f
}

type req struct {
	method, path, body string
	header             map[string]string
}

func (f *fixture) do(t *testing.T, r req) *httptest.ResponseRecorder {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr := httptest.NewRequest(r.method, r.path, body)
	if r.body != "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		if v == "" {
			hr.Header.Del(k)
		} else {
			hr.Header.Set(k, v)
		}
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, hr)
	return rec
}

func errorBody(t *testing.T, rec *httptest.ResponseRecorder) api.ErrorResponse {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q; want application/json (body %s)", ct, rec.Body)
	}
	var e api.ErrorResponse
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error body does not decode: %v", err)
	}
	if e.Error == "" || e.Message == "" {
		t.Fatalf("error body %+v lacks error or message", e)
	}
	return e
}

func decodeBody[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decoding %T from %s: %v", v, rec.Body, err)
	}
	return v
}

// jobWith returns a job body with id j1, origin us-east-1 and the given fields.
func jobWith(fields string) string {
	return `{"id":"j1","origin_region":"us-east-1",` + fields + `}`
}

// TestSubmitValidation covers every way a submit body can be refused, and
// checks the field each refusal names.
func TestSubmitValidation(t *testing.T) {
	demand := `"demand":{"compute":10}`
	long := strings.Repeat("a", 129)
	cases := []struct {
		name      string
		body      string
		header    map[string]string
		wantCode  int
		wantField string
		wantMsg   string // a substring of the message
	}{
		{"unknown top-level field", jobWith(demand + `,"colour":"red"`), nil, 400, "colour", "unknown field"},
		{"unknown nested field", jobWith(`"demand":{"compute":10,"cpus":4}`), nil, 400, "demand.cpus", "unknown field"},
		{"key in the wrong case", `{"ID":"j1","origin_region":"us-east-1",` + demand + `}`, nil, 400, "ID", "unknown field"},
		{"duplicate key", jobWith(demand + `,"id":"j2"`), nil, 400, "id", "more than once"},
		{"compute as a string", jobWith(`"demand":{"compute":"ten"}`), nil, 400, "demand.compute", "must be a number, got string"},
		{"gpus fractional", jobWith(`"demand":{"compute":1,"gpus":1.5}`), nil, 400, "demand.gpus", "must be an integer, got 1.5"},
		{"demand as an array", jobWith(`"demand":[1]`), nil, 400, "demand", "must be an object, got array"},
		{"id as a number", `{"id":7,"origin_region":"us-east-1",` + demand + `}`, nil, 400, "id", "must be a string"},
		{"command element not a string", jobWith(demand + `,"driver":"exec","command":["sh",1]`), nil, 400, "command[1]", "must be a string"},
		{"env value not a string", jobWith(demand + `,"driver":"exec","command":["true"],"env":{"A":1}`), nil, 400, "env.A", "must be a string"},
		{"duration overflows int64", jobWith(demand + `,"duration_s":1e30`), nil, 400, "duration_s", "must be an integer"},
		{"compute overflows float64", jobWith(`"demand":{"compute":1e400}`), nil, 400, "demand.compute", "within range"},
		{"compute zero", jobWith(`"demand":{"compute":0}`), nil, 400, "demand.compute", "greater than zero"},
		{"demand missing", jobWith(`"priority":3`), nil, 400, "demand.compute", "greater than zero"},
		{"demand null", jobWith(`"demand":null`), nil, 400, "demand.compute", "greater than zero"},
		{"compute negative", jobWith(`"demand":{"compute":-5}`), nil, 400, "demand.compute", "must not be negative"},
		{"storage negative", jobWith(`"demand":{"compute":1,"storage_gb":-1}`), nil, 400, "demand.storage_gb", "negative"},
		{"bandwidth absurd", jobWith(`"demand":{"compute":1,"bandwidth_gbs":1e7}`), nil, 400, "demand.bandwidth_gbs", "at most"},
		{"compute absurd", jobWith(`"demand":{"compute":1e12}`), nil, 400, "demand.compute", "at most"},
		{"gpus negative", jobWith(`"demand":{"compute":1,"gpus":-1}`), nil, 400, "demand.gpus", "between 0"},
		{"gpus absurd", jobWith(`"demand":{"compute":1,"gpus":100000}`), nil, 400, "demand.gpus", "between 0"},
		{"slo negative", jobWith(demand + `,"latency_slo_ms":-1`), nil, 400, "latency_slo_ms", "between 0"},
		{"slo absurd", jobWith(demand + `,"latency_slo_ms":20000`), nil, 400, "latency_slo_ms", "between 0"},
		{"price negative", jobWith(demand + `,"max_price_per_hour":-0.5`), nil, 400, "max_price_per_hour", "negative"},
		{"price absurd", jobWith(demand + `,"max_price_per_hour":1e9`), nil, 400, "max_price_per_hour", "at most"},
		{"priority too high", jobWith(demand + `,"priority":101`), nil, 400, "priority", "between 1 and 100"},
		{"priority negative", jobWith(demand + `,"priority":-1`), nil, 400, "priority", "between 1 and 100"},
		{"duration negative", jobWith(demand + `,"duration_s":-60`), nil, 400, "duration_s", "between 0"},
		{"duration over 30 days", jobWith(demand + `,"duration_s":2592001`), nil, 400, "duration_s", "30 days"},
		{"id missing", `{"origin_region":"us-east-1",` + demand + `}`, nil, 400, "id", "required"},
		{"id with a slash", `{"id":"a/b","origin_region":"us-east-1",` + demand + `}`, nil, 400, "id", "letters, digits"},
		{"id too long", `{"id":"` + long + `","origin_region":"us-east-1",` + demand + `}`, nil, 400, "id", "at most 128"},
		{"id dot-dot", `{"id":"..","origin_region":"us-east-1",` + demand + `}`, nil, 400, "id", `must not be ".."`},
		{"origin missing", `{"id":"j1",` + demand + `}`, nil, 400, "origin_region", "required"},
		{"origin unknown to the service", `{"id":"j1","origin_region":"mars-1",` + demand + `}`, nil, 400, "origin_region", "unknown region"},
		{"home unknown to the service", jobWith(demand + `,"home_region":"moon-1"`), nil, 400, "home_region", "unknown region"},
		{"gpu type without gpus", jobWith(demand + `,"gpu_type":"H100"`), nil, 400, "gpu_type", "demand.gpus"},
		{"unknown driver", jobWith(demand + `,"driver":"docker"`), nil, 400, "driver", `"sim" or "exec"`},
		{"exec without command", jobWith(demand + `,"driver":"exec"`), nil, 400, "command", "required"},
		{"exec with empty program", jobWith(demand + `,"driver":"exec","command":[""]`), nil, 400, "command[0]", "program"},
		{"exec with NUL in argument", jobWith(demand + `,"driver":"exec","command":["echo","a\u0000b"]`), nil, 400, "command[1]", "NUL"},
		{"sim with command", jobWith(demand + `,"command":["true"]`), nil, 400, "command", "only allowed"},
		{"reserved env name", jobWith(demand + `,"driver":"exec","command":["true"],"env":{"MERIDIAN_JOB_ID":"x"}`), nil, 400, "env.MERIDIAN_JOB_ID", "reserved"},
		{"bad env name", jobWith(demand + `,"driver":"exec","command":["true"],"env":{"1A":"x"}`), nil, 400, "env.1A", "name must match"},
		{"malformed JSON", `{"id":`, nil, 400, "", "invalid JSON"},
		{"not JSON", `hello`, nil, 400, "", "invalid JSON"},
		{"empty body", ``, map[string]string{"Content-Type": "application/json"}, 400, "", "empty"},
		{"trailing garbage", validJob + ` x`, nil, 400, "", "after the JSON value"},
		{"two objects", validJob + validJob, nil, 400, "", "after the JSON value"},
		{"array body", `[` + validJob + `]`, nil, 400, "", "must be an object, got array"},
		{"wrong content type", validJob, map[string]string{"Content-Type": "text/plain"}, 415, "", "application/json"},
		{"form content type", validJob, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "", "application/json"},
		{"unknown query parameter", validJob, nil, 400, "dry_run", "unknown query parameter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, api.Options{})
			path := "/v1/jobs"
			if tc.wantField == "dry_run" {
				path += "?dry_run=1"
			}
			rec := f.do(t, req{method: "POST", path: path, body: tc.body, header: tc.header})
			if rec.Code != tc.wantCode {
				t.Fatalf("POST %s = %d; want %d (body %s)", tc.body, rec.Code, tc.wantCode, rec.Body)
			}
			e := errorBody(t, rec)
			if e.Field != tc.wantField || !strings.Contains(e.Message, tc.wantMsg) {
				t.Errorf("error = %+v; want field %q and a message containing %q", e, tc.wantField, tc.wantMsg)
			}
			if list, _ := f.svc.Jobs(context.Background(), api.JobFilter{}); len(list.Jobs) != 0 {
				t.Errorf("a refused submit stored %d jobs", len(list.Jobs))
			}
		})
	}
}

func TestSubmitIdempotentAndConflict(t *testing.T) {
	f := newFixture(t, api.Options{})
	rec := f.do(t, req{method: "POST", path: "/v1/jobs", body: validJob})
	if rec.Code != http.StatusCreated {
		t.Fatalf("first submit = %d; want 201 (%s)", rec.Code, rec.Body)
	}
	if loc := rec.Header().Get("Location"); loc != "/v1/jobs/train-1" {
		t.Errorf("Location = %q; want /v1/jobs/train-1", loc)
	}
	st := decodeBody[api.JobStatus](t, rec)
	if st.ID != "train-1" || st.State != api.JobPending || !st.SubmittedAt.Equal(t0) {
		t.Errorf("status = %+v; want train-1 pending submitted at %v", st, t0)
	}
	// The handler hands the service the spec with its defaults applied.
	if st.Spec == nil || st.Spec.HomeRegion != "us-east-1" || st.Spec.Driver != api.DriverSim || st.Spec.Priority != api.DefaultPriority {
		t.Errorf("spec = %+v; want home us-east-1, driver sim, priority %d", st.Spec, api.DefaultPriority)
	}

	// The same job again, spelled differently but equal once normalized.
	same := `{"demand":{"bandwidth_gbs":1,"compute":100,"storage_gb":50},"origin_region":"us-east-1","home_region":"us-east-1","id":"train-1","driver":"sim","priority":50}`
	rec = f.do(t, req{method: "POST", path: "/v1/jobs", body: same})
	if rec.Code != http.StatusOK {
		t.Fatalf("repeated submit = %d; want 200 (%s)", rec.Code, rec.Body)
	}
	if rec.Header().Get("Location") != "" {
		t.Errorf("a 200 carries Location %q", rec.Header().Get("Location"))
	}

	rec = f.do(t, req{method: "POST", path: "/v1/jobs", body: strings.Replace(validJob, `"compute":100`, `"compute":101`, 1)})
	if rec.Code != http.StatusConflict {
		t.Fatalf("conflicting submit = %d; want 409 (%s)", rec.Code, rec.Body)
	}
	if e := errorBody(t, rec); e.Error != api.CodeConflict || !strings.Contains(e.Message, "train-1") {
		t.Errorf("conflict error = %+v", e)
	}
}

func TestBodyLimit(t *testing.T) {
	f := newFixture(t, api.Options{MaxBodyBytes: 256})
	big := jobWith(`"demand":{"compute":1},"gpu_type":"` + strings.Repeat("x", 300) + `"`)

	rec := f.do(t, req{method: "POST", path: "/v1/jobs", body: big})
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body with Content-Length = %d; want 413", rec.Code)
	}
	if e := errorBody(t, rec); e.Error != api.CodeTooLarge || !strings.Contains(e.Message, "256") {
		t.Errorf("error = %+v", e)
	}

	// Without a Content-Length (chunked), the limit is hit while reading.
	hr := httptest.NewRequest("POST", "/v1/jobs", io.MultiReader(strings.NewReader(big)))
	hr.ContentLength = -1
	hr.Header.Set("Content-Type", "application/json")
	rec = httptest.NewRecorder()
	f.h.ServeHTTP(rec, hr)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized chunked body = %d; want 413 (%s)", rec.Code, rec.Body)
	}

	// A body within the limit passes, and no Content-Type means JSON.
	rec = f.do(t, req{method: "POST", path: "/v1/jobs", body: validJob, header: map[string]string{"Content-Type": ""}})
	if rec.Code != http.StatusCreated {
		t.Fatalf("small body = %d; want 201 (%s)", rec.Code, rec.Body)
	}
}

func TestJobEndpoints(t *testing.T) {
	f := newFixture(t, api.Options{})
	for _, id := range []string{"c", "a", "e", "b", "d"} {
		body := strings.Replace(validJob, "train-1", id, 1)
		if id == "d" || id == "e" {
			body = strings.Replace(body, "us-east-1", "eu-west-1", 1)
		}
		if rec := f.do(t, req{method: "POST", path: "/v1/jobs", body: body}); rec.Code != 201 {
			t.Fatalf("submit %s = %d (%s)", id, rec.Code, rec.Body)
		}
	}
	f.svc.UpdateJob("b", func(st *api.JobStatus) {
		st.State, st.Node, st.Region = api.JobTraded, "n7", "ap-south-1"
	})

	ids := func(rec *httptest.ResponseRecorder) string {
		t.Helper()
		if rec.Code != 200 {
			t.Fatalf("status %d (%s)", rec.Code, rec.Body)
		}
		list := decodeBody[api.JobList](t, rec)
		var out []string
		for _, j := range list.Jobs {
			out = append(out, j.ID)
		}
		return strings.Join(out, ",") + "|" + list.NextCursor
	}
	for _, tc := range []struct{ query, want string }{
		{"", "a,b,c,d,e|"},
		{"?limit=2", "a,b|b"},
		{"?limit=2&cursor=b", "c,d|d"},
		{"?limit=2&cursor=d", "e|"},
		{"?state=traded", "b|"},
		{"?region=eu-west-1", "d,e|"},
		{"?region=ap-south-1", "b|"}, // where it runs counts too
		{"?state=completed", "|"},
	} {
		if got := ids(f.do(t, req{method: "GET", path: "/v1/jobs" + tc.query})); got != tc.want {
			t.Errorf("GET /v1/jobs%s = %q; want %q", tc.query, got, tc.want)
		}
	}
	// An empty page is [] on the wire, never null.
	if rec := f.do(t, req{method: "GET", path: "/v1/jobs?state=failed"}); !strings.Contains(rec.Body.String(), `"jobs":[]`) {
		t.Errorf("empty list body = %s; want \"jobs\":[]", rec.Body)
	}

	for _, tc := range []struct{ query, field string }{
		{"?state=done", "state"},
		{"?limit=0", "limit"},
		{"?limit=1001", "limit"},
		{"?limit=ten", "limit"},
		{"?region=us%20east", "region"},
		{"?sate=running", "sate"},
		{"?state=running&state=failed", "state"},
	} {
		rec := f.do(t, req{method: "GET", path: "/v1/jobs" + tc.query})
		if rec.Code != 400 {
			t.Errorf("GET /v1/jobs%s = %d; want 400", tc.query, rec.Code)
			continue
		}
		if e := errorBody(t, rec); e.Field != tc.field {
			t.Errorf("GET /v1/jobs%s names field %q; want %q", tc.query, e.Field, tc.field)
		}
	}

	rec := f.do(t, req{method: "GET", path: "/v1/jobs/b"})
	if st := decodeBody[api.JobStatus](t, rec); rec.Code != 200 || st.ID != "b" || st.Node != "n7" {
		t.Errorf("GET /v1/jobs/b = %d %+v", rec.Code, st)
	}
	rec = f.do(t, req{method: "GET", path: "/v1/jobs/nope"})
	if e := errorBody(t, rec); rec.Code != 404 || e.Error != api.CodeNotFound || !strings.Contains(e.Message, `"nope"`) {
		t.Errorf("GET unknown job = %d %+v; want 404 naming the job", rec.Code, e)
	}
	rec = f.do(t, req{method: "GET", path: "/v1/jobs/a%2Fb"})
	if e := errorBody(t, rec); rec.Code != 400 || e.Field != "id" {
		t.Errorf("GET an invalid ID = %d %+v; want 400 on id", rec.Code, e)
	}

	rec = f.do(t, req{method: "DELETE", path: "/v1/jobs/c"})
	if st := decodeBody[api.JobStatus](t, rec); rec.Code != 200 || st.State != api.JobCancelled {
		t.Errorf("DELETE /v1/jobs/c = %d %+v; want 200 cancelled", rec.Code, st)
	}
	rec = f.do(t, req{method: "DELETE", path: "/v1/jobs/c"})
	if st := decodeBody[api.JobStatus](t, rec); rec.Code != 200 || st.State != api.JobCancelled {
		t.Errorf("second DELETE = %d %+v; want 200 cancelled (idempotent)", rec.Code, st)
	}
	if rec := f.do(t, req{method: "DELETE", path: "/v1/jobs/nope"}); rec.Code != 404 {
		t.Errorf("DELETE unknown job = %d; want 404", rec.Code)
	}
}

func TestMeshEndpoints(t *testing.T) {
	f := newFixture(t, api.Options{})
	// Empty views are empty JSON lists and objects.
	for path, want := range map[string]string{
		"/v1/nodes":       `{"nodes":[]}`,
		"/v1/trades":      `{"trades":[]}`,
		"/v1/allocations": `{"allocations":[]}`,
		"/v1/regions":     `{"regions":[],"rtt_ms":{}}`,
	} {
		rec := f.do(t, req{method: "GET", path: path})
		if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != want {
			t.Errorf("GET %s = %d %s; want 200 %s", path, rec.Code, rec.Body, want)
		}
	}

	rtt := 71.5
	f.svc.SetNodes([]api.NodeStatus{
		{Name: "n2", Region: "us-east-1", State: api.MemberAlive, Total: placement.Resources{ComputePerHour: 200}, PricePerHour: 10},
		{Name: "n1", Region: "eu-west-1", State: api.MemberSuspect, RTTMs: &rtt, Leader: true},
	})
	f.svc.SetRegions(api.RegionsView{
		Regions: []api.RegionSummary{{Region: "eu-west-1", Members: api.MemberCounts{Suspect: 1}, Leader: "n1"}},
		RTTMs:   map[string]map[string]float64{"eu-west-1": {"us-east-1": 71.5}},
	})
	f.svc.SetAllocations([]api.Allocation{
		{ID: "a2", JobID: "j2", Node: "n1", Region: "eu-west-1", State: api.AllocRunning},
		{ID: "a1", JobID: "j1", Node: "n2", Region: "us-east-1", State: api.AllocCompleted},
	})
	f.svc.SetTrades([]api.Trade{{ID: "t1", JobID: "j2", BuyerRegion: "us-east-1", SellerRegion: "eu-west-1", State: api.TradeCommitted}})

	nodes := decodeBody[api.NodeList](t, f.do(t, req{method: "GET", path: "/v1/nodes"}))
	if len(nodes.Nodes) != 2 || nodes.Nodes[0].Name != "n1" || *nodes.Nodes[0].RTTMs != 71.5 || nodes.Nodes[1].Total.ComputePerHour != 200 {
		t.Errorf("nodes = %+v", nodes)
	}
	view := decodeBody[api.RegionsView](t, f.do(t, req{method: "GET", path: "/v1/regions"}))
	if len(view.Regions) != 1 || view.Regions[0].Leader != "n1" || view.RTTMs["eu-west-1"]["us-east-1"] != 71.5 {
		t.Errorf("regions = %+v", view)
	}
	for query, want := range map[string]string{"": "a1,a2", "?job=j2": "a2", "?node=n2": "a1", "?region=eu-west-1": "a2", "?state=completed": "a1", "?job=j9": ""} {
		list := decodeBody[api.AllocationList](t, f.do(t, req{method: "GET", path: "/v1/allocations" + query}))
		var got []string
		for _, a := range list.Allocations {
			got = append(got, a.ID)
		}
		if strings.Join(got, ",") != want {
			t.Errorf("GET /v1/allocations%s = %v; want %s", query, got, want)
		}
	}
	for query, field := range map[string]string{"?state=gone": "state", "?job=a%2Fb": "job", "?jobs=x": "jobs"} {
		rec := f.do(t, req{method: "GET", path: "/v1/allocations" + query})
		if e := errorBody(t, rec); rec.Code != 400 || e.Field != field {
			t.Errorf("GET /v1/allocations%s = %d %+v; want 400 on %s", query, rec.Code, e, field)
		}
	}
	trades := decodeBody[api.TradeList](t, f.do(t, req{method: "GET", path: "/v1/trades"}))
	if len(trades.Trades) != 1 || trades.Trades[0].State != api.TradeCommitted {
		t.Errorf("trades = %+v", trades)
	}
	if rec := f.do(t, req{method: "GET", path: "/v1/nodes?region=x"}); rec.Code != 400 {
		t.Errorf("GET /v1/nodes?region=x = %d; want 400 (no such parameter)", rec.Code)
	}
}

func TestHealth(t *testing.T) {
	f := newFixture(t, api.Options{Token: "s3cret"})
	f.svc.SetHealth(api.Health{Status: api.HealthOK, Node: "n1", Region: "us-east-1", Role: "leader", Leader: "n1", RaftState: "Leader", Members: api.MemberCounts{Alive: 3}})
	// Health stays open to probes even with an ACL.
	rec := f.do(t, req{method: "GET", path: "/v1/health"})
	if hl := decodeBody[api.Health](t, rec); rec.Code != 200 || hl.Role != "leader" || hl.Members.Alive != 3 {
		t.Errorf("GET /v1/health = %d %+v", rec.Code, hl)
	}
	f.svc.SetHealth(api.Health{Status: api.HealthDegraded})
	if rec := f.do(t, req{method: "GET", path: "/v1/health"}); rec.Code != 200 {
		t.Errorf("degraded health = %d; want 200", rec.Code)
	}
	f.svc.SetHealth(api.Health{Status: api.HealthUnavailable, RaftState: "Shutdown"})
	rec = f.do(t, req{method: "GET", path: "/v1/health"})
	if hl := decodeBody[api.Health](t, rec); rec.Code != 503 || hl.RaftState != "Shutdown" || rec.Header().Get("Retry-After") == "" {
		t.Errorf("unavailable health = %d %+v Retry-After %q; want 503 with the health body", rec.Code, hl, rec.Header().Get("Retry-After"))
	}
	rec = f.do(t, req{method: "HEAD", path: "/v1/health"})
	if rec.Code != 503 || rec.Body.Len() != 0 {
		t.Errorf("HEAD /v1/health = %d with %d body bytes; want 503 and no body", rec.Code, rec.Body.Len())
	}
}

func TestACL(t *testing.T) {
	f := newFixture(t, api.Options{Token: "s3cret"})
	cases := []struct {
		name, path, auth string
		want             int
	}{
		{"no header", "/v1/jobs", "", 401},
		{"basic auth", "/v1/jobs", "Basic czNjcmV0", 401},
		{"bearer without token", "/v1/jobs", "Bearer ", 401},
		{"wrong token", "/v1/jobs", "Bearer guess", 403},
		{"token prefix", "/v1/jobs", "Bearer s3cre", 403},
		{"right token", "/v1/jobs", "Bearer s3cret", 200},
		{"scheme in lower case", "/v1/nodes", "bearer s3cret", 200},
		{"metrics need the token", "/metrics", "", 401},
		{"metrics with the token", "/metrics", "Bearer s3cret", 200},
		{"unknown path needs the token", "/v1/secret", "", 401},
		{"unknown path with the token", "/v1/secret", "Bearer s3cret", 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := f.do(t, req{method: "GET", path: tc.path, header: map[string]string{"Authorization": tc.auth}})
			if rec.Code != tc.want {
				t.Fatalf("GET %s with %q = %d; want %d (%s)", tc.path, tc.auth, rec.Code, tc.want, rec.Body)
			}
			switch tc.want {
			case 401:
				if e := errorBody(t, rec); e.Error != api.CodeUnauthorized {
					t.Errorf("error = %+v", e)
				}
				if rec.Header().Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
			case 403:
				if e := errorBody(t, rec); e.Error != api.CodeForbidden {
					t.Errorf("error = %+v", e)
				}
			}
		})
	}
	// A refused write stores nothing.
	rec := f.do(t, req{method: "POST", path: "/v1/jobs", body: validJob, header: map[string]string{"Authorization": "Bearer guess"}})
	if rec.Code != 403 {
		t.Fatalf("POST with a wrong token = %d; want 403", rec.Code)
	}
	if _, err := f.svc.Job(context.Background(), "train-1"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("a refused submit was stored: %v", err)
	}
}

func TestRouting(t *testing.T) {
	f := newFixture(t, api.Options{})
	for _, tc := range []struct {
		method, path string
		want         int
		allow        string
	}{
		{"PUT", "/v1/jobs", 405, "GET, HEAD, POST"},
		{"PATCH", "/v1/jobs/x", 405, "DELETE, GET, HEAD"},
		{"POST", "/v1/nodes", 405, "GET, HEAD"},
		{"DELETE", "/v1/health", 405, "GET, HEAD"},
		{"GET", "/v1/job", 404, ""},
		{"GET", "/v1/jobs/", 404, ""},
		{"GET", "/v2/jobs", 404, ""},
		{"GET", "/", 404, ""},
	} {
		rec := f.do(t, req{method: tc.method, path: tc.path})
		if rec.Code != tc.want {
			t.Errorf("%s %s = %d; want %d", tc.method, tc.path, rec.Code, tc.want)
			continue
		}
		e := errorBody(t, rec)
		if got := rec.Header().Get("Allow"); got != tc.allow {
			t.Errorf("%s %s Allow = %q; want %q", tc.method, tc.path, got, tc.allow)
		}
		if tc.want == 405 && e.Error != api.CodeMethodNotAllowed {
			t.Errorf("%s %s error = %+v", tc.method, tc.path, e)
		}
	}
	rec := f.do(t, req{method: "GET", path: "/v1/jobs?pretty"})
	if !strings.Contains(rec.Body.String(), "\n  \"jobs\": []") {
		t.Errorf("?pretty body = %q; want indented JSON", rec.Body)
	}
}

// TestErrorMapping checks the status each Service error becomes.
func TestErrorMapping(t *testing.T) {
	cases := []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
		wantField  string
		wantMsg    string
	}{
		{"not found", fmt.Errorf("job %q: %w", "x", api.ErrNotFound), 404, api.CodeNotFound, "", `job "x": not found`},
		{"conflict", fmt.Errorf("job x: %w", api.ErrConflict), 409, api.CodeConflict, "", "job x"},
		{"no leader", fmt.Errorf("region us-east-1: %w", api.ErrNoLeader), 503, api.CodeNoLeader, "", "us-east-1"},
		{"unavailable", fmt.Errorf("shutting down: %w", api.ErrUnavailable), 503, api.CodeUnavailable, "", "shutting down"},
		{"field error", &api.FieldError{Field: "origin_region", Message: "no such region"}, 400, api.CodeInvalid, "origin_region", "no such region"},
		{"placement field error", fmt.Errorf("placing: %w", &placement.FieldError{Field: "demand.gpus", Reason: "no node has that many"}), 400, api.CodeInvalid, "demand.gpus", "no node"},
		{"deadline", fmt.Errorf("waiting for commit: %w", context.DeadlineExceeded), 504, api.CodeTimeout, "", "timed out"},
		{"internal", errors.New("bolt: database corrupted at page 7"), 500, api.CodeInternal, "", "internal error"},
		{"forwarded 404", &api.Error{StatusCode: 404, Code: api.CodeNotFound, Message: "job y not found"}, 404, api.CodeNotFound, "", "job y not found"},
		{"forwarded 400", &api.Error{StatusCode: 400, Code: api.CodeInvalid, Field: "demand.compute", Message: "too big"}, 400, api.CodeInvalid, "demand.compute", "too big"},
		{"forwarded 500", &api.Error{StatusCode: 500, Code: api.CodeInternal, Message: "internal error"}, 502, api.CodeBadGateway, "", "internal error"},
		{"forwarded 503", &api.Error{StatusCode: 503, Code: api.CodeNoLeader, Message: "no leader"}, 503, api.CodeNoLeader, "", "no leader"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, api.Options{})
			for _, m := range []string{"Job", "SubmitJob", "Nodes"} {
				f.svc.FailWith(m, tc.err)
			}
			for _, r := range []req{
				{method: "GET", path: "/v1/jobs/x"},
				{method: "POST", path: "/v1/jobs", body: validJob},
				{method: "GET", path: "/v1/nodes"},
			} {
				rec := f.do(t, r)
				if rec.Code != tc.wantStatus {
					t.Fatalf("%s %s = %d; want %d (%s)", r.method, r.path, rec.Code, tc.wantStatus, rec.Body)
				}
				e := errorBody(t, rec)
				if e.Error != tc.wantCode || e.Field != tc.wantField || !strings.Contains(e.Message, tc.wantMsg) {
					t.Errorf("%s %s error = %+v; want code %q field %q message ~%q", r.method, r.path, e, tc.wantCode, tc.wantField, tc.wantMsg)
				}
				if (tc.wantStatus == 503) != (rec.Header().Get("Retry-After") != "") {
					t.Errorf("%s %s: status %d with Retry-After %q", r.method, r.path, rec.Code, rec.Header().Get("Retry-After"))
				}
			}
			if tc.wantStatus == 500 {
				if !strings.Contains(f.log.String(), "corrupted") {
					t.Errorf("the internal error is not logged: %s", f.log)
				}
			}
		})
	}
}

// TestRequestTimeout: a Service that waits past the handler's deadline is
// answered with 504.
func TestRequestTimeout(t *testing.T) {
	f := newFixture(t, api.Options{RequestTimeout: 20 * time.Millisecond})
	f.svc.SetHook("SubmitJob", func(ctx context.Context) error {
		<-ctx.Done() // a commit that never completes
		return fmt.Errorf("waiting for the raft commit: %w", ctx.Err())
	})
	rec := f.do(t, req{method: "POST", path: "/v1/jobs", body: validJob})
	if e := errorBody(t, rec); rec.Code != 504 || e.Error != api.CodeTimeout {
		t.Errorf("stuck submit = %d %+v; want 504 timeout", rec.Code, e)
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, api.Options{})
	f.do(t, req{method: "POST", path: "/v1/jobs", body: validJob})
	f.do(t, req{method: "GET", path: "/v1/jobs/train-1"})
	f.do(t, req{method: "GET", path: "/v1/jobs/nope"})
	f.do(t, req{method: "PUT", path: "/v1/jobs"})
	rec := f.do(t, req{method: "GET", path: "/metrics"})
	if rec.Code != 200 {
		t.Fatalf("GET /metrics = %d", rec.Code)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`meridian_http_requests_total{code="201",method="POST",route="/v1/jobs"} 1`,
		`meridian_http_requests_total{code="200",method="GET",route="/v1/jobs/{id}"} 1`,
		`meridian_http_requests_total{code="404",method="GET",route="/v1/jobs/{id}"} 1`,
		`meridian_http_requests_total{code="405",method="PUT",route="/v1/jobs"} 1`,
		`meridian_http_request_duration_seconds_count{method="GET",route="/v1/jobs/{id}"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !strings.Contains(f.log.String(), "route=/v1/jobs/{id} status=404") {
		t.Errorf("no debug log line for the 404: %s", f.log)
	}

	// Two handlers on one registry share the collectors instead of failing.
	api.NewHandler(f.svc, api.Options{Metrics: f.reg})

	// Without a gatherer there is no /metrics.
	h := api.NewHandler(f.svc, api.Options{})
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Errorf("GET /metrics without Metrics = %d; want 404", rec.Code)
	}
}

func TestMetricsRouteOfRefusedRequests(t *testing.T) {
	f := newFixture(t, api.Options{Token: "s3cret"})
	f.do(t, req{method: "GET", path: "/v1/jobs/x"})
	rec := f.do(t, req{method: "GET", path: "/metrics", header: map[string]string{"Authorization": "Bearer s3cret"}})
	if want := `meridian_http_requests_total{code="401",method="GET",route="/v1/jobs/{id}"} 1`; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("/metrics lacks %s", want)
	}
}

// BenchmarkSubmit measures a submit through the handler: strict decoding,
// validation, the in-memory service and the JSON answer.
func BenchmarkSubmit(b *testing.B) {
	svc := apitest.New(fixedNow)
	h := api.NewHandler(svc, api.Options{Metrics: prometheus.NewRegistry()})
	body := []byte(`{"id":"ID","origin_region":"us-east-1","demand":{"compute":100,"storage_gb":50,"bandwidth_gbs":1,"gpus":1},"gpu_type":"H100","latency_slo_ms":80,"duration_s":3600}`)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		r := httptest.NewRequest("POST", "/v1/jobs", bytes.NewReader(bytes.Replace(body, []byte(`"ID"`), []byte(fmt.Sprintf(`"j%d"`, i)), 1)))
		r.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusCreated {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}
