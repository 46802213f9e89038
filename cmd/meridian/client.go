package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meridian-mesh/meridian/node/api"
)

// Environment variables the client commands read.
const (
	envAddr  = "MERIDIAN_ADDR"
	envToken = "MERIDIAN_TOKEN"
)

// clientFlags are the flags every command that talks to an agent shares.
type clientFlags struct {
	addr    string
	token   string
	jsonOut bool
	timeout time.Duration
}

// register adds the flags to fs: a command's persistent flags, so that its
// subcommands share them.
func (f *clientFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.addr, "addr", "", "the agent's HTTP API `address` (env "+envAddr+"; default "+api.DefaultAddr+")")
	// The token's default stays empty here so that help never prints it.
	fs.StringVar(&f.token, "token", "", "ACL `token` sent as a bearer token (env "+envToken+")")
	fs.BoolVar(&f.jsonOut, "json", false, "print the agent's JSON answer instead of a table")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up on the agent after this `duration`")
}

// session is a connection to one agent for one command.
type session struct {
	c       *api.Client
	addr    string
	timeout time.Duration
	jsonOut bool
}

// connect resolves the address and token (flag, then environment, then
// default) and returns a session. A bad address or timeout is a usage error.
func (f *clientFlags) connect(cmd *cobra.Command) (*session, error) {
	addr, addrFrom := f.addr, "--addr"
	if !cmd.Flags().Changed("addr") {
		addr, addrFrom = api.DefaultAddr, "the default address"
		if v, ok := os.LookupEnv(envAddr); ok {
			addr, addrFrom = v, envAddr
		}
	}
	token, tokenFrom := f.token, "--token"
	if !cmd.Flags().Changed("token") {
		token, tokenFrom = os.Getenv(envToken), envToken
	}
	if f.timeout <= 0 {
		return nil, usageErrorf("--timeout: must be greater than zero, got %v", f.timeout)
	}
	if strings.ContainsAny(token, "\r\n") {
		return nil, usageErrorf("%s: must not contain line breaks", tokenFrom)
	}
	c, err := api.NewClient(addr, token, &http.Client{})
	if err != nil {
		return nil, usageErrorf("%s: %v", addrFrom, err)
	}
	return &session{c: c, addr: c.Addr(), timeout: f.timeout, jsonOut: f.jsonOut}, nil
}

// call runs one API call with the session's timeout and turns transport
// failures into errors that say which agent could not be reached. Answers
// from the agent (*api.Error) pass through: their message is the agent's.
func (s *session) call(cmd *cobra.Command, fn func(ctx context.Context, c *api.Client) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), s.timeout)
	defer cancel()
	err := fn(ctx, s.c)
	var ae *api.Error
	switch {
	case err == nil || errors.As(err, &ae):
		return err
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer from the agent at %s within %v", s.addr, s.timeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the address is in the message already
	}
	return fmt.Errorf("cannot reach the agent at %s: %w", s.addr, err)
}

// raw fetches an endpoint's JSON as the agent sent it and prints it
// indented, for --json.
func (s *session) raw(cmd *cobra.Command, method, path string, query map[string][]string, body any) error {
	return s.call(cmd, func(ctx context.Context, c *api.Client) error {
		data, _, err := c.Raw(ctx, method, path, query, body)
		if err != nil {
			return err
		}
		return printJSON(cmd.OutOrStdout(), data)
	})
}

func printJSON(w io.Writer, data []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, data, "", "  "); err != nil {
		return fmt.Errorf("the agent's answer is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := buf.WriteTo(w)
	return err
}

// newTable returns a tabwriter for aligned columns; the caller flushes it.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// writeRow writes one tab-separated line.
func writeRow(w io.Writer, cols ...string) {
	fmt.Fprintln(w, strings.Join(cols, "\t"))
}

// qty formats an amount without a useless fraction: 100, 2.5, 0.12.
func qty(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// usd formats a price in US dollars.
func usd(v float64) string { return "$" + strconv.FormatFloat(v, 'f', 2, 64) }

// orDash shows "-" for an empty cell.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// when formats a time for a table, "-" when unset.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// subcommandArgs is the Args validator of a command with subcommands that
// takes no arguments of its own: an unknown subcommand is a usage error
// (cobra would otherwise print help and exit 0).
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return usageErrorf("%s", msg)
}

// exactlyOneID is the Args validator of commands that take one job ID.
func exactlyOneID(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usageErrorf("%s takes exactly one job ID, got %d arguments", cmd.CommandPath(), len(args))
	}
	if !api.ValidID(args[0]) {
		return usageErrorf("job ID %q: must be 1 to %d characters of letters, digits, '.', '_' and '-'", args[0], api.MaxIDLen)
	}
	return nil
}
