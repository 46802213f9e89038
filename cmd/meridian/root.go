package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/spf13/cobra"

	"github.com/meridian-mesh/meridian/placement"
)

// Exit codes of the binary.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// newRootCmd builds the meridian command tree. Subcommands live in their own
// files, each with a newXxxCmd constructor, and are wired here.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "meridian",
		Short: "Meridian: a decentralized cross-region scheduler mesh for AI compute",
		Long: `Meridian places AI compute work across regions. One agent runs per machine;
agents gossip capacity and latency, agree on allocations per region with Raft,
and trade spare capacity across regions by auction.`,
		SilenceUsage:  true,
		SilenceErrors: true, // run prints errors, as "meridian: <message>"
		// Without Args cobra reports an unknown subcommand as a plain error;
		// this makes it a usage error (exit code 2).
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &usageError{err: err}
	})
	root.AddCommand(
		newVersionCmd(),
		newAgentCmd(),
		newNetsimCmd(),
		newScoreCmd(),
		newJobCmd(),
		newNodesCmd(),
		newRegionsCmd(),
		newTradesCmd(),
	)
	return root
}

// run executes the command line args and returns the process exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdin, stdout, stderr)
}

// runContext is run with a context the long-running commands (agent,
// netsim) stop at when it ends, as they do at SIGINT: tests run them in
// process and stop them so.
func runContext(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "meridian: %v\n", err)
	code := exitCode(err)
	var ue *usageError
	if errors.As(err, &ue) {
		cmd, _, findErr := root.Find(args)
		if findErr != nil || cmd == nil {
			cmd = root
		}
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// usageError is an error in how the command was invoked: a flag, an
// argument, a combination of them.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// exitCode maps an error to the process exit code: 2 for bad usage or bad
// input (including a file that does not exist), 1 for anything else.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue), errors.Is(err, placement.ErrInvalid), errors.Is(err, fs.ErrNotExist):
		return exitUsage
	}
	return exitFailure
}

// noArgs rejects positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}
