package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxResponseBytes caps how much of a response Client reads, so that a
// misbehaving server cannot exhaust the caller's memory.
const MaxResponseBytes = 64 << 20

// DefaultAddr is the agent's HTTP API address when none is configured.
const DefaultAddr = "http://127.0.0.1:4646"

// Client calls a Meridian agent's HTTP API. Its methods mirror Service and
// return *Error for any non-2xx answer. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

var _ Service = (*Client)(nil)

// NewClient returns a client of the agent at addr ("http://host:port",
// "https://host:port/prefix" or "host:port", which means http). token, when
// not empty, is sent as "Authorization: Bearer <token>". httpClient carries
// the requests (agents pass one whose Transport dials through netsim); nil
// means http.DefaultClient. Bound each call with its context.
func NewClient(addr, token string, httpClient *http.Client) (*Client, error) {
	if addr == "" {
		return nil, errors.New("address: must not be empty")
	}
	raw := addr
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("address %q: scheme must be http or https", addr)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("address %q: no host", addr)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("address %q: must not have a query, fragment or user info", addr)
	}
	if strings.ContainsAny(token, "\r\n") {
		return nil, errors.New("token: must not contain line breaks")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{base: u, token: token, hc: httpClient}, nil
}

// Addr returns the agent's base URL.
func (c *Client) Addr() string { return c.base.String() }

// SubmitJob submits spec; created is true when the agent created the job
// (201) and false when an identical job already existed (200).
func (c *Client) SubmitJob(ctx context.Context, spec JobSpec) (JobStatus, bool, error) {
	var st JobStatus
	code, err := c.call(ctx, http.MethodPost, "/v1/jobs", nil, spec, &st)
	return st, code == http.StatusCreated, err
}

// Job returns the job with this ID.
func (c *Client) Job(ctx context.Context, id string) (JobStatus, error) {
	var st JobStatus
	_, err := c.call(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id), nil, nil, &st)
	return st, err
}

// Jobs returns one page of the jobs f selects.
func (c *Client) Jobs(ctx context.Context, f JobFilter) (JobList, error) {
	var list JobList
	_, err := c.call(ctx, http.MethodGet, "/v1/jobs", JobsQuery(f), nil, &list)
	return list, err
}

// JobsQuery encodes f as the query parameters of GET /v1/jobs.
func JobsQuery(f JobFilter) url.Values {
	q := url.Values{}
	set(q, "state", string(f.State))
	set(q, "region", f.Region)
	set(q, "cursor", f.Cursor)
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// CancelJob cancels the job with this ID and returns its status.
func (c *Client) CancelJob(ctx context.Context, id string) (JobStatus, error) {
	var st JobStatus
	_, err := c.call(ctx, http.MethodDelete, "/v1/jobs/"+url.PathEscape(id), nil, nil, &st)
	return st, err
}

// Nodes returns the nodes the agent knows of.
func (c *Client) Nodes(ctx context.Context) ([]NodeStatus, error) {
	var list NodeList
	_, err := c.call(ctx, http.MethodGet, "/v1/nodes", nil, nil, &list)
	return list.Nodes, err
}

// Regions returns the region summaries and the RTT matrix.
func (c *Client) Regions(ctx context.Context) (RegionsView, error) {
	var v RegionsView
	_, err := c.call(ctx, http.MethodGet, "/v1/regions", nil, nil, &v)
	return v, err
}

// Allocations returns the allocations f selects.
func (c *Client) Allocations(ctx context.Context, f AllocationFilter) ([]Allocation, error) {
	var list AllocationList
	_, err := c.call(ctx, http.MethodGet, "/v1/allocations", AllocationsQuery(f), nil, &list)
	return list.Allocations, err
}

// AllocationsQuery encodes f as the query parameters of GET /v1/allocations.
func AllocationsQuery(f AllocationFilter) url.Values {
	q := url.Values{}
	set(q, "job", f.JobID)
	set(q, "node", f.Node)
	set(q, "region", f.Region)
	set(q, "state", string(f.State))
	return q
}

// Trades returns the trades the agent's region took part in.
func (c *Client) Trades(ctx context.Context) ([]Trade, error) {
	var list TradeList
	_, err := c.call(ctx, http.MethodGet, "/v1/trades", nil, nil, &list)
	return list.Trades, err
}

// Health returns the agent's view of itself. An unhealthy agent answers 503
// with a Health body; that is returned as the Health, with a nil error, so
// the caller can read its Status.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var hl Health
	_, body, err := c.do(ctx, http.MethodGet, "/v1/health", nil, nil)
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) && ae.StatusCode == http.StatusServiceUnavailable && body != nil {
			if json.Unmarshal(body, &hl) == nil && hl.Status != "" {
				return hl, nil
			}
		}
		return Health{}, err
	}
	if err := json.Unmarshal(body, &hl); err != nil {
		return Health{}, fmt.Errorf("GET /v1/health: decoding the response: %w", err)
	}
	return hl, nil
}

// Raw sends a request and returns the body of a 2xx answer as it came,
// with its status code; for the CLI's --json. body, when not nil, is sent as
// JSON. Non-2xx answers are returned as *Error.
func (c *Client) Raw(ctx context.Context, method, path string, query url.Values, body any) ([]byte, int, error) {
	code, data, err := c.do(ctx, method, path, query, body)
	return data, code, err
}

func set(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

// call sends a request and decodes a 2xx answer into out.
func (c *Client) call(ctx context.Context, method, path string, query url.Values, in, out any) (int, error) {
	code, data, err := c.do(ctx, method, path, query, in)
	if err != nil {
		return code, err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return code, fmt.Errorf("%s %s: decoding the response: %w", method, path, err)
	}
	return code, nil
}

// do sends one request. It returns the status code and body; for a non-2xx
// answer the error is an *Error and the body is still returned.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in any) (int, []byte, error) {
	// path is already escaped (IDs go through url.PathEscape), so it is
	// joined to the escaped base path and the decoded form derived from it.
	u := *c.base
	u.RawPath = c.base.EscapedPath() + path
	dec, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	u.Path = dec
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	var reqBody io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, fmt.Errorf("%s %s: encoding the request: %w", method, path, err)
		}
		reqBody = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), reqBody)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "meridian-client")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err // a *url.Error, which names the method and URL
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s %s: reading the response: %w", method, path, err)
	}
	if len(data) > MaxResponseBytes {
		return resp.StatusCode, nil, fmt.Errorf("%s %s: response exceeds %d bytes", method, path, MaxResponseBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, data, responseError(resp, data)
	}
	return resp.StatusCode, data, nil
}

// responseError builds the *Error for a non-2xx answer, from a Meridian
// error body when there is one, else from the status and the body's start.
func responseError(resp *http.Response, data []byte) *Error {
	e := &Error{StatusCode: resp.StatusCode, Code: strings.ToLower(http.StatusText(resp.StatusCode))}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		}
	}
	var er ErrorResponse
	if json.Unmarshal(data, &er) == nil && (er.Error != "" || er.Message != "") {
		if er.Error != "" {
			e.Code = er.Error
		}
		e.Field, e.Message = er.Field, er.Message
		return e
	}
	msg := strings.TrimSpace(string(data))
	if len(msg) > 256 {
		msg = msg[:256] + "…"
	}
	e.Message = msg
	return e
}
