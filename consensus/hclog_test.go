package consensus

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHCLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))

	quiet := newHCLogger(base, "raft", hclog.Off)
	quiet.Error("must not appear")
	if buf.Len() != 0 || quiet.IsError() {
		t.Fatalf("an Off logger wrote %q", buf.String())
	}

	l := newHCLogger(base, "raft", hclog.Info)
	l.Debug("too detailed")
	if buf.Len() != 0 || l.IsDebug() || !l.IsInfo() {
		t.Fatalf("an Info logger wrote a debug line: %q", buf.String())
	}
	l.Named("transport").With("peer", "s2").Warn("failed to contact", "time", hclog.Fmt("%dms", 510), "odd")
	out := buf.String()
	for _, want := range []string{"level=WARN", `msg="failed to contact"`, "component=raft.transport", "peer=s2", "time=510ms", "EXTRA_VALUE_AT_END=odd"} {
		if !strings.Contains(out, want) {
			t.Errorf("log line %q lacks %q", out, want)
		}
	}
	buf.Reset()
	l.SetLevel(hclog.Trace)
	if !l.IsTrace() || l.GetLevel() != hclog.Trace {
		t.Fatal("SetLevel did not take")
	}
	l.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error}).Print("from the standard logger")
	if !strings.Contains(buf.String(), "level=ERROR") || !strings.Contains(buf.String(), "from the standard logger") {
		t.Fatalf("standard logger wrote %q", buf.String())
	}
	for _, tc := range []struct {
		in   string
		want hclog.Level
		ok   bool
	}{{"", hclog.Off, true}, {"off", hclog.Off, true}, {"debug", hclog.Debug, true}, {"WARN", hclog.Warn, true}, {"loud", hclog.Off, false}} {
		got, err := parseRaftLogLevel(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("parseRaftLogLevel(%q) = %v, %v", tc.in, got, err)
		}
	}
}
