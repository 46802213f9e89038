//go:build unix

package consensus

import (
	"errors"
	"syscall"
)

// peerClosed reports, for a connection with a file descriptor, whether the
// peer has closed or reset it (or sent bytes nobody asked for), by peeking
// at the socket without blocking; known is false when the connection has
// no descriptor to peek at.
func peerClosed(c syscall.Conn) (closed, known bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return true, true
	}
	var (
		rerr error
		b    [1]byte
	)
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	switch {
	case err != nil:
		return true, true
	case errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK):
		return false, true // nothing to read: open and idle
	}
	// An error, end of file, or bytes before any request.
	return true, true
}
