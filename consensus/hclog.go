package consensus

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter is an hclog.Logger that writes to a *slog.Logger, so that
// raft and its transport log through the project's logger. It is quiet by
// default (hclog.Off); Config.RaftLogLevel turns it up.
type hclogAdapter struct {
	logger  *slog.Logger
	name    string
	level   *atomic.Int32 // hclog.Level, shared by every logger derived from one root
	implied []interface{}
}

var _ hclog.Logger = (*hclogAdapter)(nil)

// newHCLogger returns an hclog.Logger over logger at the level.
func newHCLogger(logger *slog.Logger, name string, level hclog.Level) hclog.Logger {
	lv := new(atomic.Int32)
	lv.Store(int32(level))
	return &hclogAdapter{logger: logger, name: name, level: lv}
}

// parseRaftLogLevel maps Config.RaftLogLevel to an hclog level; empty and
// "off" silence raft.
func parseRaftLogLevel(s string) (hclog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "off":
		return hclog.Off, nil
	}
	lv := hclog.LevelFromString(s)
	if lv == hclog.NoLevel {
		return hclog.Off, fmt.Errorf("unknown level %q (want off, error, warn, info, debug or trace)", s)
	}
	return lv, nil
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Info:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (h *hclogAdapter) enabled(l hclog.Level) bool {
	min := hclog.Level(h.level.Load())
	if min == hclog.Off || l == hclog.Off || l < min {
		return false
	}
	return h.logger.Enabled(context.Background(), slogLevel(l))
}

// Log implements hclog.Logger.
func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...interface{}) {
	if !h.enabled(level) {
		return
	}
	attrs := make([]slog.Attr, 0, 1+(len(h.implied)+len(args))/2)
	if h.name != "" {
		attrs = append(attrs, slog.String("component", h.name))
	}
	attrs = appendArgs(attrs, h.implied)
	attrs = appendArgs(attrs, args)
	h.logger.LogAttrs(context.Background(), slogLevel(level), msg, attrs...)
}

// appendArgs turns hclog's alternating key/value arguments into attributes.
func appendArgs(attrs []slog.Attr, args []interface{}) []slog.Attr {
	for i := 0; i < len(args); i += 2 {
		k, ok := args[i].(string)
		if !ok {
			k = fmt.Sprint(args[i])
		}
		if i+1 >= len(args) {
			attrs = append(attrs, slog.String("EXTRA_VALUE_AT_END", k))
			break
		}
		v := args[i+1]
		if f, ok := v.(hclog.Format); ok && len(f) > 0 {
			if s, ok := f[0].(string); ok {
				v = fmt.Sprintf(s, f[1:]...)
			}
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	return attrs
}

// Trace implements hclog.Logger.
func (h *hclogAdapter) Trace(msg string, args ...interface{}) { h.Log(hclog.Trace, msg, args...) }

// Debug implements hclog.Logger.
func (h *hclogAdapter) Debug(msg string, args ...interface{}) { h.Log(hclog.Debug, msg, args...) }

// Info implements hclog.Logger.
func (h *hclogAdapter) Info(msg string, args ...interface{}) { h.Log(hclog.Info, msg, args...) }

// Warn implements hclog.Logger.
func (h *hclogAdapter) Warn(msg string, args ...interface{}) { h.Log(hclog.Warn, msg, args...) }

// Error implements hclog.Logger.
func (h *hclogAdapter) Error(msg string, args ...interface{}) { h.Log(hclog.Error, msg, args...) }

// IsTrace implements hclog.Logger.
func (h *hclogAdapter) IsTrace() bool { return h.enabled(hclog.Trace) }

// IsDebug implements hclog.Logger.
func (h *hclogAdapter) IsDebug() bool { return h.enabled(hclog.Debug) }

// IsInfo implements hclog.Logger.
func (h *hclogAdapter) IsInfo() bool { return h.enabled(hclog.Info) }

// IsWarn implements hclog.Logger.
func (h *hclogAdapter) IsWarn() bool { return h.enabled(hclog.Warn) }

// IsError implements hclog.Logger.
func (h *hclogAdapter) IsError() bool { return h.enabled(hclog.Error) }

// ImpliedArgs implements hclog.Logger.
func (h *hclogAdapter) ImpliedArgs() []interface{} { return h.implied }

// With implements hclog.Logger.
func (h *hclogAdapter) With(args ...interface{}) hclog.Logger {
	c := *h
	c.implied = append(append([]interface{}(nil), h.implied...), args...)
	return &c
}

// Name implements hclog.Logger.
func (h *hclogAdapter) Name() string { return h.name }

// Named implements hclog.Logger.
func (h *hclogAdapter) Named(name string) hclog.Logger {
	c := *h
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

// ResetNamed implements hclog.Logger.
func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

// SetLevel implements hclog.Logger.
func (h *hclogAdapter) SetLevel(level hclog.Level) { h.level.Store(int32(level)) }

// GetLevel implements hclog.Logger.
func (h *hclogAdapter) GetLevel() hclog.Level { return hclog.Level(h.level.Load()) }

// StandardLogger implements hclog.Logger.
func (h *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

// StandardWriter implements hclog.Logger: each line written is logged at
// the forced level, or at info.
func (h *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	level := hclog.Info
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = opts.ForceLevel
	}
	return &stdWriter{h: h, level: level}
}

type stdWriter struct {
	h     *hclogAdapter
	level hclog.Level
}

// Write logs each line of p.
func (w *stdWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		if len(line) > 0 {
			w.h.Log(w.level, string(line))
		}
	}
	return len(p), nil
}
