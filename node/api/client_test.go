package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/node/api/apitest"
	"github.com/meridian-mesh/meridian/placement"
)

// handlerTransport carries requests to an http.Handler in memory: real
// requests and responses, no sockets.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

func newClient(t *testing.T, h http.Handler, addr, token string) *api.Client {
	t.Helper()
	c, err := api.NewClient(addr, token, &http.Client{Transport: handlerTransport{h}})
	if err != nil {
		t.Fatalf("NewClient(%q) = %v", addr, err)
	}
	return c
}

func TestClientCalls(t *testing.T) {
	ctx := context.Background()
	svc := apitest.New(fixedNow, "us-east-1", "eu-west-1")
	c := newClient(t, api.NewHandler(svc, api.Options{Token: "tok"}), "agent.example:4646", "tok")

	spec := api.JobSpec{ID: "j1", OriginRegion: "us-east-1", Demand: placement.Resources{ComputePerHour: 10}}
	st, created, err := c.SubmitJob(ctx, spec)
	if err != nil || !created || st.State != api.JobPending {
		t.Fatalf("SubmitJob = %+v, %v, %v; want a created pending job", st, created, err)
	}
	if _, created, err = c.SubmitJob(ctx, spec); err != nil || created {
		t.Fatalf("repeated SubmitJob = created %v, %v; want an existing job", created, err)
	}
	spec2 := spec
	spec2.ID, spec2.OriginRegion = "j2", "eu-west-1"
	if _, _, err := c.SubmitJob(ctx, spec2); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Job(ctx, "j2"); err != nil || st.HomeRegion != "eu-west-1" {
		t.Errorf("Job(j2) = %+v, %v", st, err)
	}
	list, err := c.Jobs(ctx, api.JobFilter{Limit: 1})
	if err != nil || len(list.Jobs) != 1 || list.Jobs[0].ID != "j1" || list.NextCursor != "j1" {
		t.Errorf("Jobs(limit 1) = %+v, %v", list, err)
	}
	list, err = c.Jobs(ctx, api.JobFilter{Limit: 1, Cursor: list.NextCursor})
	if err != nil || len(list.Jobs) != 1 || list.Jobs[0].ID != "j2" || list.NextCursor != "" {
		t.Errorf("Jobs(page 2) = %+v, %v", list, err)
	}
	if list, err = c.Jobs(ctx, api.JobFilter{Region: "eu-west-1", State: api.JobPending}); err != nil || len(list.Jobs) != 1 {
		t.Errorf("Jobs(eu-west-1, pending) = %+v, %v", list, err)
	}
	if st, err := c.CancelJob(ctx, "j1"); err != nil || st.State != api.JobCancelled {
		t.Errorf("CancelJob = %+v, %v", st, err)
	}

	svc.SetNodes([]api.NodeStatus{{Name: "n1", Region: "us-east-1", State: api.MemberAlive}})
	svc.SetRegions(api.RegionsView{Regions: []api.RegionSummary{{Region: "us-east-1"}}, RTTMs: map[string]map[string]float64{"us-east-1": {"eu-west-1": 70}}})
	svc.SetAllocations([]api.Allocation{{ID: "a1", JobID: "j2", Node: "n1"}, {ID: "a2", JobID: "j9", Node: "n1"}})
	svc.SetTrades([]api.Trade{{ID: "t1"}})
	svc.SetHealth(api.Health{Status: api.HealthOK, Node: "n1"})
	if n, err := c.Nodes(ctx); err != nil || len(n) != 1 || n[0].Name != "n1" {
		t.Errorf("Nodes = %+v, %v", n, err)
	}
	if v, err := c.Regions(ctx); err != nil || v.RTTMs["us-east-1"]["eu-west-1"] != 70 {
		t.Errorf("Regions = %+v, %v", v, err)
	}
	if a, err := c.Allocations(ctx, api.AllocationFilter{JobID: "j2"}); err != nil || len(a) != 1 || a[0].ID != "a1" {
		t.Errorf("Allocations(job j2) = %+v, %v", a, err)
	}
	if tr, err := c.Trades(ctx); err != nil || len(tr) != 1 {
		t.Errorf("Trades = %+v, %v", tr, err)
	}
	if h, err := c.Health(ctx); err != nil || h.Node != "n1" {
		t.Errorf("Health = %+v, %v", h, err)
	}
	svc.SetHealth(api.Health{Status: api.HealthUnavailable, Node: "n1"})
	if h, err := c.Health(ctx); err != nil || h.Status != api.HealthUnavailable {
		t.Errorf("Health of an unavailable node = %+v, %v; want its body and no error", h, err)
	}
	raw, code, err := c.Raw(ctx, "GET", "/v1/jobs/j2", nil, nil)
	if err != nil || code != 200 || !strings.HasPrefix(string(raw), `{"id":"j2"`) {
		t.Errorf("Raw = %s, %d, %v", raw, code, err)
	}
}

func TestClientErrors(t *testing.T) {
	ctx := context.Background()
	svc := apitest.New(fixedNow, "us-east-1")
	h := api.NewHandler(svc, api.Options{Token: "tok"})
	c := newClient(t, h, "http://agent:4646", "tok")

	check := func(name string, err error, status int, field string, is ...error) {
		t.Helper()
		var ae *api.Error
		if !errors.As(err, &ae) {
			t.Errorf("%s: error %v is not an *api.Error", name, err)
			return
		}
		if ae.StatusCode != status || ae.Field != field || ae.Message == "" {
			t.Errorf("%s: %+v; want status %d field %q", name, ae, status, field)
		}
		for _, target := range is {
			if !errors.Is(err, target) {
				t.Errorf("%s: errors.Is(%v, %v) = false", name, err, target)
			}
		}
	}
	_, err := c.Job(ctx, "nope")
	check("unknown job", err, 404, "", api.ErrNotFound)
	if errors.Is(err, api.ErrConflict) || errors.Is(err, api.ErrUnavailable) {
		t.Errorf("a 404 matches other sentinels: %v", err)
	}
	_, _, err = c.SubmitJob(ctx, api.JobSpec{ID: "j1", OriginRegion: "us-east-1"})
	check("zero compute", err, 400, "demand.compute", api.ErrInvalid)
	if want := "demand.compute: must be greater than zero (HTTP 400 invalid request)"; err.Error() != want {
		t.Errorf("Error() = %q; want %q", err, want)
	}
	spec := api.JobSpec{ID: "j1", OriginRegion: "us-east-1", Demand: placement.Resources{ComputePerHour: 1}}
	if _, _, err := c.SubmitJob(ctx, spec); err != nil {
		t.Fatal(err)
	}
	spec.Demand.ComputePerHour = 2
	_, _, err = c.SubmitJob(ctx, spec)
	check("conflict", err, 409, "", api.ErrConflict)
	_, err = c.CancelJob(ctx, "a%b")
	check("invalid ID", err, 400, "id", api.ErrInvalid)

	svc.FailWith("Nodes", fmt.Errorf("region us-east-1: %w", api.ErrNoLeader))
	_, err = c.Nodes(ctx)
	check("no leader", err, 503, "", api.ErrNoLeader, api.ErrUnavailable)
	var ae *api.Error
	if errors.As(err, &ae) && ae.RetryAfter != time.Second {
		t.Errorf("RetryAfter = %v; want 1s", ae.RetryAfter)
	}
	svc.FailWith("Nodes", fmt.Errorf("draining: %w", api.ErrUnavailable))
	_, err = c.Nodes(ctx)
	check("unavailable", err, 503, "", api.ErrUnavailable)
	if errors.Is(err, api.ErrNoLeader) {
		t.Error("a plain 503 matches ErrNoLeader")
	}

	_, err = newClient(t, h, "agent:4646", "").Trades(ctx)
	check("no token", err, 401, "", api.ErrUnauthorized)
	_, err = newClient(t, h, "agent:4646", "wrong").Trades(ctx)
	check("wrong token", err, 403, "", api.ErrForbidden)

	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Trades(ctx2); !errors.Is(err, context.Canceled) {
		t.Errorf("Trades with a cancelled context = %v; want context.Canceled", err)
	}
}

// TestClientForeignResponses: answers that did not come from a Meridian
// handler (a proxy's error page, a broken body) still give clear errors.
func TestClientForeignResponses(t *testing.T) {
	ctx := context.Background()
	proxy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/nodes":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "<html>upstream down</html>")
		default:
			io.WriteString(w, `{"nodes": [`)
		}
	})
	c := newClient(t, proxy, "agent:4646", "")
	_, err := c.Nodes(ctx)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.StatusCode != 502 || ae.Code != "bad gateway" || !strings.Contains(ae.Message, "upstream down") {
		t.Errorf("Nodes through a failing proxy = %#v", err)
	}
	if _, err := c.Trades(ctx); err == nil || !strings.Contains(err.Error(), "decoding the response") {
		t.Errorf("Trades with a truncated body = %v; want a decoding error", err)
	}
}

func TestNewClient(t *testing.T) {
	for _, tc := range []struct {
		addr, token, want, wantErr string
	}{
		{addr: "127.0.0.1:4646", want: "http://127.0.0.1:4646"},
		{addr: "http://localhost:4646/", want: "http://localhost:4646"},
		{addr: "https://mesh.example/meridian/", want: "https://mesh.example/meridian"},
		{addr: "", wantErr: "empty"},
		{addr: "ftp://host", wantErr: "scheme"},
		{addr: "http://", wantErr: "no host"},
		{addr: "http://h:4646/?x=1", wantErr: "query"},
		{addr: "http://user:pw@h:4646", wantErr: "user info"},
		{addr: "http://h:4646", token: "a\nb", wantErr: "line breaks"},
		{addr: "http://[::1", wantErr: "address"},
	} {
		c, err := api.NewClient(tc.addr, tc.token, nil)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("NewClient(%q) = %v; want an error about %q", tc.addr, err, tc.wantErr)
			}
			continue
		}
		if err != nil || c.Addr() != tc.want {
			t.Errorf("NewClient(%q) = %v, %v; want %s", tc.addr, c, err, tc.want)
		}
	}
}

// TestClientPathPrefix: an agent behind a reverse proxy under a path.
func TestClientPathPrefix(t *testing.T) {
	svc := apitest.New(fixedNow)
	mux := http.NewServeMux()
	mux.Handle("/meridian/", http.StripPrefix("/meridian", api.NewHandler(svc, api.Options{})))
	c := newClient(t, mux, "http://proxy.example/meridian", "")
	if _, err := c.Nodes(context.Background()); err != nil {
		t.Errorf("Nodes under a prefix = %v", err)
	}
}

// TestForwarding: an agent whose Service is a Client of another agent (how
// a request reaches the home region's leader) answers with the status the
// other agent gave, except that the other's internal errors are a 502.
func TestForwarding(t *testing.T) {
	ctx := context.Background()
	leaderSvc := apitest.New(fixedNow, "us-east-1")
	leader := api.NewHandler(leaderSvc, api.Options{})
	follower := api.NewHandler(newClient(t, leader, "leader:4646", ""), api.Options{})
	c := newClient(t, follower, "follower:4646", "")

	if _, created, err := c.SubmitJob(ctx, api.JobSpec{ID: "j1", OriginRegion: "us-east-1", Demand: placement.Resources{ComputePerHour: 1}}); err != nil || !created {
		t.Fatalf("forwarded submit = %v, %v; want created", created, err)
	}
	_, _, err := c.SubmitJob(ctx, api.JobSpec{ID: "j2", OriginRegion: "mars-1", Demand: placement.Resources{ComputePerHour: 1}})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.StatusCode != 400 || ae.Field != "origin_region" {
		t.Errorf("forwarded refusal = %v; want 400 on origin_region", err)
	}
	if _, err := c.Job(ctx, "j9"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("forwarded 404 = %v", err)
	}
	leaderSvc.FailWith("Trades", errors.New("disk on fire"))
	if _, err := c.Trades(ctx); !errors.As(err, &ae) || ae.StatusCode != 502 || ae.Code != api.CodeBadGateway {
		t.Errorf("forwarded 500 = %v; want 502", err)
	}
	leaderSvc.FailWith("Trades", api.ErrNoLeader)
	if _, err := c.Trades(ctx); !errors.Is(err, api.ErrNoLeader) {
		t.Errorf("forwarded no leader = %v; want ErrNoLeader", err)
	}
}
