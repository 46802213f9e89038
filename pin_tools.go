//go:build tools

// Package meridian pins the dependency set while packages that use it are
// being written, so that `go mod tidy` keeps the versions known to build
// together on Go 1.26 (raft v1.7.3 with go-metrics v0.6.1, serf v0.10.4 with
// memberlist v0.6.0; see "Dependencies" in README.md). Remove an import here once
// a package of the module uses it.
package meridian

import (
	_ "github.com/anishathalye/porcupine"
	_ "github.com/hashicorp/go-metrics/compat"
	_ "github.com/hashicorp/memberlist"
	_ "github.com/hashicorp/raft"
	_ "github.com/hashicorp/raft-boltdb/v2"
	_ "github.com/hashicorp/serf/coordinate"
	_ "github.com/libp2p/go-libp2p"
	_ "github.com/libp2p/go-libp2p/p2p/net/mock"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "github.com/vmihailenco/msgpack/v5"
	_ "go.etcd.io/bbolt"
	_ "go.uber.org/goleak"
	_ "gonum.org/v1/gonum/optimize/convex/lp"
)
