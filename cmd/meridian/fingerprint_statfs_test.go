//go:build linux || darwin || freebsd

package main

import (
	"path/filepath"
	"testing"
)

// TestFreeDiskGBOfADataDirNotYetMade: the data dir is created only when the
// agent starts; its free space is that of the nearest directory that
// exists, on whose file system it will be made.
func TestFreeDiskGBOfADataDirNotYetMade(t *testing.T) {
	dir := t.TempDir()
	parent, err := freeDiskGB(dir)
	if err != nil || !(parent > 0) {
		t.Fatalf("freeDiskGB(%s) = %v, %v; want the free space of a writable directory", dir, parent, err)
	}
	d, err := existingDir(filepath.Join(dir, "not", "yet"))
	if err != nil || d != dir {
		t.Fatalf("existingDir of a path under %s = %q, %v; want %s", dir, d, err, dir)
	}
	child, err := freeDiskGB(filepath.Join(dir, "not", "yet"))
	if err != nil || !(child > 0) {
		t.Fatalf("freeDiskGB of a data dir not yet made = %v, %v", child, err)
	}
}
