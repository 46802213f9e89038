package consensus

import (
	"errors"
	"fmt"

	"github.com/meridian-mesh/meridian/placement"
)

// Sentinel errors. Callers test them with errors.Is. Errors returned by the
// ledger (in Result.Err) are *CommandError values that unwrap to one of
// these, the same on every replica and on both sides of a forwarded call.
var (
	// ErrInvalid marks a command whose fields no real request can have (an
	// empty ID, a negative resource, an expiry in the past). It is
	// placement.ErrInvalid, so one errors.Is test covers both packages.
	ErrInvalid = placement.ErrInvalid
	// ErrNotFound marks a command about a node, job, allocation, escrow,
	// lease or trade that the ledger does not hold.
	ErrNotFound = errors.New("not found")
	// ErrConflict marks a command that contradicts what the ledger holds:
	// the same idempotency key with different content, removing a node that
	// still runs allocations.
	ErrConflict = errors.New("conflict")
	// ErrOvercommit marks a command that would make a node's live
	// allocations plus live escrows exceed its capacity.
	ErrOvercommit = errors.New("node would be overcommitted")
	// ErrDoubleAllocation marks a command that would give a job a second
	// live placement (a local allocation or a remote trade).
	ErrDoubleAllocation = errors.New("job already has a live placement")
	// ErrStaleEpoch marks a command made from an out-of-date view of a job:
	// its placement epoch has moved since the caller read it.
	ErrStaleEpoch = errors.New("stale placement epoch")
	// ErrNodeNotReady marks a placement or escrow on a node that is draining
	// or down.
	ErrNodeNotReady = errors.New("node is not ready")
	// ErrInvalidTransition marks a state change the object's life cycle
	// does not allow (a completed job cannot be placed again).
	ErrInvalidTransition = errors.New("invalid state transition")
	// ErrExpired marks a command on something whose time has passed (an
	// escrow past its expiry).
	ErrExpired = errors.New("expired")
	// ErrUnsupported marks a command of an unknown kind or version: a
	// replica older than the leader that proposed it.
	ErrUnsupported = errors.New("unsupported command")
	// ErrMalformed marks bytes that do not decode as a command or entry.
	ErrMalformed = errors.New("malformed command")

	// ErrNotLeader is returned when an operation that needs the leader
	// (a consistent read, a membership change) runs on a follower.
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader is returned when the region has had no leader for longer
	// than Config.HoldTimeout (no quorum, or an election that did not end).
	ErrNoLeader = errors.New("no leader")
	// ErrOutcomeUnknown is returned when a proposal was handed to Raft but
	// its fate is not known (leadership was lost, the context ended, the
	// connection to the leader broke): it may or may not be committed.
	// Re-read the ledger or retry with an idempotent command.
	ErrOutcomeUnknown = errors.New("outcome unknown")
	// ErrTooLarge is returned for a proposal above Config.MaxEntryCommands
	// commands or Config.MaxEntryBytes bytes; split it.
	ErrTooLarge = errors.New("proposal too large")
	// ErrShutdown is returned by a Server that is closed or closing.
	ErrShutdown = errors.New("server shut down")
)

// Code is the wire form of a sentinel error: errors cross the Raft log and
// the forwarding RPC as a code and a message, and are rebuilt as a
// *CommandError on the other side. Codes are part of the log format; never
// renumber them.
type Code uint16

// Codes of the sentinel errors.
const (
	CodeOK                Code = 0
	CodeInvalid           Code = 1
	CodeNotFound          Code = 2
	CodeConflict          Code = 3
	CodeOvercommit        Code = 4
	CodeDoubleAllocation  Code = 5
	CodeStaleEpoch        Code = 6
	CodeNodeNotReady      Code = 7
	CodeInvalidTransition Code = 8
	CodeExpired           Code = 9
	CodeUnsupported       Code = 10
	CodeMalformed         Code = 11
	CodeNotLeader         Code = 12
	CodeNoLeader          Code = 13
	CodeOutcomeUnknown    Code = 14
	CodeTooLarge          Code = 15
	CodeShutdown          Code = 16
	// CodeInternal is an error with no sentinel (a disk error on the
	// leader, say); its CommandError unwraps to nothing.
	CodeInternal Code = 17
)

var codeErrors = map[Code]error{
	CodeInvalid:           ErrInvalid,
	CodeNotFound:          ErrNotFound,
	CodeConflict:          ErrConflict,
	CodeOvercommit:        ErrOvercommit,
	CodeDoubleAllocation:  ErrDoubleAllocation,
	CodeStaleEpoch:        ErrStaleEpoch,
	CodeNodeNotReady:      ErrNodeNotReady,
	CodeInvalidTransition: ErrInvalidTransition,
	CodeExpired:           ErrExpired,
	CodeUnsupported:       ErrUnsupported,
	CodeMalformed:         ErrMalformed,
	CodeNotLeader:         ErrNotLeader,
	CodeNoLeader:          ErrNoLeader,
	CodeOutcomeUnknown:    ErrOutcomeUnknown,
	CodeTooLarge:          ErrTooLarge,
	CodeShutdown:          ErrShutdown,
}

// Sentinel returns the sentinel error of the code, or nil for CodeOK and
// codes without one.
func (c Code) Sentinel() error { return codeErrors[c] }

// String names the code after its sentinel.
func (c Code) String() string {
	if c == CodeOK {
		return "ok"
	}
	if err := codeErrors[c]; err != nil {
		return err.Error()
	}
	if c == CodeInternal {
		return "internal"
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// CodeOf returns the code of the first sentinel err wraps, CodeInternal for
// any other error and CodeOK for nil.
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	var ce *CommandError
	if errors.As(err, &ce) {
		return ce.Code
	}
	// Fixed order so that an error wrapping two sentinels maps the same way
	// everywhere.
	for c := CodeInvalid; c <= CodeShutdown; c++ {
		if errors.Is(err, codeErrors[c]) {
			return c
		}
	}
	return CodeInternal
}

// CommandError is the error of one command, as the ledger decided it. It
// carries the sentinel's code, the ID of the object at fault (a node ID for
// an overcommit, a job ID for a double allocation, a field name for invalid
// input) and a message that says what was wrong. It is built the same way on
// every replica and survives the trip back from the leader unchanged.
type CommandError struct {
	Code    Code
	Subject string
	Message string
}

// Error implements error.
func (e *CommandError) Error() string { return e.Message }

// Unwrap lets errors.Is match the sentinel of the code.
func (e *CommandError) Unwrap() error { return codeErrors[e.Code] }

// cmdErr builds a CommandError whose message starts with the sentinel's text.
func cmdErr(code Code, subject, format string, args ...any) *CommandError {
	msg := fmt.Sprintf(format, args...)
	if s := codeErrors[code]; s != nil {
		msg = s.Error() + ": " + msg
	}
	return &CommandError{Code: code, Subject: subject, Message: msg}
}

// invalid is the CommandError of a field that fails validation.
func invalid(field, format string, args ...any) *CommandError {
	return &CommandError{Code: CodeInvalid, Subject: field,
		Message: fmt.Sprintf("invalid field %q: ", field) + fmt.Sprintf(format, args...)}
}

// fromFieldError turns a placement validation error into a CommandError,
// keeping the field name (prefixed with the command's own field path).
func fromFieldError(prefix string, err error) *CommandError {
	var fe *placement.FieldError
	if errors.As(err, &fe) {
		return invalid(prefix+fe.Field, "%s", fe.Reason)
	}
	return &CommandError{Code: CodeInvalid, Subject: prefix, Message: fmt.Sprintf("invalid %s: %v", prefix, err)}
}

// asCommandError converts any error into the CommandError form that crosses
// process boundaries.
func asCommandError(err error) *CommandError {
	if err == nil {
		return nil
	}
	var ce *CommandError
	if errors.As(err, &ce) {
		return ce
	}
	return &CommandError{Code: CodeOf(err), Message: err.Error()}
}
