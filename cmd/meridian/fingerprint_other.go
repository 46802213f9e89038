//go:build !(linux || darwin || freebsd)

package main

import (
	"errors"
	"runtime"
)

// freeDiskGB cannot read free disk space on this system (no statfs in
// package syscall); the agent then offers fallbackStorageGB.
func freeDiskGB(string) (float64, error) {
	return 0, errors.New("not read on " + runtime.GOOS)
}
