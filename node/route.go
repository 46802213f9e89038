package node

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/gossip"
	"github.com/meridian-mesh/meridian/node/api"
)

// Headers nodes put on calls to each other. Hops bounds forwarding chains
// (a follower forwards to a leader that has just lost leadership, which
// forwards again...); Scope "region" asks for the answer of the receiving
// node's region alone, so a fan-out over regions does not fan out again.
const (
	hopsHeader  = "X-Meridian-Hops"
	scopeHeader = "X-Meridian-Scope"
	scopeRegion = "region"
	maxHops     = 4
	// submissionHeader carries the token of one client submission through
	// forwarding and its retries (see consensus.SubmitJob.Submission).
	submissionHeader = "X-Meridian-Submission"
)

type ctxKey int

const (
	hopsKey ctxKey = iota
	scopeKey
	submissionKey
)

func submissionOf(ctx context.Context) string {
	s, _ := ctx.Value(submissionKey).(string)
	return s
}

func withSubmission(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, submissionKey, token)
}

// newSubmission returns a fresh submission token: 16 random bytes, hex.
func newSubmission() string {
	var b [16]byte
	_, _ = cryptorand.Read(b[:]) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b[:])
}

func hopsOf(ctx context.Context) int {
	n, _ := ctx.Value(hopsKey).(int)
	return n
}

func regionScoped(ctx context.Context) bool {
	s, _ := ctx.Value(scopeKey).(string)
	return s == scopeRegion
}

func withRegionScope(ctx context.Context) context.Context {
	return context.WithValue(ctx, scopeKey, scopeRegion)
}

// hopTransport stamps node-to-node requests with the hop count and scope
// carried by their context.
type hopTransport struct{ base http.RoundTripper }

func (t *hopTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(hopsHeader, strconv.Itoa(hopsOf(r.Context())+1))
	if regionScoped(r.Context()) {
		r.Header.Set(scopeHeader, scopeRegion)
	}
	if s := submissionOf(r.Context()); s != "" {
		r.Header.Set(submissionHeader, s)
	}
	return t.base.RoundTrip(r)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// wrapped transport.
func (t *hopTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// newHandler is the node's HTTP API: the public API (node/api) and the
// internal calls between nodes, both behind the ACL token.
func (a *Agent) newHandler() http.Handler {
	public := api.NewHandler(a, api.Options{
		Token:      a.cfg.ACLToken,
		Logger:     a.log,
		Metrics:    prometheus.Gatherers{a.registry, bridgeRegistry},
		Registerer: a.registry,
	})
	mux := http.NewServeMux()
	mux.Handle("/", public)
	mux.HandleFunc("GET /v1/internal/work", a.handleWork)
	mux.HandleFunc("POST /v1/internal/reports", a.handleReports)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if h := r.Header.Get(hopsHeader); h != "" {
			n, err := strconv.Atoi(h)
			if err != nil || n < 0 || n > 64 {
				writeError(w, http.StatusBadRequest, api.CodeInvalid, hopsHeader, "must be a small non-negative integer")
				return
			}
			ctx = context.WithValue(ctx, hopsKey, n)
		}
		if r.Header.Get(scopeHeader) == scopeRegion {
			ctx = withRegionScope(ctx)
		}
		if s := r.Header.Get(submissionHeader); s != "" {
			if !api.ValidID(s) {
				writeError(w, http.StatusBadRequest, api.CodeInvalid, submissionHeader, "must be an ID (letters, digits, '-', '_', '.')")
				return
			}
			ctx = withSubmission(ctx, s)
		}
		if strings.HasPrefix(r.URL.Path, "/v1/internal/") && !a.authorized(w, r) {
			return
		}
		mux.ServeHTTP(w, r.WithContext(ctx))
	})
}

func (a *Agent) authorized(w http.ResponseWriter, r *http.Request) bool {
	if a.cfg.ACLToken == "" {
		return true
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case !ok || tok == "":
		writeError(w, http.StatusUnauthorized, api.CodeUnauthorized, "", "an ACL token is required (Authorization: Bearer <token>)")
		return false
	case tok != a.cfg.ACLToken:
		writeError(w, http.StatusForbidden, api.CodeForbidden, "", "the ACL token is not valid")
		return false
	}
	return true
}

func writeError(w http.ResponseWriter, status int, code, field, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(api.ErrorResponse{Error: code, Field: field, Message: msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// handleWork answers a node's poll for its live allocations. Only the
// leader's ledger is fresh enough: a follower forwards.
func (a *Agent) handleWork(w http.ResponseWriter, r *http.Request) {
	node := r.URL.Query().Get("node")
	if !api.ValidID(node) {
		writeError(w, http.StatusBadRequest, api.CodeInvalid, "node", "must be a node name")
		return
	}
	q := r.URL.Query()
	known := q.Get("known")
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > maxWorkWait {
			writeError(w, http.StatusBadRequest, api.CodeInvalid, "wait", fmt.Sprintf("must be a duration from 0 to %v", maxWorkWait))
			return
		}
		wait = d
	}
	if a.IsLeader() {
		work, _, err := a.waitWork(r.Context(), node, known, wait)
		if err == nil {
			writeJSON(w, work)
			return
		}
		if r.Context().Err() != nil {
			return // the node hung up
		}
		// Leadership moved during the wait: forward to the new leader.
	}
	var out json.RawMessage
	if err := a.callRegionLeader(r.Context(), "GET", "/v1/internal/work?"+q.Encode(), nil, &out); err != nil {
		writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, "", err.Error())
		return
	}
	writeJSON(w, out)
}

// handleReports commits task reports on the leader (a follower forwards).
func (a *Agent) handleReports(w http.ResponseWriter, r *http.Request) {
	var reps []taskReport
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&reps); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeInvalid, "", "reports: "+err.Error())
		return
	}
	for i, rep := range reps {
		if !api.ValidID(rep.AllocID) {
			writeError(w, http.StatusBadRequest, api.CodeInvalid, fmt.Sprintf("[%d].alloc_id", i), "must be an allocation ID")
			return
		}
		switch rep.State {
		case reportRunning, reportCompleted, reportFailed:
		default:
			writeError(w, http.StatusBadRequest, api.CodeInvalid, fmt.Sprintf("[%d].state", i), "must be running, completed or failed")
			return
		}
	}
	if !a.IsLeader() {
		if err := a.callRegionLeader(r.Context(), "POST", "/v1/internal/reports", reps, nil); err != nil {
			writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, "", err.Error())
			return
		}
		writeJSON(w, struct{}{})
		return
	}
	for _, rep := range reps {
		if err := a.applyReport(r.Context(), rep); err != nil {
			writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, "", err.Error())
			return
		}
	}
	writeJSON(w, struct{}{})
}

// regionTargets lists the HTTP addresses of region's servers to try, the
// likely leader first. A server knows its own region's leader from Raft;
// of other regions it knows what gossip says.
func (a *Agent) regionTargets(region string) []string {
	var leaderRaft string
	if region == a.cfg.Region && a.server != nil {
		_, leaderRaft, _ = a.server.Leader()
	}
	var first, rest []string
	for _, m := range a.gossip.RegionMembers(region) {
		if m.Role != gossip.RoleServer || m.Name == a.cfg.Name || m.HTTPAddr == "" {
			continue
		}
		if m.State != gossip.StateAlive && m.State != gossip.StateSuspect {
			continue
		}
		if leaderRaft != "" && m.RaftAddr == leaderRaft {
			first = append(first, m.HTTPAddr)
		} else {
			rest = append(rest, m.HTTPAddr)
		}
	}
	slices.Sort(rest)
	return append(first, rest...)
}

// knownRegion reports whether gossip knows any member of region.
func (a *Agent) knownRegion(region string) bool {
	if region == a.cfg.Region {
		return true
	}
	for _, m := range a.gossip.Members() {
		if m.Region == region {
			return true
		}
	}
	return false
}

// regions lists every region gossip knows, this node's first.
func (a *Agent) regions() []string {
	set := map[string]bool{}
	for _, m := range a.gossip.Members() {
		if m.Region != a.cfg.Region {
			set[m.Region] = true
		}
	}
	out := slices.Sorted(func(yield func(string) bool) {
		for r := range set {
			if !yield(r) {
				return
			}
		}
	})
	return append([]string{a.cfg.Region}, out...)
}

// retryElsewhere reports whether a failed node-to-node call may be tried on
// another server of the region: the server did not answer, or answered that
// it cannot serve right now. Every call the agent forwards is idempotent.
func retryElsewhere(err error) bool {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return true // transport error: the node did not answer
	}
	return errors.Is(err, api.ErrNoLeader) || errors.Is(err, api.ErrUnavailable) ||
		ae.StatusCode == http.StatusBadGateway || ae.StatusCode == http.StatusGatewayTimeout
}

// forward runs call against the servers of region until one answers.
func (a *Agent) forward(ctx context.Context, region string, call func(c *api.Client) error) error {
	if hopsOf(ctx) >= maxHops {
		return fmt.Errorf("region %s: request forwarded %d times without reaching its leader: %w", region, hopsOf(ctx), api.ErrNoLeader)
	}
	targets := a.regionTargets(region)
	if len(targets) == 0 {
		return fmt.Errorf("region %s: no live server known: %w", region, api.ErrNoLeader)
	}
	var last error
	for _, addr := range targets {
		c, err := api.NewClient("http://"+addr, a.cfg.ACLToken, a.peers)
		if err != nil {
			return fmt.Errorf("region %s: server address %q: %w", region, addr, err)
		}
		a.metrics.forwarded.Inc()
		err = call(c)
		if err == nil || !retryElsewhere(err) {
			return err
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	if errors.Is(last, api.ErrNoLeader) || errors.Is(last, api.ErrUnavailable) {
		return last
	}
	return fmt.Errorf("region %s: no server answered (last: %v): %w", region, last, api.ErrNoLeader)
}

// callRegionLeader sends an internal request to this node's region leader
// (through any server of the region) and decodes the JSON answer into out.
func (a *Agent) callRegionLeader(ctx context.Context, method, path string, in, out any) error {
	u, err := url.Parse(path)
	if err != nil {
		return err
	}
	return a.forward(ctx, a.cfg.Region, func(c *api.Client) error {
		body, _, err := c.Raw(ctx, method, u.Path, u.Query(), in)
		if err != nil {
			return err
		}
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("%s %s: decoding the answer: %w", method, u.Path, err)
		}
		return nil
	})
}
