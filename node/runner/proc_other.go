//go:build !unix

package runner

import (
	"os"
	"os/exec"
)

// Without process groups only the task's own process can be signalled.

func setProcessGroup(*exec.Cmd) {}

func terminateGroup(p *os.Process) error { return p.Kill() }

func killGroup(p *os.Process) error { return p.Kill() }
