// Package api is the HTTP JSON API that every Meridian agent serves, and the
// client that talks to it.
//
// The package holds three things that must agree with each other:
//
//   - the wire types (JobSpec, JobStatus, NodeStatus, RegionsView, ...) that
//     both sides encode and decode;
//   - NewHandler, which serves the API over a Service — the agent's job
//     lifecycle, implemented by node.Agent — with strict request validation,
//     an optional bearer-token ACL and Prometheus metrics;
//   - Client, which mirrors Service over HTTP. The CLI uses it, and agents use
//     it to forward a request to the leader of another region (the client takes
//     its *http.Client from the caller, so the transport can dial through
//     netsim).
//
// Errors cross the wire as {"error": code, "field": path, "message": text}.
// The sentinel errors below are what a Service returns and what a caller
// tests with errors.Is; *Error, returned by Client, matches them too, so an
// error forwarded from another node maps to the same status code again.
//
// The endpoints, bodies and status codes are documented in docs/api.md.
package api
