package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridian-mesh/meridian/placement"
)

// Defaults of Options.
const (
	// DefaultMaxBodyBytes caps request bodies at 1 MiB.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultRequestTimeout bounds how long a request may wait for the
	// Service, a Raft commit included, before it is answered with 504.
	DefaultRequestTimeout = 30 * time.Second
	// retryAfterSeconds is the Retry-After hint sent with 503.
	retryAfterSeconds = 1
)

// Options configure NewHandler. The zero value serves without an ACL, with
// the default limits, no logs and no /metrics.
type Options struct {
	// Token, when not empty, is the ACL token every request but GET
	// /v1/health must present as "Authorization: Bearer <token>": a request
	// without one gets 401, one with a different token 403.
	Token string
	// MaxBodyBytes caps request bodies (413 beyond it); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// RequestTimeout bounds each request's wait on the Service (504 beyond
	// it); 0 means DefaultRequestTimeout, a negative value no bound.
	RequestTimeout time.Duration
	// Logger receives a debug line per request and an error line per 500;
	// nil discards them.
	Logger *slog.Logger
	// Metrics is served on GET /metrics in the Prometheus text format; nil
	// answers /metrics with 404. The agent passes a registry that also holds
	// the bridged memberlist and raft metrics.
	Metrics prometheus.Gatherer
	// Registerer receives the handler's request counter and latency
	// histogram; nil means Metrics when it is also a Registerer (a
	// *prometheus.Registry is both), else the handler's metrics are not
	// registered. The global default registry is never used.
	Registerer prometheus.Registerer
}

// handler serves the API. It holds no mutable state of its own: the Service
// owns the jobs, and the Prometheus collectors are safe for concurrent use.
type handler struct {
	svc      Service
	log      *slog.Logger
	maxBody  int64
	timeout  time.Duration
	aclOn    bool
	tokenSum [sha256.Size]byte
	metrics  http.Handler
	mux      *http.ServeMux
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewHandler returns the HTTP handler of the Meridian API over svc. It is
// safe for concurrent use; mount it at the root of the agent's HTTP server.
func NewHandler(svc Service, opts Options) http.Handler {
	h := &handler{
		svc:     svc,
		log:     opts.Logger,
		maxBody: opts.MaxBodyBytes,
		timeout: opts.RequestTimeout,
		mux:     http.NewServeMux(),
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	if h.timeout == 0 {
		h.timeout = DefaultRequestTimeout
	}
	if opts.Token != "" {
		h.aclOn = true
		h.tokenSum = sha256.Sum256([]byte(opts.Token))
	}
	if opts.Metrics != nil {
		h.metrics = promhttp.HandlerFor(opts.Metrics, promhttp.HandlerOpts{
			ErrorLog:      slog.NewLogLogger(h.log.Handler(), slog.LevelError),
			ErrorHandling: promhttp.ContinueOnError,
		})
	}
	h.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_http_requests_total",
		Help: "HTTP API requests answered, by method, route and status code.",
	}, []string{"method", "route", "code"})
	h.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "meridian_http_request_duration_seconds",
		Help:    "Time to answer HTTP API requests, by method and route.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"method", "route"})
	reg := opts.Registerer
	if reg == nil {
		reg, _ = opts.Metrics.(prometheus.Registerer)
	}
	if reg != nil {
		h.requests = registerOrReuse(reg, h.requests, h.log)
		h.latency = registerOrReuse(reg, h.latency, h.log)
	}
	h.routes()
	return h
}

// registerOrReuse registers c, or returns the collector already registered
// under the same name (two handlers on one registry share their metrics).
func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C, log *slog.Logger) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		log.Warn("api: cannot register HTTP metrics", "err", err)
	}
	return c
}

// routes registers every endpoint, a JSON 405 for each known path with the
// wrong method, and a JSON 404 for everything else.
func (h *handler) routes() {
	byPath := []struct {
		path    string
		methods map[string]http.HandlerFunc
	}{
		{"/v1/jobs", map[string]http.HandlerFunc{"POST": h.submitJob, "GET": h.listJobs}},
		{"/v1/jobs/{id}", map[string]http.HandlerFunc{"GET": h.getJob, "DELETE": h.cancelJob}},
		{"/v1/nodes", map[string]http.HandlerFunc{"GET": h.nodes}},
		{"/v1/regions", map[string]http.HandlerFunc{"GET": h.regions}},
		{"/v1/allocations", map[string]http.HandlerFunc{"GET": h.allocations}},
		{"/v1/trades", map[string]http.HandlerFunc{"GET": h.trades}},
		{"/v1/health", map[string]http.HandlerFunc{"GET": h.health}},
		{"/metrics", map[string]http.HandlerFunc{"GET": h.serveMetrics}},
	}
	for _, p := range byPath {
		var allow []string
		for method, fn := range p.methods {
			h.mux.HandleFunc(method+" "+p.path, fn)
			allow = append(allow, method)
			if method == http.MethodGet {
				allow = append(allow, http.MethodHead)
			}
		}
		slices.Sort(allow)
		allowed := strings.Join(allow, ", ")
		h.mux.HandleFunc(p.path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allowed)
			h.writeError(w, r, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "",
				fmt.Sprintf("%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, allowed))
		})
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, http.StatusNotFound, CodeNotFound, "", fmt.Sprintf("no such endpoint: %s", r.URL.Path))
	})
}

// ServeHTTP checks the ACL, bounds the request's time, routes it, and
// records it in the logs and metrics.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	var route string
	if status, code, msg := h.authorize(r); status != 0 {
		if status == http.StatusUnauthorized {
			sw.Header().Set("WWW-Authenticate", `Bearer realm="meridian"`)
		}
		h.writeError(sw, r, status, code, "", msg)
		_, pattern := h.mux.Handler(r) // the route the request was refused on
		route = routeLabel(pattern)
	} else {
		if h.timeout > 0 {
			ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
			defer cancel()
			r = r.WithContext(ctx)
		}
		h.mux.ServeHTTP(sw, r) // sets r.Pattern
		route = routeLabel(r.Pattern)
	}
	elapsed := time.Since(start)
	method := methodLabel(r.Method)
	h.requests.WithLabelValues(method, route, strconv.Itoa(sw.code())).Inc()
	h.latency.WithLabelValues(method, route).Observe(elapsed.Seconds())
	h.log.LogAttrs(r.Context(), slog.LevelDebug, "http request",
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.String("route", route), slog.Int("status", sw.code()),
		slog.Int64("bytes", sw.bytes), slog.Duration("duration", elapsed),
		slog.String("remote", r.RemoteAddr))
}

// authorize returns a zero status when the request may proceed, else the
// status, code and message to refuse it with.
func (h *handler) authorize(r *http.Request) (status int, code, msg string) {
	if !h.aclOn || r.URL.Path == "/v1/health" {
		return 0, "", ""
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return http.StatusUnauthorized, CodeUnauthorized, "this agent requires an ACL token: send the header 'Authorization: Bearer <token>'"
	}
	scheme, token, _ := strings.Cut(auth, " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return http.StatusUnauthorized, CodeUnauthorized, "the Authorization header must be 'Bearer <token>'"
	}
	// Comparing fixed-size digests keeps the comparison's time independent
	// of both the token's content and its length.
	sum := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(sum[:], h.tokenSum[:]) != 1 {
		return http.StatusForbidden, CodeForbidden, "the ACL token is not valid for this agent"
	}
	return 0, "", ""
}

// routeLabel turns a ServeMux pattern into a metrics label of bounded
// cardinality: the path pattern, or "unmatched".
func routeLabel(pattern string) string {
	if _, path, ok := strings.Cut(pattern, " "); ok {
		pattern = path
	}
	if pattern == "" || pattern == "/" {
		return "unmatched"
	}
	return pattern
}

func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// statusWriter remembers the status code and body size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// --- endpoints ---

func (h *handler) submitJob(w http.ResponseWriter, r *http.Request) {
	if !h.checkQuery(w, r) {
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			h.writeError(w, r, http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "",
				fmt.Sprintf("the body must be JSON with Content-Type: application/json, got %q", ct))
			return
		}
	}
	if r.ContentLength > h.maxBody {
		h.tooLarge(w, r)
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.tooLarge(w, r)
			return
		}
		h.writeError(w, r, http.StatusBadRequest, CodeInvalid, "", "reading the request body: "+err.Error())
		return
	}
	spec, err := DecodeJobSpec(data)
	if err == nil {
		err = spec.Validate()
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	st, created, err := h.svc.SubmitJob(r.Context(), spec.Normalized())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/v1/jobs/"+url.PathEscape(st.ID))
	}
	h.writeJSON(w, r, status, st)
}

func (h *handler) tooLarge(w http.ResponseWriter, r *http.Request) {
	h.writeError(w, r, http.StatusRequestEntityTooLarge, CodeTooLarge, "",
		fmt.Sprintf("the request body exceeds the limit of %d bytes", h.maxBody))
}

func (h *handler) listJobs(w http.ResponseWriter, r *http.Request) {
	if !h.checkQuery(w, r, "state", "region", "limit", "cursor") {
		return
	}
	q := r.URL.Query()
	f := JobFilter{State: JobState(q.Get("state")), Region: q.Get("region"), Cursor: q.Get("cursor"), Limit: DefaultJobsLimit}
	if f.State != "" && !f.State.Valid() {
		h.fail(w, r, fieldErr("state", "must be one of %s, got %q", joinStates(JobStates), f.State))
		return
	}
	if f.Region != "" {
		if err := validName("region", f.Region, MaxRegionLen); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxJobsLimit {
			h.fail(w, r, fieldErr("limit", "must be an integer between 1 and %d, got %q", MaxJobsLimit, s))
			return
		}
		f.Limit = n
	}
	if len(f.Cursor) > 1024 {
		h.fail(w, r, fieldErr("cursor", "is not a cursor this agent returned"))
		return
	}
	list, err := h.svc.Jobs(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if list.Jobs == nil {
		list.Jobs = []JobStatus{}
	}
	h.writeJSON(w, r, http.StatusOK, list)
}

func (h *handler) getJob(w http.ResponseWriter, r *http.Request) {
	id, ok := h.jobID(w, r)
	if !ok {
		return
	}
	st, err := h.svc.Job(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, r, http.StatusOK, st)
}

func (h *handler) cancelJob(w http.ResponseWriter, r *http.Request) {
	id, ok := h.jobID(w, r)
	if !ok {
		return
	}
	st, err := h.svc.CancelJob(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, r, http.StatusOK, st)
}

func (h *handler) jobID(w http.ResponseWriter, r *http.Request) (string, bool) {
	if !h.checkQuery(w, r) {
		return "", false
	}
	id := r.PathValue("id")
	if err := validName("id", id, MaxIDLen); err != nil {
		h.fail(w, r, err)
		return "", false
	}
	return id, true
}

// NodeList is the body of GET /v1/nodes.
type NodeList struct {
	Nodes []NodeStatus `json:"nodes"`
}

func (h *handler) nodes(w http.ResponseWriter, r *http.Request) {
	if !h.checkQuery(w, r) {
		return
	}
	nodes, err := h.svc.Nodes(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if nodes == nil {
		nodes = []NodeStatus{}
	}
	h.writeJSON(w, r, http.StatusOK, NodeList{Nodes: nodes})
}

func (h *handler) regions(w http.ResponseWriter, r *http.Request) {
	if !h.checkQuery(w, r) {
		return
	}
	v, err := h.svc.Regions(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if v.Regions == nil {
		v.Regions = []RegionSummary{}
	}
	if v.RTTMs == nil {
		v.RTTMs = map[string]map[string]float64{}
	}
	h.writeJSON(w, r, http.StatusOK, v)
}

// AllocationList is the body of GET /v1/allocations.
type AllocationList struct {
	Allocations []Allocation `json:"allocations"`
}

var allocStates = []AllocState{AllocPending, AllocRunning, AllocCompleted, AllocFailed, AllocCancelled, AllocLost, AllocPreempted}

func (h *handler) allocations(w http.ResponseWriter, r *http.Request) {
	if !h.checkQuery(w, r, "job", "node", "region", "state") {
		return
	}
	q := r.URL.Query()
	f := AllocationFilter{JobID: q.Get("job"), Node: q.Get("node"), Region: q.Get("region"), State: AllocState(q.Get("state"))}
	for _, c := range []struct {
		field, v string
		max      int
	}{{"job", f.JobID, MaxIDLen}, {"node", f.Node, 256}, {"region", f.Region, MaxRegionLen}} {
		if c.v == "" {
			continue
		}
		if err := validName(c.field, c.v, c.max); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	if f.State != "" && !slices.Contains(allocStates, f.State) {
		h.fail(w, r, fieldErr("state", "must be one of %s, got %q", joinStates(allocStates), f.State))
		return
	}
	allocs, err := h.svc.Allocations(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if allocs == nil {
		allocs = []Allocation{}
	}
	h.writeJSON(w, r, http.StatusOK, AllocationList{Allocations: allocs})
}

// TradeList is the body of GET /v1/trades.
type TradeList struct {
	Trades []Trade `json:"trades"`
}

func (h *handler) trades(w http.ResponseWriter, r *http.Request) {
	if !h.checkQuery(w, r) {
		return
	}
	trades, err := h.svc.Trades(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if trades == nil {
		trades = []Trade{}
	}
	h.writeJSON(w, r, http.StatusOK, TradeList{Trades: trades})
}

func (h *handler) health(w http.ResponseWriter, r *http.Request) {
	if !h.checkQuery(w, r) {
		return
	}
	hl, err := h.svc.Health(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if hl.Status != HealthOK && hl.Status != HealthDegraded {
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	h.writeJSON(w, r, status, hl)
}

func (h *handler) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if h.metrics == nil {
		h.writeError(w, r, http.StatusNotFound, CodeNotFound, "", "metrics are not enabled on this agent")
		return
	}
	h.metrics.ServeHTTP(w, r)
}

// checkQuery refuses query parameters the endpoint does not know (a typo
// would otherwise silently select everything) and parameters given twice.
// "pretty" is known everywhere.
func (h *handler) checkQuery(w http.ResponseWriter, r *http.Request, known ...string) bool {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		h.fail(w, r, &FieldError{Message: "malformed query string: " + err.Error()})
		return false
	}
	for _, k := range slices.Sorted(maps.Keys(q)) {
		if k != "pretty" && !slices.Contains(known, k) {
			msg := "unknown query parameter"
			if len(known) > 0 {
				msg += "; known: " + strings.Join(known, ", ")
			}
			h.fail(w, r, &FieldError{Field: k, Message: msg})
			return false
		}
		if len(q[k]) > 1 {
			h.fail(w, r, &FieldError{Field: k, Message: "must be given at most once"})
			return false
		}
	}
	return true
}

func joinStates[S ~string](states []S) string {
	s := make([]string, len(states))
	for i, st := range states {
		s[i] = string(st)
	}
	return strings.Join(s, ", ")
}

// --- responses ---

// fail answers with the status that err maps to (see Service).
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		fe  *FieldError
		pfe *placement.FieldError
		ae  *Error
	)
	switch {
	case errors.As(err, &fe):
		h.writeError(w, r, http.StatusBadRequest, CodeInvalid, fe.Field, fe.Message)
	case errors.As(err, &pfe):
		h.writeError(w, r, http.StatusBadRequest, CodeInvalid, pfe.Field, pfe.Reason)
	case errors.As(err, &ae):
		// An answer from another agent this one forwarded to: keep what it
		// said, except that its internal errors are a bad gateway here.
		status, code := ae.StatusCode, ae.Code
		if status >= 500 && status != http.StatusServiceUnavailable && status != http.StatusGatewayTimeout {
			status, code = http.StatusBadGateway, CodeBadGateway
		}
		if status < 400 || status > 599 {
			status, code = http.StatusBadGateway, CodeBadGateway
		}
		h.writeError(w, r, status, code, ae.Field, ae.Message)
	case errors.Is(err, ErrNotFound):
		h.writeError(w, r, http.StatusNotFound, CodeNotFound, "", err.Error())
	case errors.Is(err, ErrConflict):
		h.writeError(w, r, http.StatusConflict, CodeConflict, "", err.Error())
	case errors.Is(err, ErrNoLeader):
		h.writeError(w, r, http.StatusServiceUnavailable, CodeNoLeader, "", err.Error())
	case errors.Is(err, ErrUnavailable):
		h.writeError(w, r, http.StatusServiceUnavailable, CodeUnavailable, "", err.Error())
	case errors.Is(err, ErrInvalid):
		h.writeError(w, r, http.StatusBadRequest, CodeInvalid, "", err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		h.writeError(w, r, http.StatusGatewayTimeout, CodeTimeout, "", "the request timed out: "+err.Error())
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads this answer.
		h.log.Debug("api: request cancelled by the client", "method", r.Method, "path", r.URL.Path)
		h.writeError(w, r, http.StatusServiceUnavailable, CodeUnavailable, "", "the request was cancelled")
	default:
		h.log.Error("api: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		h.writeError(w, r, http.StatusInternalServerError, CodeInternal, "", "internal error; see the agent's log")
	}
}

func (h *handler) writeError(w http.ResponseWriter, r *http.Request, status int, code, field, msg string) {
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	h.writeJSON(w, r, status, ErrorResponse{Error: code, Field: field, Message: msg})
}

func (h *handler) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	var (
		body []byte
		err  error
	)
	if _, pretty := r.URL.Query()["pretty"]; pretty {
		body, err = json.MarshalIndent(v, "", "  ")
	} else {
		body, err = json.Marshal(v)
	}
	if err != nil {
		// Only a NaN or an infinity in a Service's answer can get here.
		h.log.Error("api: encoding the response", "path", r.URL.Path, "err", err)
		status = http.StatusInternalServerError
		body, _ = json.Marshal(ErrorResponse{Error: CodeInternal, Message: "internal error; see the agent's log"})
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(append(body, '\n')) // a write error means the client is gone
}
