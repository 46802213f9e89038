package netsim

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// Sentinel errors. Errors of the simulated sockets are *net.OpError values
// wrapping the same errno a real socket would report, so callers test them
// as they would on a real network: errors.Is(err, syscall.ECONNREFUSED),
// syscall.ECONNRESET, syscall.EHOSTUNREACH, syscall.ENETDOWN,
// syscall.EADDRINUSE, net.ErrClosed, or a net.Error whose Timeout() is true
// (os.ErrDeadlineExceeded).
var (
	// ErrUnknownRegion is returned for a region name the topology lacks.
	ErrUnknownRegion = errors.New("unknown region")
	// ErrUnknownEndpoint is returned for an endpoint name the network lacks.
	ErrUnknownEndpoint = errors.New("unknown endpoint")
	// ErrNetworkClosed is returned by operations on a closed Network.
	ErrNetworkClosed = errors.New("netsim: network closed")
)

func opError(op, network string, src, dst net.Addr, err error) error {
	return &net.OpError{Op: op, Net: network, Source: src, Addr: dst, Err: err}
}

// errTimeout is the error of an expired deadline, as the net package reports
// it: a net.Error whose Timeout() is true.
var errTimeout error = os.ErrDeadlineExceeded

var (
	errRefused     error = syscall.ECONNREFUSED
	errReset       error = syscall.ECONNRESET
	errNoRoute     error = syscall.EHOSTUNREACH
	errNetDown     error = syscall.ENETDOWN
	errAddrInUse   error = syscall.EADDRINUSE
	errMsgSize     error = syscall.EMSGSIZE
	errBrokenPipe  error = syscall.EPIPE
	errInvalidPort       = errors.New("port out of range 0..65535")
)
