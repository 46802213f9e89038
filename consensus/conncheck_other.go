//go:build !unix

package consensus

import "syscall"

// peerClosed cannot peek at a socket on this platform.
func peerClosed(syscall.Conn) (closed, known bool) { return false, false }
