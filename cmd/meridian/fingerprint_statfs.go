//go:build linux || darwin || freebsd

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// freeDiskGB returns the space an unprivileged process may still use on
// the file system that holds dir (or would hold it, once created), in GB.
func freeDiskGB(dir string) (float64, error) {
	d, err := existingDir(dir)
	if err != nil {
		return 0, fmt.Errorf("data dir %s: %w", dir, err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(d, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", d, err)
	}
	// The field types differ between systems; both are counts.
	return float64(uint64(st.Bavail)) * float64(uint64(st.Bsize)) / 1e9, nil
}

// existingDir returns dir, or its nearest ancestor that exists: the data
// dir is created only when the agent starts, and a new directory lands on
// its parent's file system.
func existingDir(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		_, err := os.Stat(d)
		if err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if !errors.Is(err, fs.ErrNotExist) || parent == d {
			return "", err
		}
		d = parent
	}
}
