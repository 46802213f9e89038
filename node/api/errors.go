package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// Sentinel errors a Service returns (wrapped with context, fmt.Errorf("...:
// %w", ErrNotFound)) and the handler maps to status codes. *Error, returned by
// Client, matches them with errors.Is as well.
var (
	// ErrInvalid marks a request refused as malformed (400). It is
	// placement.ErrInvalid itself, so one errors.Is test covers the
	// validation errors of both packages; *FieldError unwraps to it.
	ErrInvalid = placement.ErrInvalid
	// ErrNotFound: the job, or another named object, does not exist (404).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a job with the same ID but a different spec exists (409).
	ErrConflict = errors.New("conflict")
	// ErrNoLeader: the Raft group that must commit the write has no leader
	// right now; the client should retry (503 with Retry-After).
	ErrNoLeader = errors.New("no leader")
	// ErrUnavailable: the agent cannot serve the request right now, for
	// example while it is starting or shutting down (503 with Retry-After).
	ErrUnavailable = errors.New("unavailable")
	// ErrUnauthorized: the request carries no usable ACL token (401).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: the request's ACL token is wrong (403).
	ErrForbidden = errors.New("forbidden")
)

// Error codes: the "error" member of an error response. They are stable; the
// message is for humans and may change.
const (
	CodeInvalid          = "invalid request"
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not found"
	CodeMethodNotAllowed = "method not allowed"
	CodeConflict         = "conflict"
	CodeTooLarge         = "payload too large"
	CodeUnsupportedMedia = "unsupported media type"
	CodeInternal         = "internal error"
	CodeBadGateway       = "bad gateway"
	CodeNoLeader         = "no leader"
	CodeUnavailable      = "unavailable"
	CodeTimeout          = "timeout"
)

// FieldError is a validation error that names the request field at fault,
// as a JSON path ("demand.compute", "command[0]", "env.PATH"). An empty
// Field means the request as a whole (for example malformed JSON).
type FieldError struct {
	Field   string
	Message string
}

// Error implements error.
func (e *FieldError) Error() string {
	if e.Field == "" {
		return "invalid request: " + e.Message
	}
	return fmt.Sprintf("invalid request: %s: %s", e.Field, e.Message)
}

// Unwrap lets errors.Is(err, ErrInvalid) match.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorResponse is the body of every non-2xx response.
type ErrorResponse struct {
	// Error is one of the Code constants.
	Error string `json:"error"`
	// Field is the JSON path of the request field at fault, when there is one.
	Field string `json:"field,omitempty"`
	// Message says what is wrong, for a human.
	Message string `json:"message"`
}

// Error is a non-2xx answer from a Meridian agent, as Client returns it.
type Error struct {
	// StatusCode is the HTTP status code.
	StatusCode int
	// Code is the response's "error" member (one of the Code constants), or
	// the status text when the body was not a Meridian error.
	Code string
	// Field is the request field at fault, if the server named one.
	Field string
	// Message is the server's explanation.
	Message string
	// RetryAfter is the server's Retry-After hint, zero when absent.
	RetryAfter time.Duration
}

// Error implements error: the server's message, prefixed with the field at
// fault, followed by the status.
func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = e.Code
	}
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	return fmt.Sprintf("%s (HTTP %d %s)", msg, e.StatusCode, e.Code)
}

// Is lets errors.Is match an *Error against the sentinel errors of this
// package, by status code (and by code for ErrNoLeader).
func (e *Error) Is(target error) bool {
	switch target {
	case ErrInvalid:
		return e.StatusCode == http.StatusBadRequest
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrConflict:
		return e.StatusCode == http.StatusConflict
	case ErrNoLeader:
		return e.StatusCode == http.StatusServiceUnavailable && e.Code == CodeNoLeader
	case ErrUnavailable:
		return e.StatusCode == http.StatusServiceUnavailable
	}
	return false
}
